"""The words of a stop: where it comes from, how hard it is, and why (the interrupt vocabulary).

Every layer speaks it: the manager (:mod:`kaizen_ray.core.interrupts`),
handlers, runs, results, the Ray runtime and the CLI. Public names are
re-exported from :mod:`kaizen_ray.core.interrupts` and the package top.

Private: import the public names from ``kaizen_ray`` (or ``kaizen_ray.core.interrupts``).
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kaizen_ray.core._validate import aware_utc
from kaizen_ray.core.errors import KaizenError

__all__ = [
    "InterruptMode", "InterruptReason", "InterruptSource", "InterruptTarget", "InterruptedError",
    "coerce_mode", "coerce_source_mode", "pick_message",
]  # fmt: skip


class InterruptSource(StrEnum):
    """Who asked for the stop.

    >>> InterruptSource("user") is InterruptSource.USER
    True
    """

    USER = "user"  # a person: Ctrl+C, SIGTERM, a kernel interrupt
    SYSTEM = "system"  # the runtime: timeout, budget, escalation
    PROGRAMMATIC = "programmatic"  # code: an API call, a hook, another agent


class InterruptMode(StrEnum):
    """How hard to stop.

    >>> InterruptMode.GRACEFUL.rank < InterruptMode.IMMEDIATE.rank
    True
    """

    GRACEFUL = "graceful"  # finish the cycle in flight, checkpoint, stop
    IMMEDIATE = "immediate"  # cancel the cycle in flight, checkpoint the last committed state, stop

    @property
    def rank(self) -> int:
        """Order used for escalation: GRACEFUL (0) < IMMEDIATE (1)."""
        return 0 if self is InterruptMode.GRACEFUL else 1


class InterruptReason(BaseModel):
    """Why an agent was asked to stop. Frozen: a reason is a fact, not a variable.

    >>> r = InterruptReason(source="user", mode="graceful", message="Ctrl+C")
    >>> (r.source, r.mode, r.timestamp.tzinfo is not None)
    (<InterruptSource.USER: 'user'>, <InterruptMode.GRACEFUL: 'graceful'>, True)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: InterruptSource
    mode: InterruptMode = InterruptMode.GRACEFUL
    message: str = ""
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return aware_utc("timestamp", value)

    def with_metadata(self, **extra: Any) -> InterruptReason:
        """A copy with ``extra`` merged into ``metadata``.

        >>> InterruptReason(source="system").with_metadata(handler="timeout").metadata
        {'handler': 'timeout'}
        """
        return self.model_copy(update={"metadata": {**self.metadata, **extra}})


class InterruptedError(KaizenError, builtins.InterruptedError):  # noqa: A001 - the contract's name
    """Raised by a run with ``raise_on_interrupt=True`` that was interrupted.

    >>> err = InterruptedError(InterruptReason(source="user"), checkpoint_id="ck-1")
    >>> isinstance(err, builtins.InterruptedError), isinstance(err, KaizenError), err.checkpoint_id
    (True, True, 'ck-1')
    """

    def __init__(self, reason: InterruptReason, checkpoint_id: str | None = None) -> None:
        self.reason = reason
        self.checkpoint_id = checkpoint_id
        where = f"; checkpoint {checkpoint_id}" if checkpoint_id else "; no checkpoint"
        super().__init__(
            f"interrupted by {reason.source.value} ({reason.mode.value}): "
            f"{reason.message or 'no message'}{where}"
        )

    def __reduce__(self):  # keep .reason and .checkpoint_id across pickling (Ray)
        return (type(self), (self.reason, self.checkpoint_id))


@runtime_checkable
class InterruptTarget(Protocol):
    """Anything that can be told to stop: a manager, an agent or supervisor handle."""

    def request_interrupt(
        self,
        source: InterruptSource,
        mode: InterruptMode = ...,
        reason: str = ...,
        metadata: dict[str, Any] | None = ...,
    ) -> bool: ...


def coerce_mode(mode: Any) -> InterruptMode:
    """An :class:`InterruptMode` from itself or its string value; a clear ValueError otherwise.

    >>> coerce_mode("immediate")
    <InterruptMode.IMMEDIATE: 'immediate'>
    """
    try:
        return InterruptMode(mode)
    except ValueError:
        raise ValueError(f"mode {mode!r} is not an InterruptMode; expected one of {[m.value for m in InterruptMode]}") from None


def coerce_source_mode(source: Any, mode: Any) -> tuple[InterruptSource, InterruptMode]:
    """``(source, mode)`` as enums, from enums or their string values; a clear ValueError otherwise.

    The one coercion of sources and modes: every entry point that takes them as strings goes through here.

    >>> coerce_source_mode("user", "immediate")
    (<InterruptSource.USER: 'user'>, <InterruptMode.IMMEDIATE: 'immediate'>)
    """
    try:
        source = InterruptSource(source)
    except ValueError:
        raise ValueError(
            f"source {source!r} is not an InterruptSource; expected one of {[s.value for s in InterruptSource]}"
        ) from None
    return source, coerce_mode(mode)


def pick_message(reason: Any, message: Any = None) -> str:
    """The request's message from ``reason=`` or its alias ``message=`` (kailash-kaizen's name), checked.

    >>> pick_message("", message="Ctrl+C")
    'Ctrl+C'
    """
    if message is not None:
        if reason and reason != message:
            raise ValueError(f"give the message once: reason={reason!r} and message={message!r} differ")
        reason = message
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a str message, got {type(reason).__name__}: {reason!r}")
    return reason
