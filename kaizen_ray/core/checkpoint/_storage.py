"""Checkpoint files: one folder per agent, atomic writes, verified reads; on disk or at a URI.

One file per checkpoint, ``<root>/<quoted agent>/<id>.ckpt``, in the format of
``_format``. On disk a write goes to a temp file, is fsynced and renamed into
place, so readers see the old file or the whole new one. At a remote URI
(``s3://``, ``gs://``, ``hdfs://``) the same layout goes through the
``pyarrow.fs`` seam of ``_fs``, with the same promise (see there).

Loading unpickles, which can run code: load only checkpoints your own agents
wrote. That is why folders are created 0o700 and files 0o600.

Private: import the public names from ``kaizen_ray.core.checkpoint``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from kaizen_ray.core.checkpoint._format import (
    MAGIC,
    MAX_HEADER_BYTES,
    _build,
    _decode,
    _parse_header,
    _read_header_info,
    _size_problem,
    encode_buffers,
)
from kaizen_ray.core.checkpoint._fs import (
    _O_CLOEXEC,
    ArrowFolder,
    _fsync_dir,
    _make_private_dirs,
    atomic_write_bytes,
    join_storage_path,
    read_blob,
    write_blob,
)
from kaizen_ray.core.checkpoint._model import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointStorageError,
    _agent_folder,
    _folder_name,
    validate_checkpoint_id,
)
from kaizen_ray.core.checkpoint._paths import resolve_storage_path
from kaizen_ray.core.checkpoint._sign import resolve_key

logger = logging.getLogger("kaizen_ray.checkpoint")

__all__ = [
    "FileCheckpointStorage", "atomic_write_bytes", "join_storage_path", "list_checkpoints", "load_checkpoint",
    "read_blob", "resolve_latest", "write_blob",
]



def _why(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc}"

class FileCheckpointStorage:
    """Checkpoints as files under one folder (or URI), written atomically and verified on read.

    ``path`` is a local folder, a ``file://`` URI (a local folder too), or a
    URI ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/ckpts``,
    ``gs://``, ``hdfs://``); a URI stays a str in :attr:`path`, never a Path.
    With ``filesystem`` (a ``pyarrow.fs.FileSystem``), ``path`` is the folder
    inside it: in-process use only, since a filesystem object does not travel
    to other nodes by name.

    ``key`` (str, bytes or ``SecretStr``; default ``$KAIZEN_RAY_CHECKPOINT_KEY``):
    sign what is written, and refuse to read (or list) a file whose signature
    is missing or wrong, before anything is unpickled. No key: unsigned, as
    before; signatures are then not checked.

    >>> import tempfile
    >>> store = FileCheckpointStorage(tempfile.mkdtemp())
    >>> ck = Checkpoint.new("sup/child", 2, "interrupted", {"x": 1})
    >>> store.write(ck).parent.name
    'sup%2Fchild'
    >>> store.load(ck.id).state, [i.cycle for i in store.list("sup/child")]
    ({'x': 1}, [2])
    >>> FileCheckpointStorage("s3://bucket/ckpts/").path
    's3://bucket/ckpts'
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, filesystem: Any = None, key: Any = None) -> None:
        self._key = resolve_key(key)
        self._remote: ArrowFolder | None = None
        if filesystem is not None:
            if path is None:
                raise TypeError("FileCheckpointStorage(filesystem=...) needs the folder inside it as path")
            self._remote = ArrowFolder(filesystem=filesystem, base=os.fspath(path))
            self.path: Path | str = self._remote.where
        else:
            self.path = resolve_storage_path(path)
            if isinstance(self.path, str):
                self._remote = ArrowFolder(self.path)
        # For messages: a URI's query may hold keys (?secret_key=...), never shown.
        self._shown: Path | str = self.path if self._remote is None else self._remote.where
        self._folders: dict[str, Path] = {}  # agent -> its folder on disk, checked once (_where)

    def __repr__(self) -> str:
        return f"FileCheckpointStorage({str(self._shown)!r}{', signed' if self._key else ''})"

    @property
    def signed(self) -> bool:
        """Whether this storage signs what it writes and checks signatures on read (a key is set)."""
        return self._key is not None

    def ensure_writable(self) -> Path | str:
        """Create the folder (0o700) if needed and prove a file can be made in it; return :attr:`path`."""
        try:
            if self._remote is not None:
                self._remote.probe()
                return self.path
            assert isinstance(self.path, Path)
            _make_private_dirs(self.path)
            probe = self.path / f".probe-{secrets.token_hex(6)}.tmp"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600))
            os.unlink(probe)
        except OSError as exc:
            raise CheckpointStorageError(self._shown, _why(exc)) from exc
        return self.path

    def _where(self, agent: str, checkpoint_id: str) -> Path | str:
        """The file's own path: a Path on disk, the filesystem's path (``bucket/key``) at a URI."""
        folder = self._folders.get(agent) if type(agent) is str else None
        if folder is not None:
            # Its name was checked and it stays in the storage; a valid id is one
            # plain file name (no '/', not '.' or '..'), which cannot lead out.
            return folder / f"{validate_checkpoint_id(checkpoint_id)}.ckpt"
        folder_name = _agent_folder(agent)
        name = f"{validate_checkpoint_id(checkpoint_id)}.ckpt"
        if self._remote is not None:
            return self._remote.child(folder_name, name)
        assert isinstance(self.path, Path)
        path = self.path / folder_name / name
        if Path(os.path.normpath(path)).parent.parent != self.path:  # the validators make this impossible
            raise ValueError(f"checkpoint path {path} would leave the storage folder {self.path}")
        if type(agent) is str:  # kept for exact str: a subclass could compare equal to a name it does not spell
            if len(self._folders) >= 1024:  # agents come and go: keep it bounded
                self._folders.clear()
            self._folders[agent] = path.parent
        return path

    def _show(self, where: Path | str) -> Path | str:
        return where if self._remote is None else self._remote.display(str(where))

    def path_for(self, agent: str, checkpoint_id: str) -> Path | str:
        """``<root>/<quoted agent>/<id>.ckpt`` after validating both names (a URI str at a URI)."""
        return self._show(self._where(agent, checkpoint_id))

    def write(self, ckpt: Checkpoint) -> Path | str:
        """Encode (and sign, with a key) and write ``ckpt`` atomically; return its path."""
        return self.write_bytes(ckpt.agent, ckpt.id, encode_buffers(ckpt, key=self._key))

    def encode(self, ckpt: Checkpoint) -> list[bytes]:
        """``ckpt`` as the buffers of its file (signed with this storage's key, if any), for :meth:`write_bytes`."""
        return encode_buffers(ckpt, key=self._key)

    def write_bytes(self, agent: str, checkpoint_id: str, data: Any) -> Path | str:
        """Atomically place ``data`` (bytes, or a list of buffers written back to back) at :meth:`path_for`.

        Readers see the old file or the whole new one.
        On disk: temp file, fsync, rename, fsync folder. At a URI: see ``_fs``.
        On failure nothing is left half-written and the error is raised
        (OSError as CheckpointStorageError).
        """
        final = self._where(agent, checkpoint_id)
        try:
            if self._remote is not None:
                self._remote.write(str(final), data)
            else:
                atomic_write_bytes(final if isinstance(final, Path) else Path(final), data)
        except OSError as exc:
            raise CheckpointStorageError(self._shown, f"writing {self._show(final)}: {_why(exc)}") from exc
        logger.debug("wrote checkpoint %s", self._show(final))
        return self._show(final)

    def _find(self, checkpoint_id: str) -> Path | str:
        name = f"{validate_checkpoint_id(checkpoint_id)}.ckpt"
        try:
            if self._remote is not None:
                hits = [p for p, _size in self._remote.files() if p.rpartition("/")[2] == name]
            else:
                assert isinstance(self.path, Path)
                hits = sorted(d / name for d in self.path.iterdir() if (d / name).is_file())
        except FileNotFoundError:
            raise CheckpointNotFoundError(checkpoint_id, self._shown, "; the folder does not exist") from None
        except OSError as exc:
            raise CheckpointStorageError(self._shown, _why(exc)) from exc
        if not hits:
            raise CheckpointNotFoundError(checkpoint_id, self._shown)
        if len(hits) > 1:
            shown = [self._show(h) for h in hits]
            raise CheckpointError(f"checkpoint id {checkpoint_id!r} is in {len(hits)} files: {shown}")
        return hits[0]

    def find(self, checkpoint_id: str) -> Path | str:
        """The file of ``checkpoint_id``, in whichever agent folder it is (a URI str at a URI)."""
        return self._show(self._find(checkpoint_id))

    def load(self, checkpoint_id: str) -> Checkpoint:
        """Read and verify one checkpoint (this unpickles: trusted storage only)."""
        ckpt = self._read(self._find(checkpoint_id))
        if ckpt.id != checkpoint_id:  # a case-insensitive file system matched another case
            raise CheckpointNotFoundError(checkpoint_id, self._shown)
        return ckpt

    def load_latest(self, agent: str) -> Checkpoint | None:
        """The newest checkpoint of ``agent`` that verifies; damaged newer ones are skipped with a warning."""
        ids = [info.id for info in reversed(self.list(agent))]
        try:
            return resolve_latest(agent, ids, self.load, self._shown)
        except CheckpointNotFoundError:
            return None

    def _files(self, agent: str | None) -> list[Path | str]:
        if self._remote is not None:
            folder = None if agent is None else _agent_folder(agent)
            return [p for p, _size in self._remote.files(folder)]
        assert isinstance(self.path, Path)
        if agent is None:
            folders = sorted(d for d in self.path.iterdir() if d.is_dir())
        else:
            folders = [self.path / _agent_folder(agent)]
        return [path for folder in folders for path in sorted(folder.glob("*.ckpt"))]

    def list(self, agent: str | None = None) -> list[CheckpointInfo]:
        """Headers of the checkpoints (of ``agent``, or all), oldest first. Never reads a payload."""
        try:
            files = self._files(agent)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise CheckpointStorageError(self._shown, _why(exc)) from exc
        infos = []
        for path in files:
            try:
                info = self._read_info(path)
            except CheckpointCorruptError as exc:
                logger.warning("skipping checkpoint file %s: %s", self._show(path), exc.problem)
                continue
            except FileNotFoundError:  # deleted since the folder was read
                continue
            except OSError as exc:
                logger.warning("skipping checkpoint file %s: header unreadable: %s", self._show(path), _why(exc))
                continue
            if agent is None or info.agent == agent:  # "A" and "a" share a folder on macOS
                infos.append(info)
        # By id, as the checkpoint store orders them on Ray: ids sort by creation and never go
        # backwards in a process, even when the wall clock (and so created_at) steps back.
        return sorted(infos, key=lambda i: i.id)

    def delete(self, checkpoint_id: str) -> None:
        """Remove one checkpoint file."""
        path = self._find(checkpoint_id)
        try:
            if self._remote is not None:
                self._remote.delete(str(path))
            else:
                Path(path).unlink()
                _fsync_dir(Path(path).parent)
        except FileNotFoundError:
            raise CheckpointNotFoundError(checkpoint_id, self._shown) from None
        except OSError as exc:
            raise CheckpointStorageError(self._shown, f"deleting {self._show(path)}: {_why(exc)}") from exc

    def _read(self, path: Path | str) -> Checkpoint:
        shown = self._show(path)
        try:
            data = self._remote.read(str(path)) if self._remote is not None else Path(path).read_bytes()
        except FileNotFoundError:
            raise CheckpointNotFoundError(_name(path).removesuffix(".ckpt"), self._shown) from None
        except OSError as exc:
            raise CheckpointStorageError(self._shown, f"reading {shown}: {_why(exc)}") from exc
        ckpt = _decode(data, shown, self._key)
        _check_placement(path, ckpt.id, ckpt.agent, shown)
        return ckpt

    def _read_info(self, path: Path | str) -> CheckpointInfo:
        if self._remote is None:
            info = _read_header_info(Path(path), self._key)
        else:
            # Magic and header line by ranged reads, the size from the store: the payload is never fetched.
            shown = self._show(path)
            head, size = self._remote.read_head(str(path), len(MAGIC) + MAX_HEADER_BYTES + 1)
            n = len(MAGIC)
            end = head.find(b"\n", n)
            line = head[n:end + 1] if end != -1 else head[n:]
            header = _parse_header(head[:n], line, shown, self._key)
            if (got := size - n - len(line)) != header["payload_size"]:
                raise CheckpointCorruptError(shown, _size_problem(header["payload_size"], got))
            info = _build(CheckpointInfo, header, shown, path=shown, payload_size=header["payload_size"])
        _check_placement(path, info.id, info.agent, self._show(path))
        return info


