"""Checkpoint files on disk: one folder per agent, atomic writes, verified reads.

One file per checkpoint, ``<root>/<quoted agent>/<id>.ckpt``, in the format of
``_format``. A write goes to a temp file, is fsynced and renamed
into place, so readers see the old file or the whole new one.

Loading unpickles, which can run code: load only checkpoints your own agents
wrote. That is why folders are created 0o700 and files 0o600.

Private: import the public names from ``kaizen_ray.core.checkpoint``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from kaizen_ray.core.checkpoint._format import _decode, _read_header_info, encode_checkpoint
from kaizen_ray.core.checkpoint._model import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointStorageError,
    _folder_name,
    resolve_storage_path,
    validate_agent_name,
    validate_checkpoint_id,
)

logger = logging.getLogger("kaizen_ray.checkpoint")

__all__ = ["FileCheckpointStorage", "atomic_write_bytes", "list_checkpoints", "load_checkpoint", "resolve_latest"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)



def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # other systems cannot open a folder to fsync it
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems without folder fsync
            raise
    finally:
        os.close(fd)


def _make_private_dirs(path: Path) -> None:
    """mkdir -p, each created folder exactly 0o700 (whatever the umask); existing ones untouched."""
    missing, p = [], path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if not p.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(p))
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if folder.is_dir():  # made meanwhile by another writer
                continue
            raise
        os.chmod(folder, 0o700)
        _fsync_dir(folder.parent)  # make the new entry itself durable


def _why(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc}"

def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` so that readers see the old file or the whole new one.

    Temp file in the same private folder (0700; file 0600), fsync, rename,
    fsync of the folder. On failure the temp file is removed and the OSError
    raised; ``final`` is untouched.

    >>> import tempfile; target = Path(tempfile.mkdtemp()) / "sub" / "x.bin"
    >>> atomic_write_bytes(target, b"hi"); target.read_bytes(), oct(target.stat().st_mode & 0o777)
    (b'hi', '0o600')
    """
    folder = final.parent
    _make_private_dirs(folder)
    tmp = folder / f".{final.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o600)  # the umask may have taken bits off
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)



