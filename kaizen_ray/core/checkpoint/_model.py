"""The leaf of the checkpoint package: the model, its errors, names, ids and paths.

A checkpoint is one saved state of one agent (:class:`Checkpoint`); listing
returns its header alone (:class:`CheckpointInfo`). This module imports
nothing else of the package: ``_format`` builds on it, ``_storage`` on both,
and the package's ``__init__`` re-exports the public names.

Loading unpickles, which can run code: load only checkpoints your own agents
wrote.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kaizen_ray.core._validate import aware_utc
from kaizen_ray.core.errors import ConfigError, KaizenError
from kaizen_ray.core.interrupts import InterruptReason

__all__ = [
    "CheckpointStatus", "CheckpointError", "CheckpointNotFoundError",
    "CheckpointCorruptError", "CheckpointSignatureError", "CheckpointSerializationError", "CheckpointStorageError",
    "Checkpoint", "CheckpointInfo", "new_checkpoint_id", "validate_agent_name",
    "validate_checkpoint_id", "default_storage_path", "resolve_storage_path", "storage_scheme",
    "SUPPORTED_SCHEMES",
]

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class CheckpointStatus(StrEnum):
    """Why the checkpoint was taken.

    >>> CheckpointStatus("interrupted") is CheckpointStatus.INTERRUPTED
    True
    """

    RUNNING = "running"  # periodic checkpoint taken mid-run
    COMPLETED = "completed"  # the run finished its work
    INTERRUPTED = "interrupted"  # the run stopped on an interrupt (see interrupt_reason)
    FAILED = "failed"  # the run raised: this is the last good state before the failure
    KILLED = "killed"  # the run was cut off (IMMEDIATE or escalation): last committed state


# -- errors -------------------------------------------------------------------------


class CheckpointError(KaizenError):
    """Base of every checkpoint error.

    >>> issubclass(CheckpointCorruptError, CheckpointError) and issubclass(CheckpointError, KaizenError)
    True
    """


class CheckpointNotFoundError(CheckpointError, LookupError):
    """No checkpoint with that id where we looked.

    >>> str(CheckpointNotFoundError("ck-1", "/data"))
    "no checkpoint 'ck-1' in /data (looked for /data/*/ck-1.ckpt)"
    """

    def __init__(self, checkpoint_id: str, where: Path | str, hint: str = "") -> None:
        self.checkpoint_id, self.where, self.hint = checkpoint_id, where, hint
        super().__init__(
            f"no checkpoint {checkpoint_id!r} in {where} "
            f"(looked for {os.path.join(where, '*', checkpoint_id + '.ckpt')}){hint}"
        )

    def __reduce__(self):  # keep the attributes across pickling (Ray)
        return (type(self), (self.checkpoint_id, self.where, self.hint))


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file (or byte string) that fails verification.

    >>> str(CheckpointCorruptError("/d/a/ck-1.ckpt", "payload checksum mismatch"))
    'checkpoint /d/a/ck-1.ckpt is corrupt: payload checksum mismatch'
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"checkpoint {path} is corrupt: {problem}")

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class CheckpointSignatureError(CheckpointCorruptError):
    """A checkpoint refused because a key is set and its signature is missing or wrong; nothing was unpickled.

    A kind of :class:`CheckpointCorruptError`, so listings and ``"latest"``
    skip such files as they skip damaged ones.

    >>> str(CheckpointSignatureError("/d/a/ck-1.ckpt", "it is not signed, and a checkpoint key is set"))
    'checkpoint /d/a/ck-1.ckpt is refused: it is not signed, and a checkpoint key is set'
    """

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(path, problem)
        self.args = (f"checkpoint {path} is refused: {problem}",)

    def __str__(self) -> str:
        return str(self.args[0])


class CheckpointSerializationError(CheckpointError, TypeError):
    """Part of a checkpoint cannot be serialised; names the agent, the place and the type.

    >>> str(CheckpointSerializationError("a", "_thread.lock", "state['lock']", "cannot pickle"))
    "cannot checkpoint agent 'a': state['lock'] is a _thread.lock; cannot pickle"
    """

    def __init__(self, agent: str, type_name: str, where: str = "state", detail: str = "") -> None:
        self.agent, self.type_name, self.where, self.detail = agent, type_name, where, detail
        tail = f"; {detail}" if detail else ""
        super().__init__(f"cannot checkpoint agent {agent!r}: {where} is a {type_name}{tail}")

    def __reduce__(self):
        return (type(self), (self.agent, self.type_name, self.where, self.detail))


class CheckpointStorageError(CheckpointError, OSError):
    """The storage folder (or a file in it) cannot be used.

    >>> str(CheckpointStorageError("/x/file/ckpts", "/x/file is not a folder"))
    'checkpoint storage /x/file/ckpts is unusable: /x/file is not a folder'
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"checkpoint storage {path} is unusable: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


# -- names ----------------------------------------------------------------------------


def validate_agent_name(name: str) -> str:
    """Return ``name`` if it is a safe agent name (it becomes a folder name), else ValueError.

    >>> validate_agent_name("sup/child-1")
    'sup/child-1'
    >>> validate_agent_name("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: agent name '../x' is not allowed: ...
    """
    if not isinstance(name, str):
        raise TypeError(f"agent name must be a str, got {type(name).__name__}: {name!r}")
    rule = ("expected 1..200 characters: '/'-separated segments, each of letters, digits, "
            "'_', '.', '-', not starting with '.' or '-'")
    if not 1 <= len(name) <= 200 or not all(_SEGMENT.fullmatch(s) for s in name.split("/")):
        raise ValueError(f"agent name {name!r} is not allowed: {rule}")
    if len(_folder_name(name)) > 255:  # each '/' becomes '%2F': the folder name must fit NAME_MAX
        raise ValueError(f"agent name {name!r} is not allowed: too many '/' for a 255-byte folder name")
    return name


