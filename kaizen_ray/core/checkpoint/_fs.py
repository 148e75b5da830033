"""The filesystem seam: atomic files in a local folder, or at a URI through ``pyarrow.fs``.

Local folders (and ``file://`` URIs, which are local folders) keep their own
atomic code path (:func:`atomic_write_bytes`: temp file, fsync, rename, fsync
of the folder; folders 0o700, files 0o600). A remote URI
(``s3://``, ``gs://``, ``hdfs://``) is opened with
``pyarrow.fs.FileSystem.from_uri`` and used through :class:`ArrowFolder`.

Atomicity, the same promise as on disk (a reader never sees a partial
checkpoint): on an object store (S3, GCS) an object appears whole when its
upload completes, so a checkpoint is written once, to its final key, with one
``open_output_stream``; on other filesystems (HDFS) a temp file is written and
moved into place. Readers verify checksums either way, so an object damaged
by hand is refused, never half-loaded.

S3 endpoint and keys come from the standard variables: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` through pyarrow, and
``AWS_ENDPOINT_URL_S3`` (else ``AWS_ENDPOINT_URL``) passed as
``endpoint_override`` by us: pyarrow honours them only from 15 on, and only in
``from_uri``. An ``endpoint_override`` already in the URI's query wins.

Private: ``FileCheckpointStorage`` is the public face.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kaizen_ray.core.checkpoint._paths import redact, resolve_storage_path, storage_scheme

__all__ = [
    "ArrowFolder", "atomic_write_bytes", "join_storage_path", "read_blob", "read_uri", "write_blob", "write_uri",
]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_OBJECT_STORES = frozenset({"s3", "gcs"})  # pyarrow type_name of stores where one object write is atomic
_HEAD_CHUNK = 64 * 1024
_IOV_MAX = 512  # well under every system's IOV_MAX (1024 on Linux and macOS)  # first read of a header: most headers are far smaller


# -- local folders: temp file, fsync, rename, fsync of the folder ---------------------------


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


def _buffers(data: Any) -> list[memoryview]:
    """``data`` (bytes-like, or a list/tuple of them) as flat byte views: what ``writev`` takes, uncopied."""
    parts = data if isinstance(data, (list, tuple)) else [data]
    return [memoryview(p).cast("B") for p in parts if len(memoryview(p))]


def _write_all(fd: int, data: Any) -> None:
    """Every byte of ``data`` (one buffer or several) to ``fd``: ``writev``, resumed after short writes."""
    views = _buffers(data)
    while views:
        written = os.writev(fd, views[:_IOV_MAX]) if hasattr(os, "writev") else os.write(fd, views[0])
        while written and views:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0], written = views[0][written:], 0


def atomic_write_bytes(final: Path, data: Any) -> None:
    """Write ``data`` (bytes-like, or a list of buffers written back to back) to ``final`` so that readers see the old file or the whole new one.

    Temp file in the same private folder (0700; file 0600), fsync, rename,
    fsync of the folder. On failure the temp file is removed and the OSError
    raised; ``final`` is untouched. Several buffers go out in one ``writev``:
    a big payload is never copied to join it to its header.

    >>> import tempfile; target = Path(tempfile.mkdtemp()) / "sub" / "x.bin"
    >>> atomic_write_bytes(target, [b"h", b"i"]); target.read_bytes(), oct(target.stat().st_mode & 0o777)
    (b'hi', '0o600')
    """
    folder = final.parent
    tmp = folder / f".{final.name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        # The folder is made (or why it cannot be, said) only when the open
        # shows it is needed: after the first save it exists, and two stats
        # of it per save were most of the cost of an existing folder.
        _make_private_dirs(folder)
        fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # the umask may have taken bits off
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


# -- URIs through pyarrow.fs -----------------------------------------------------------------


def _with_s3_endpoint(uri: str) -> str:
    """``uri`` with ``endpoint_override`` (and ``scheme``) from the AWS_* variables, when it has none."""
    parts = urlsplit(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme != "s3" or not endpoint or any(k == "endpoint_override" for k, _ in query):
        return uri
    ep = urlsplit(endpoint)
    if ep.scheme in ("http", "https") and ep.netloc:  # older pyarrow wants host:port and the scheme apart
        query += [("endpoint_override", ep.netloc), ("scheme", ep.scheme)]
    else:
        query.append(("endpoint_override", endpoint))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


@contextlib.contextmanager
def _as_oserror() -> Iterator[None]:
    """pyarrow's non-I/O errors (ArrowInvalid: a bad bucket name, say) as OSError, chained."""
    import pyarrow as pa

    try:
        yield
    except OSError:
        raise
    except pa.ArrowException as exc:
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def _env_key() -> tuple[str | None, ...]:
    names = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")
    return tuple(os.environ.get(n) for n in names)