def _name(path: Path | str) -> str:
    return PurePosixPath(path).name if isinstance(path, str) else path.name


def _check_placement(path: Path | str, checkpoint_id: str, agent: str, shown: Path | str | None = None) -> None:
    """A file moved or renamed by hand would be found under the wrong id or agent.

    Compared casefolded: on a case-insensitive file system "A" and "a" share a folder.
    """
    p = PurePosixPath(path) if isinstance(path, str) else path
    shown = p if shown is None else shown
    if p.name.casefold() != f"{checkpoint_id}.ckpt".casefold():
        raise CheckpointCorruptError(
            shown, f"the header says id {checkpoint_id!r} but the file is named {p.name!r}"
        )
    if p.parent.name.casefold() != _folder_name(agent).casefold():
        raise CheckpointCorruptError(
            shown, f"the header says agent {agent!r} but the file is in folder {p.parent.name!r}"
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
    storage_path: str | os.PathLike[str] | None = None, agent: str | None = None, *, key: Any = None
) -> list[CheckpointInfo]:
    """Headers of the checkpoints under ``storage_path``, oldest first. No Ray needed.

    With a key (``key=``, else ``$KAIZEN_RAY_CHECKPOINT_KEY``), files without a
    valid signature are left out, each with a warning.

    >>> import tempfile
    >>> list_checkpoints(tempfile.mkdtemp())
    []
    """
    return FileCheckpointStorage(storage_path, key=key).list(agent)


def load_checkpoint(
    checkpoint_id: str, storage_path: str | os.PathLike[str] | None = None, *, key: Any = None
) -> Checkpoint:
    """Load and verify one checkpoint by id. No Ray needed.

    With a key (``key=``, else ``$KAIZEN_RAY_CHECKPOINT_KEY``), a file without a
    valid signature is refused (:class:`CheckpointSignatureError`) before it
    is unpickled.

    >>> import tempfile
    >>> load_checkpoint("ck-missing", tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.checkpoint._model.CheckpointNotFoundError: no checkpoint 'ck-missing' in ...
    """
    return FileCheckpointStorage(storage_path, key=key).load(checkpoint_id)

