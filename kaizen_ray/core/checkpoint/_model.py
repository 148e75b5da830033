"""The leaf of the checkpoint package: the model, its errors, names and ids.

A checkpoint is one saved state of one agent (:class:`Checkpoint`); listing
returns its header alone (:class:`CheckpointInfo`). This module imports
nothing else of the package but ``_json``, its check of metadata (like
``_paths``, where storage lives, a leaf too): ``_format`` builds on it,
``_storage`` on both, and the package's ``__init__`` re-exports the public
names.

Loading unpickles, which can run code: load only checkpoints your own agents
wrote.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kaizen_ray.core._validate import aware_utc
from kaizen_ray.core.checkpoint._json import _JSON_RULE, _json_clean, _json_problem
from kaizen_ray.core.checkpoint._paths import shown
from kaizen_ray.core.errors import KaizenError
from kaizen_ray.core.interrupts import InterruptReason

__all__ = [
    "CheckpointStatus", "CheckpointError", "CheckpointNotFoundError",
    "CheckpointCorruptError", "CheckpointSignatureError", "CheckpointSerializationError", "CheckpointStorageError",
    "Checkpoint", "CheckpointInfo", "new_checkpoint_id", "validate_agent_name", "validate_checkpoint_id",
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
        where = shown(where)  # a URI's query may hold its keys: never in a message
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
        path = shown(path)
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
        path = shown(path)
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
    _agent_folder(name)
    return name


def _agent_folder(name: str) -> str:
    """The folder name of ``name`` (each ``/`` quoted) once it passes :func:`validate_agent_name`'s checks.

    Every checkpoint of a run checks the same name again: for an exact
    ``str`` the answer is cached (a refusal is not: it raises anew). A ``str``
    subclass is checked afresh each time, since it could compare equal to a
    cached name that it does not spell.
    """
    if type(name) is str:
        return _checked_folder(name)
    if not isinstance(name, str):
        raise TypeError(f"agent name must be a str, got {type(name).__name__}: {name!r}")
    return _checked_folder.__wrapped__(name)


@functools.lru_cache(maxsize=1024)
def _checked_folder(name: str) -> str:
    rule = ("expected 1..200 characters: '/'-separated segments, each of letters, digits, "
            "'_', '.', '-', not starting with '.' or '-'")
    if not 1 <= len(name) <= 200 or not all(_SEGMENT.fullmatch(s) for s in name.split("/")):
        raise ValueError(f"agent name {name!r} is not allowed: {rule}")
    folder = _folder_name(name)
    if len(folder) > 255:  # each '/' becomes '%2F': the folder name must fit NAME_MAX
        raise ValueError(f"agent name {name!r} is not allowed: too many '/' for a 255-byte folder name")
    return folder


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
    return f"ck-{_utc_stamp(us // 1_000_000)}{us % 1_000_000:06d}Z-{counter:04x}-{secrets.token_bytes(3).hex()}"


_last_stamp = (0, "19700101T000000")  # (second, its stamp), one tuple so that threads never see half of it


def _utc_stamp(second: int) -> str:
    """``second`` (Unix time) as ``YYYYmmddTHHMMSS`` in UTC: the date part of an id.

    Ids come in bursts, so the last second's stamp is kept; a new one is
    formatted from ``time.gmtime``, at half the cost of ``strftime``. What
    ``datetime`` writes otherwise (a year outside 1000..9999, a leap second,
    which it clamps to :59) is left to it.

    >>> _utc_stamp(1795600000), _utc_stamp(0)
    ('20261125T094640', '19700101T000000')
    """
    global _last_stamp
    cached_second, stamp = _last_stamp
    if second != cached_second:
        t = time.gmtime(second)
        if 1000 <= t.tm_year <= 9999 and t.tm_sec < 60:
            stamp = "%04d%02d%02dT%02d%02d%02d" % t[:6]
        else:
            stamp = datetime.fromtimestamp(second, UTC).strftime("%Y%m%dT%H%M%S")
        _last_stamp = (second, stamp)
    return stamp


# -- models ---------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        checkpoint_id, metadata = new_checkpoint_id(), dict(metadata or {})
        if cls is Checkpoint:
            fields = _plain_fields(checkpoint_id, agent, cycle, status, state, interrupt_reason, parent_id, metadata)
            if fields is not None:
                return _unvalidated(fields)
        return cls(
            id=checkpoint_id, agent=agent, cycle=cycle, status=status, state=state,
            interrupt_reason=interrupt_reason, parent_id=parent_id, metadata=metadata,
        )


_NEW_FIELDS = frozenset({"id", "agent", "cycle", "status", "state", "interrupt_reason", "parent_id", "metadata"})
_STATUS_VALUES = frozenset(s.value for s in CheckpointStatus)
_object_setattr = object.__setattr__


def _plain_fields(
    checkpoint_id: str, agent: Any, cycle: Any, status: Any, state: Any, reason: Any, parent_id: Any,
    metadata: dict[str, Any],
) -> dict[str, Any] | None:
    """The fields validation would make for :meth:`Checkpoint.new`, or None to let it decide (and word any error).

    A run checkpoints every cycle, and validating the model cost more than
    the checks themselves. Here each value must already be of the exact type
    validation keeps as it is (no str subclass, no bool for an int) and pass
    the same checks: agent name, cycle >= 0, status, parent id, JSON-only
    metadata. The new id and ``created_at`` are made here, valid by
    construction. Anything else goes to validation, which raises as before.
    """
    if type(status) is str and status in _STATUS_VALUES:
        status = CheckpointStatus(status)
    if not (
        type(agent) is str and type(cycle) is int and cycle >= 0 and type(status) is CheckpointStatus
        and (reason is None or type(reason) is InterruptReason)
        and (parent_id is None or (type(parent_id) is str and _ID.fullmatch(parent_id)))
        and all(type(key) is str for key in metadata) and _json_clean(metadata)
    ):
        return None
    try:
        _checked_folder(agent)
    except ValueError:
        return None
    return {  # in the order of the fields, as validation makes it (repr follows it)
        "id": checkpoint_id, "agent": agent, "cycle": cycle, "status": status, "interrupt_reason": reason,
        "created_at": _utcnow(), "parent_id": parent_id, "metadata": metadata, "state": state,
    }


def _unvalidated(fields: dict[str, Any]) -> Checkpoint:
    """The :class:`Checkpoint` of already checked ``fields``: ``model_construct``'s steps, at a fifth of its cost.

    The attributes are those validation sets on a model without extras or
    private attributes; a unit test pins the result equal to a validated
    one (fields, their order and types, the fields set).
    """
    ckpt = Checkpoint.__new__(Checkpoint)
    _object_setattr(ckpt, "__dict__", fields)
    _object_setattr(ckpt, "__pydantic_fields_set__", set(_NEW_FIELDS))
    _object_setattr(ckpt, "__pydantic_extra__", None)
    _object_setattr(ckpt, "__pydantic_private__", None)
    return ckpt


class CheckpointInfo(_Header):
    """A checkpoint's header, without the state: what listing returns.

    >>> info = CheckpointInfo(id="ck-1", agent="a", cycle=0, status="completed", path=None, payload_size=5)
    >>> info.payload_size
    5
    """

    path: Path | str | None = None  # a str for a checkpoint at a URI (s3://...)
    payload_size: int = Field(ge=0)
