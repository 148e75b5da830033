"""Where checkpoints live: a local folder or a storage URI, resolved once to one spelling.

A leaf of the checkpoint package, apart from the model (``_model``) because a
path is not part of a checkpoint: ``_fs`` and ``_storage`` resolve and open
storage with it.

Private: import the public names from ``kaizen_ray.core.checkpoint``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from kaizen_ray.core.errors import ConfigError

__all__ = ["SUPPORTED_SCHEMES", "default_storage_path", "resolve_storage_path", "storage_scheme"]

# Schemes ``pyarrow.fs.FileSystem.from_uri`` understands and we promise (DESIGN "Checkpoints").
SUPPORTED_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(//)?")  # 2+ letters: "C:" is a Windows drive, not a scheme


def storage_scheme(path: str | os.PathLike[str]) -> str | None:
    """The URI scheme of a storage path (lower case), or None for a local folder.

    A URI of a scheme we do not support is refused here, at once, rather than
    taken for a relative folder named ``ftp:``; so is a supported scheme
    without its ``//`` (``s3:bucket``).

    >>> storage_scheme("s3://bucket/ckpts"), storage_scheme("/data/ckpts"), storage_scheme("rel/x")
    ('s3', None, None)
    >>> storage_scheme("ftp://host/x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: storage_path must be a local folder or a URI of a supported scheme ...
    """
    if not isinstance(path, str):  # a PathLike is a local folder by construction
        return None
    found = _SCHEME.match(path)
    if found is None:
        return None
    scheme, slashes = found.group(1).lower(), found.group(2)
    if slashes is None and scheme not in SUPPORTED_SCHEMES:
        return None  # "name:tag/x" is a legal (if odd) relative folder
    if scheme not in SUPPORTED_SCHEMES or slashes is None:
        raise ConfigError(
            "storage_path", path,
            "a local folder or a URI of a supported scheme "
            f"({', '.join(s + '://' for s in SUPPORTED_SCHEMES)})",
        )
    return scheme


def _file_uri_path(uri: str) -> Path:
    """The local folder of a ``file://`` URI (``file:///abs`` or ``file://localhost/abs``)."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment or not parts.path.startswith("/"):
        raise ConfigError("storage_path", uri, "a file:// URI of an absolute local path, like file:///data/ckpts")
    return Path(os.path.normpath(unquote(parts.path)))  # ".." folded, as for a folder (see below)


def _normal_uri(uri: str) -> str:
    """One spelling per remote folder (scheme lower case, no trailing '/'): it keys caches on Ray."""
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ConfigError("storage_path", uri, f"a URI with a bucket or host, like {parts.scheme}://bucket/ckpts")
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), parts.query, ""))


def default_storage_path() -> Path | str:
    """``$KAIZEN_RAY_STORAGE_PATH`` if set (a folder or a URI), else ``~/.kaizen_ray/checkpoints``.

    >>> p = default_storage_path(); isinstance(p, str) or p.is_absolute()
    True
    """
    env = os.environ.get("KAIZEN_RAY_STORAGE_PATH")
    if env:
        return resolve_storage_path(env)
    return (Path.home() / ".kaizen_ray" / "checkpoints").absolute()


def resolve_storage_path(path: str | os.PathLike[str] | None) -> Path | str:
    """The storage for ``path`` (None: the default): an absolute local folder, or a remote URI as a str.

    Absolute because Ray workers run in another working directory than the
    driver. A ``file://`` URI is a local folder; ``s3://``, ``gs://``,
    ``hdfs://`` stay URIs (normalised: no trailing '/'), never a ``Path``.

    >>> resolve_storage_path("~/ck") == Path.home() / "ck"
    True
    >>> resolve_storage_path("/data/runs/../ck")
    PosixPath('/data/ck')
    >>> resolve_storage_path("file:///data/ck"), resolve_storage_path("s3://bucket/ck/")
    (PosixPath('/data/ck'), 's3://bucket/ck')
    """
    if path is None:
        return default_storage_path()
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError("storage_path", path, "a local folder (str or os.PathLike) or a storage URI")
    scheme = storage_scheme(path)
    if scheme == "file":
        return _file_uri_path(str(path))
    if scheme is not None:
        return _normal_uri(str(path))
    # abspath, not resolve(): ".." folded away (a checkpoint's path is checked to stay under its
    # storage folder, which "/a/../b" never textually contains), symlinks kept as the user named them.
    return Path(os.path.abspath(Path(path).expanduser()))


def redact(uri: str) -> str:
    """``uri`` without what may carry keys: its query (``?secret_key=...``) and its user info
    (``s3://KEY:SECRET@bucket``, the form pyarrow takes them in): the form for messages.

    >>> redact("s3://bucket/ck?access_key=a&secret_key=b"), redact("s3://AKIA:SECRET@bucket/ck")
    ('s3://bucket/ck', 's3://bucket/ck')
    """
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def shown(where: Path | str) -> Path | str:
    """``where`` as an error message may show it: a URI's query (its keys, maybe) left out; a folder as it is.

    >>> shown("s3://bucket/ck/a/ck-1.ckpt?secret_key=b"), shown(Path("/data/ck"))
    ('s3://bucket/ck/a/ck-1.ckpt', PosixPath('/data/ck'))
    """
    return redact(where) if isinstance(where, str) and "://" in where else where