@functools.lru_cache(maxsize=32)
def _open_cached(uri: str, _env: tuple[str | None, ...]) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    with _as_oserror():
        return pafs.FileSystem.from_uri(_with_s3_endpoint(uri))


def open_uri(uri: str) -> tuple[Any, str]:
    """``(filesystem, path)`` for ``uri``; cached per URI and AWS_* settings (a client per call is slow)."""
    return _open_cached(uri, _env_key())


def write_atomic(fs: Any, path: str, data: Any) -> None:
    """Place ``data`` at ``path`` so that a reader sees the old file or the whole new one.

    Object stores: one stream to the final key (the object appears when the
    upload completes). Elsewhere: a temp file beside it, then a move.
    """
    with _as_oserror():
        if fs.type_name in _OBJECT_STORES:
            stream = fs.open_output_stream(path)
            for part in _buffers(data):
                stream.write(part)
            stream.close()  # the upload completes here, or raises
            return
        parent, _, name = path.rpartition("/")
        if parent:
            fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{secrets.token_hex(4)}.tmp"
        try:
            with fs.open_output_stream(tmp) as stream:
                for part in _buffers(data):
                    stream.write(part)
            fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.delete_file(tmp)
            raise


def read_uri(uri: str) -> bytes | None:
    """The bytes of the file at ``uri``, or None if there is none.

    >>> read_uri("file:///no/such/file") is None
    True
    """
    fs, path = open_uri(uri)
    try:
        with _as_oserror(), fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_uri(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically (see :func:`write_atomic`).

    >>> import tempfile; target = f"file://{tempfile.mkdtemp()}/sub/x.json"
    >>> write_uri(target, b"{}"); read_uri(target)
    b'{}'
    """
    fs, path = open_uri(uri)
    write_atomic(fs, path, data)


class ArrowFolder:
    """One storage folder on a pyarrow filesystem: the few operations checkpoint storage needs.

    Paths handed out and taken back are the filesystem's own (``bucket/key``
    on S3); :meth:`display` turns one into a URI for messages.

    >>> import tempfile, pyarrow.fs
    >>> folder = ArrowFolder(filesystem=pyarrow.fs.LocalFileSystem(), base=tempfile.mkdtemp())
    >>> folder.write(folder.child("a", "x.ckpt"), b"KAIZENRAY-CKPT\\n{}\\n")
    >>> [name.rpartition("/")[2] for name, _ in folder.files()]
    ['x.ckpt']
    """

    def __init__(self, uri: str | None = None, *, filesystem: Any = None, base: str | None = None) -> None:
        if (uri is None) == (filesystem is None):
            raise TypeError("ArrowFolder takes a uri, or a filesystem and a base path, not both")
        self.uri = uri
        self._fs = filesystem
        self._base = None if base is None else str(base).rstrip("/")
        self.where = redact(uri) if uri is not None else f"{filesystem.type_name}://{self._base}"

    def __repr__(self) -> str:
        return f"ArrowFolder({self.where!r})"

    def _open(self) -> tuple[Any, str]:
        # Lazy: constructing a storage only checks its name; the network is touched on first use.
        if self._fs is None:
            assert self.uri is not None
            self._fs, base = open_uri(self.uri)
            self._base = base.rstrip("/")
        assert self._base is not None
        return self._fs, self._base

    def child(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under the folder."""
        return "/".join([self._open()[1], *parts])

    def display(self, path: str) -> str:
        """A path of this folder as a URI (without the query), for messages and listings."""
        base = self._open()[1]
        return self.where + path[len(base):] if path.startswith(base) else path

    def write(self, path: str, data: Any) -> None:
        """Atomically place ``data`` (bytes, or a list of buffers) at ``path`` (see :func:`write_atomic`)."""
        write_atomic(self._open()[0], path, data)

    def read(self, path: str) -> bytes:
        """The whole file (FileNotFoundError if it is gone)."""
        with _as_oserror(), self._open()[0].open_input_file(path) as f:
            return f.readall()

    def read_head(self, path: str, limit: int) -> tuple[bytes, int]:
        """(the file's first bytes, through its second ``\\n`` or ``limit`` bytes; its size).

        The magic line and the header line, without the payload: ranged reads where the store allows.
        """
        with _as_oserror(), self._open()[0].open_input_file(path) as f:
            size = f.size()
            want, got = min(size, limit), b""
            while len(got) < want and got.count(b"\n") < 2:
                chunk = f.read(min(_HEAD_CHUNK, want - len(got)))
                if not chunk:
                    break
                got += chunk
        return got, size

    def files(self, folder: str | None = None) -> list[tuple[str, int]]:
        """``(path, size)`` of the ``*.ckpt`` files in one agent folder, or in all of them."""
        import pyarrow.fs as pafs

        fs, base = self._open()
        under = base if folder is None else f"{base}/{folder}"
        selector = pafs.FileSelector(under, allow_not_found=True, recursive=folder is None)
        with _as_oserror():
            infos = fs.get_file_info(selector)
        found = []
        for info in infos:
            rel = info.path[len(base) + 1:].split("/")
            # <agent folder>/<id>.ckpt only: the budget ledgers and temp files live beside them.
            if info.type == pafs.FileType.File and len(rel) == 2 and rel[1].endswith(".ckpt"):
                found.append((info.path, info.size))
        return sorted(found)

    def delete(self, path: str) -> None:
        """Remove one file (FileNotFoundError if it is gone)."""
        with _as_oserror():
            self._open()[0].delete_file(path)

    def probe(self) -> None:
        """Prove a file can be written and removed here (a tiny object, at once deleted)."""
        path = self.child(f".probe-{secrets.token_hex(6)}.tmp")
        self.write(path, b"")
        self.delete(path)