class FileCheckpointStorage:
    """Checkpoints as files under one folder, written atomically and verified on read.

    >>> import tempfile
    >>> store = FileCheckpointStorage(tempfile.mkdtemp())
    >>> ck = Checkpoint.new("sup/child", 2, "interrupted", {"x": 1})
    >>> store.write(ck).parent.name
    'sup%2Fchild'
    >>> store.load(ck.id).state, [i.cycle for i in store.list("sup/child")]
    ({'x': 1}, [2])
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path: Path = resolve_storage_path(path)

    def __repr__(self) -> str:
        return f"FileCheckpointStorage({str(self.path)!r})"

    def ensure_writable(self) -> Path:
        """Create the folder (0o700) if needed and prove a file can be made in it."""
        try:
            _make_private_dirs(self.path)
            probe = self.path / f".probe-{secrets.token_hex(6)}.tmp"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600))
            os.unlink(probe)
        except OSError as exc:
            raise CheckpointStorageError(self.path, _why(exc)) from exc
        return self.path

    def path_for(self, agent: str, checkpoint_id: str) -> Path:
        """``<root>/<quoted agent>/<id>.ckpt`` after validating both names."""
        folder = _folder_name(validate_agent_name(agent))
        path = self.path / folder / f"{validate_checkpoint_id(checkpoint_id)}.ckpt"
        if Path(os.path.normpath(path)).parent.parent != self.path:  # the validators make this impossible
            raise ValueError(f"checkpoint path {path} would leave the storage folder {self.path}")
        return path

    def write(self, ckpt: Checkpoint) -> Path:
        """Encode and write ``ckpt`` atomically; return its path."""
        return self.write_bytes(ckpt.agent, ckpt.id, encode_checkpoint(ckpt))

    def write_bytes(self, agent: str, checkpoint_id: str, data: bytes) -> Path:
        """Atomically place ``data`` at :meth:`path_for`: temp file, fsync, rename, fsync folder.

        Readers see the old file or the whole new one, never a part; on failure
        the temp file is removed and the error raised (OSError as CheckpointStorageError).
        """
        final = self.path_for(agent, checkpoint_id)
        try:
            atomic_write_bytes(final, data)
        except OSError as exc:
            raise CheckpointStorageError(self.path, f"writing {final}: {_why(exc)}") from exc
        logger.debug("wrote checkpoint %s (%d bytes)", final, len(data))
        return final

    def find(self, checkpoint_id: str) -> Path:
        """The file of ``checkpoint_id``, in whichever agent folder it is."""
        name = f"{validate_checkpoint_id(checkpoint_id)}.ckpt"
        try:
            hits = sorted(d / name for d in self.path.iterdir() if (d / name).is_file())
        except FileNotFoundError:
            raise CheckpointNotFoundError(checkpoint_id, self.path, "; the folder does not exist") from None
        except OSError as exc:
            raise CheckpointStorageError(self.path, _why(exc)) from exc
        if not hits:
            raise CheckpointNotFoundError(checkpoint_id, self.path)
        if len(hits) > 1:
            raise CheckpointError(f"checkpoint id {checkpoint_id!r} is in {len(hits)} files: {hits}")
        return hits[0]

    def load(self, checkpoint_id: str) -> Checkpoint:
        """Read and verify one checkpoint (this unpickles: trusted storage only)."""
        ckpt = self._read(self.find(checkpoint_id))
        if ckpt.id != checkpoint_id:  # a case-insensitive file system matched another case
            raise CheckpointNotFoundError(checkpoint_id, self.path)
        return ckpt

    def load_latest(self, agent: str) -> Checkpoint | None:
        """The newest checkpoint of ``agent`` that verifies; damaged newer ones are skipped with a warning."""
        ids = [info.id for info in reversed(self.list(agent))]
        try:
            return resolve_latest(agent, ids, self.load, self.path)
        except CheckpointNotFoundError:
            return None

    def list(self, agent: str | None = None) -> list[CheckpointInfo]:
        """Headers of the checkpoints (of ``agent``, or all), oldest first. Never reads a payload."""
        try:
            if agent is None:
                folders = sorted(d for d in self.path.iterdir() if d.is_dir())
            else:
                folders = [self.path / _folder_name(validate_agent_name(agent))]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointStorageError(self.path, _why(exc)) from exc
        infos = []
        for folder in folders:
            for path in sorted(folder.glob("*.ckpt")):
                try:
                    info = self._read_info(path)
                except CheckpointCorruptError as exc:
                    logger.warning("skipping checkpoint file %s: %s", path, exc.problem)
                    continue
                except FileNotFoundError:  # deleted since the folder was read
                    continue
                except OSError as exc:
                    logger.warning("skipping checkpoint file %s: header unreadable: %s", path, _why(exc))
                    continue
                if agent is None or info.agent == agent:  # "A" and "a" share a folder on macOS
                    infos.append(info)
        return sorted(infos, key=lambda i: (i.created_at, i.id))

    def delete(self, checkpoint_id: str) -> None:
        """Remove one checkpoint file."""
        path = self.find(checkpoint_id)
        try:
            path.unlink()
            _fsync_dir(path.parent)
        except FileNotFoundError:
            raise CheckpointNotFoundError(checkpoint_id, self.path) from None
        except OSError as exc:
            raise CheckpointStorageError(self.path, f"deleting {path}: {_why(exc)}") from exc

    def _read(self, path: Path) -> Checkpoint:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointNotFoundError(path.name.removesuffix(".ckpt"), self.path) from None
        except OSError as exc:
            raise CheckpointStorageError(self.path, f"reading {path}: {_why(exc)}") from exc
        ckpt = _decode(data, path)
        _check_placement(path, ckpt.id, ckpt.agent)
        return ckpt

    @staticmethod
    def _read_info(path: Path) -> CheckpointInfo:
        info = _read_header_info(path)
        _check_placement(path, info.id, info.agent)
        return info


def _check_placement(path: Path, checkpoint_id: str, agent: str) -> None:
    """A file moved or renamed by hand would be found under the wrong id or agent.

    Compared casefolded: on a case-insensitive file system "A" and "a" share a folder.
    """
    if path.name.casefold() != f"{checkpoint_id}.ckpt".casefold():
        raise CheckpointCorruptError(
            path, f"the header says id {checkpoint_id!r} but the file is named {path.name!r}"
        )
    if path.parent.name.casefold() != _folder_name(agent).casefold():
        raise CheckpointCorruptError(
            path, f"the header says agent {agent!r} but the file is in folder {path.parent.name!r}"
        )


def resolve_latest(
    agent: str, candidates: Iterable[str], load: Callable[[str], Checkpoint], where: Path | str
) -> Checkpoint:
    """``"latest"``: the first of ``candidates`` (newest first) that ``load`` can read and verify.

    The one resolver of ``"latest"``, on disk and on Ray: a corrupt candidate
    is skipped with a warning, one deleted since it was listed is skipped
    quietly; none left raises :class:`CheckpointNotFoundError`.

    >>> import tempfile; where = tempfile.mkdtemp()
    >>> resolve_latest("a1", [], lambda cid: None, where)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.checkpoint._model.CheckpointNotFoundError: no checkpoint 'latest' in ...
    """
    for checkpoint_id in candidates:
        try:
            return load(checkpoint_id)
        except CheckpointCorruptError as exc:
            logger.warning("skipping checkpoint %s of %s: %s", checkpoint_id, agent, exc)
        except CheckpointNotFoundError:  # deleted since the listing
            continue
    raise CheckpointNotFoundError("latest", where, hint=f"; agent {agent!r} has no good checkpoint there")


def list_checkpoints(
    storage_path: str | os.PathLike[str] | None = None, agent: str | None = None
) -> list[CheckpointInfo]:
    """Headers of the checkpoints under ``storage_path``, oldest first. No Ray needed.

    >>> import tempfile
    >>> list_checkpoints(tempfile.mkdtemp())
    []
    """
    return FileCheckpointStorage(storage_path).list(agent)


def load_checkpoint(checkpoint_id: str, storage_path: str | os.PathLike[str] | None = None) -> Checkpoint:
    """Load and verify one checkpoint by id. No Ray needed.

    >>> import tempfile
    >>> load_checkpoint("ck-missing", tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.checkpoint._model.CheckpointNotFoundError: no checkpoint 'ck-missing' in ...
    """
    return FileCheckpointStorage(storage_path).load(checkpoint_id)