def validate_checkpoint_id(checkpoint_id: str) -> str:
    """Return ``checkpoint_id`` if it is a safe id (it becomes a file name), else ValueError.

    >>> validate_checkpoint_id("ck-20261125T100501123456Z-0000-a1b2c3")
    'ck-20261125T100501123456Z-0000-a1b2c3'
    """
    if not isinstance(checkpoint_id, str) or not _ID.fullmatch(checkpoint_id):
        raise ValueError(
            f"checkpoint id {checkpoint_id!r} is not allowed: expected 1..128 letters, digits, "
            "'_', '.', '-', starting with a letter or digit"
        )
    return checkpoint_id


def _folder_name(agent: str) -> str:
    return quote(agent, safe="")


_now_ns = time.time_ns  # the wall clock: the only clock processes share; a seam for tests
_id_lock = threading.Lock()
_id_last_us = 0
_id_counter = 0


def _reset_id_lock() -> None:  # a lock held by another thread at fork() stays held in the child
    global _id_lock
    _id_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_id_lock)


def new_checkpoint_id() -> str:
    """A unique id that sorts by creation time (microseconds, then a per-process counter).

    >>> a, b = new_checkpoint_id(), new_checkpoint_id()
    >>> a < b and a.startswith("ck-") and len(a) == len(b)
    True
    """
    global _id_last_us, _id_counter
    now_us = _now_ns() // 1000
    with _id_lock:
        # Never go backwards, even if the wall clock does; past 0xffff ids in one
        # microsecond, borrow the next microsecond so the counter keeps 4 digits.
        if now_us > _id_last_us:
            _id_last_us, _id_counter = now_us, 0
        else:
            _id_counter += 1
            if _id_counter > 0xFFFF:
                _id_last_us, _id_counter = _id_last_us + 1, 0
        us, counter = _id_last_us, _id_counter
    stamp = datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y%m%dT%H%M%S")
    return f"ck-{stamp}{us % 1_000_000:06d}Z-{counter:04x}-{secrets.token_hex(3)}"


# -- paths ----------------------------------------------------------------------------


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
    return Path(unquote(parts.path))


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
    return Path(path).expanduser().absolute()


# -- models ---------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _json_problem(value: Any, where: str, depth: int = 0) -> tuple[str, str] | None:
    """(where, type) of the first value that would not come back equal from JSON, or None."""
    if depth > 64:
        return where, f"{_type_name(value)} nested deeper than 64 levels"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"non-finite float ({value})")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if found := _json_problem(item, f"{where}[{i}]", depth + 1):
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r}", _type_name(key)
            if found := _json_problem(item, f"{where}[{key!r}]", depth + 1):
                return found
        return None
    return where, _type_name(value)


_JSON_RULE = (
    "metadata must be small and JSON-only: dict with str keys, list, str, int, finite float, bool, None"
)


class _Header(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    id: str
    agent: str
    cycle: int = Field(ge=0)
    status: CheckpointStatus
    interrupt_reason: InterruptReason | None = None
    created_at: datetime = Field(default_factory=_utcnow)
    parent_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "parent_id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else validate_checkpoint_id(value)

    @field_validator("agent")
    @classmethod
    def _agent(cls, value: str) -> str:
        return validate_agent_name(value)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return aware_utc("created_at", value)

    @field_validator("metadata")
    @classmethod
    def _json(cls, value: dict[str, Any]) -> dict[str, Any]:
        if found := _json_problem(value, "metadata"):
            raise ValueError(f"{found[0]} is a {found[1]}; {_JSON_RULE}")
        return value


class Checkpoint(_Header):
    """One saved state of one agent. Frozen; ``state`` is anything cloudpickle can serialise.

    >>> ck = Checkpoint.new("worker", 3, CheckpointStatus.RUNNING, {"n": 3}, metadata={"cost": 1.5})
    >>> ck.agent, ck.cycle, ck.state
    ('worker', 3, {'n': 3})
    """

    state: Any = None

    @classmethod
    def new(
        cls,
        agent: str,
        cycle: int,
        status: CheckpointStatus | str,
        state: Any,
        *,
        interrupt_reason: InterruptReason | None = None,
        parent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """A checkpoint with a fresh id (:func:`new_checkpoint_id`), created now.

        >>> Checkpoint.new("a", 0, "completed", None).id.startswith("ck-")
        True
        """
        return cls(
            id=new_checkpoint_id(), agent=agent, cycle=cycle, status=status, state=state,
            interrupt_reason=interrupt_reason, parent_id=parent_id, metadata=dict(metadata or {}),
        )


class CheckpointInfo(_Header):
    """A checkpoint's header, without the state: what listing returns.

    >>> info = CheckpointInfo(id="ck-1", agent="a", cycle=0, status="completed", path=None, payload_size=5)
    >>> info.payload_size
    5
    """

    path: Path | str | None = None  # a str for a checkpoint at a URI (s3://...)
    payload_size: int = Field(ge=0)
