"""Hooks: user code that runs around cycles, checkpoints and interrupts.

A hook sees a :class:`HookContext` and may return a :class:`HookResult` (or
nothing). Hooks are bounded: one that raises is logged and reported as a
failed result; one that runs past its timeout is abandoned and reported the
same way. A hook can *request* an interrupt (``ctx.request_interrupt``: the
"dangerous tool detected" pattern) but can never block, undo or cancel one: by
the time PRE_INTERRUPT hooks run, the interrupt is already accepted, and the
stop goes on whatever they do.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kaizen_ray.core._threads import DaemonCall
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptReason, InterruptSource

logger = logging.getLogger("kaizen_ray.hooks")

__all__ = ["HookEvent", "HookContext", "HookResult", "HookManager"]


class HookEvent(StrEnum):
    """Where in an agent's life a hook runs."""

    PRE_CYCLE = "pre_cycle"  # before each step
    POST_CYCLE = "post_cycle"  # after a step's result is committed
    PRE_CHECKPOINT = "pre_checkpoint"  # before a checkpoint is saved
    POST_CHECKPOINT = "post_checkpoint"  # after it is saved (ctx.checkpoint_id is set)
    PRE_INTERRUPT = "pre_interrupt"  # the loop saw an accepted interrupt, before its checkpoint
    POST_INTERRUPT = "post_interrupt"  # the interrupted run is checkpointed and about to return
    BUDGET_WARNING = "budget_warning"  # spend crossed the budget's warning threshold (once)


@dataclass(frozen=True)
class HookContext:
    """What a hook sees. ``request_interrupt`` asks the agent to stop (PROGRAMMATIC).

    >>> ctx = HookContext(HookEvent.POST_CYCLE, agent_name="a1", cycle=3)
    >>> ctx.request_interrupt("dangerous tool")  # no manager: refused
    False
    """

    event: HookEvent
    agent_name: str
    cycle: int = 0
    state: Any = None
    reason: InterruptReason | None = None
    checkpoint_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    manager: InterruptManager | None = field(default=None, repr=False)

    def request_interrupt(
        self,
        message: str = "",
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Ask this agent to stop, as a PROGRAMMATIC interrupt raised by a hook."""
        if self.manager is None:
            return False
        meta = {"hook": self.event.value, **(metadata or {})}
        return self.manager.request_interrupt(InterruptSource.PROGRAMMATIC, mode, message, meta)


@dataclass(frozen=True)
class HookResult:
    """The outcome of one hook call. ``error`` keeps the exception itself, type and chain.

    >>> HookResult(hook="audit").ok
    True
    """

    hook: str
    data: Any = None
    error: BaseException | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True if the hook returned in time without raising."""
        return self.error is None and not self.timed_out


Hook = Callable[[HookContext], "HookResult | Any | Awaitable[HookResult | Any]"]


class HookManager:
    """Registry and bounded runner of hooks, per event, in registration order.

    >>> hooks = HookManager(timeout_s=1.0)
    >>> seen = []
    >>> hooks.register(HookEvent.PRE_CYCLE, lambda ctx: seen.append(ctx.cycle))
    >>> results = asyncio.run(hooks.trigger(HookContext(HookEvent.PRE_CYCLE, "a1", cycle=1)))
    >>> seen, [r.ok for r in results]
    ([1], [True])
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._hooks: dict[HookEvent, list[tuple[Hook, float | None]]] = {e: [] for e in HookEvent}
        self._lock = threading.Lock()

    def register(self, event: HookEvent | str, hook: Hook, *, timeout_s: float | None = None) -> None:
        """Run ``hook(ctx)`` on ``event``; sync or async; ``timeout_s`` overrides the default."""
        try:
            event = HookEvent(event)
        except ValueError:
            raise ValueError(f"event {event!r} is not a HookEvent; expected one of {[e.value for e in HookEvent]}") from None
        if not callable(hook):
            raise TypeError(f"hook for {event.value} must be callable, got {hook!r}")
        with self._lock:
            self._hooks[event].append((hook, timeout_s))

    def unregister(self, event: HookEvent | str, hook: Hook) -> None:
        """Remove every registration of ``hook`` for ``event``."""
        with self._lock:
            event = HookEvent(event)
            self._hooks[event] = [(h, t) for h, t in self._hooks[event] if h is not hook]

    def hooks_for(self, event: HookEvent | str) -> list[Hook]:
        """The hooks registered for ``event``, in order."""
        with self._lock:
            return [h for h, _ in self._hooks[HookEvent(event)]]

    async def trigger(self, ctx: HookContext) -> list[HookResult]:
        """Run the hooks of ``ctx.event`` one after the other, each bounded by its timeout.

        Never raises for a hook's failure: the failure is logged and returned.
        """
        with self._lock:
            hooks = list(self._hooks[ctx.event])
        results = []
        for hook, timeout_s in hooks:
            results.append(await self._run_one(hook, ctx, self.timeout_s if timeout_s is None else timeout_s))
        return results

    async def _run_one(self, hook: Hook, ctx: HookContext, timeout_s: float) -> HookResult:
        name = getattr(hook, "__qualname__", repr(hook))
        try:
            if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None)):
                value = await asyncio.wait_for(hook(ctx), timeout_s)
            else:
                # A sync hook runs in a daemon thread so that one that hangs is
                # abandoned at its deadline instead of blocking the stop.
                call = DaemonCall(hook, ctx, name=f"kaizen-hook-{ctx.event.value}")
                value = await asyncio.wait_for(call.result(), timeout_s)
        except TimeoutError:
            logger.warning("hook %s on %s for %s ran past %.3fs and was abandoned", name, ctx.event.value, ctx.agent_name, timeout_s)
            return HookResult(hook=name, timed_out=True)
        except Exception as exc:  # noqa: BLE001 - a hook can never break the loop
            logger.error("hook %s on %s for %s raised %r", name, ctx.event.value, ctx.agent_name, exc, exc_info=exc)
            return HookResult(hook=name, error=exc)
        if isinstance(value, HookResult):
            return value
        return HookResult(hook=name, data=value)