# -- single files beside the checkpoints (the budget ledgers) --------------------------


def join_storage_path(storage_path: str | os.PathLike[str], *parts: str) -> str:
    """A file under ``storage_path`` (a folder or a URI), as a str that :func:`read_blob` takes.

    >>> join_storage_path("/data/ck", ".budgets", "a.json"), join_storage_path("s3://b/ck", ".budgets", "a.json")
    ('/data/ck/.budgets/a.json', 's3://b/ck/.budgets/a.json')
    """
    root = resolve_storage_path(storage_path)
    if isinstance(root, Path):
        return str(root.joinpath(*parts))
    u = urlsplit(root)
    return urlunsplit((u.scheme, u.netloc, "/".join([u.path, *parts]), u.query, ""))


def _local(location: str | os.PathLike[str]) -> Path | None:
    return Path(resolve_storage_path(location)) if storage_scheme(location) in (None, "file") else None


def read_blob(location: str | os.PathLike[str]) -> bytes | None:
    """The bytes of the file at ``location`` (a path or a URI), or None if there is none.

    >>> import tempfile; read_blob(tempfile.mkdtemp() + "/none.json") is None
    True
    """
    local = _local(location)
    if local is None:
        return read_uri(str(location))
    try:
        return local.read_bytes()
    except FileNotFoundError:
        return None


def write_blob(location: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` at ``location`` atomically: :func:`atomic_write_bytes` on disk, one object at a URI.

    >>> import tempfile; where = join_storage_path(tempfile.mkdtemp(), ".budgets", "s.json")
    >>> write_blob(where, b"{}"); read_blob(where)
    b'{}'
    """
    local = _local(location)
    if local is None:
        write_uri(str(location), data)
    else:
        atomic_write_bytes(local, data)
