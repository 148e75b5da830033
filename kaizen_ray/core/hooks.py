"""Hooks: user code that runs around cycles, tools, checkpoints and interrupts.

The seed's hooks (kailash-kaizen's interrupt guide) port as written::

    async def dangerous_operation_hook(context: HookContext) -> HookResult:
        tool = context.data.get("tool")
        if tool in {"delete_database", "rm_rf"}:
            context.agent.interrupt_manager.request_interrupt(
                source=InterruptSource.PROGRAMMATIC, mode=InterruptMode.IMMEDIATE,
                message=f"Dangerous operation blocked: {tool}", metadata={"tool": tool},
            )
            return HookResult(success=False, error=f"blocked {tool}")
        return HookResult(success=True)

    agent.hook_manager.register(HookEvent.PRE_TOOL, dangerous_operation_hook)

Hooks are bounded: one that raises is logged and reported as a failed
:class:`HookResult` carrying the exception itself; one that runs past its
timeout is abandoned and reported the same way with a ``TimeoutError``. A hook
can *request* an interrupt but can never block, undo or cancel one: by the
time PRE_INTERRUPT hooks run the interrupt is already accepted, and the stop
goes on whatever they do.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import Any

from kaizen_ray.core._threads import DaemonCall
from kaizen_ray.core._validate import finite_non_negative
from kaizen_ray.core.errors import ConfigError
from kaizen_ray.core.interrupts import InterruptMode, InterruptSource, coerce_source_mode

logger = logging.getLogger("kaizen_ray.hooks")

__all__ = ["HookEvent", "HookPriority", "HookContext", "HookResult", "HookManager"]


class HookEvent(StrEnum):
    """Where in an agent's life a hook runs; each event's ``HookContext.data`` keys are listed beside it.

    >>> HookEvent("pre_tool") is HookEvent.PRE_TOOL
    True
    """

    # Before each step. data: {}
    PRE_CYCLE = "pre_cycle"
    # After a step's result is committed. data: {}
    POST_CYCLE = "post_cycle"
    # Before a checkpoint is saved. data: {}
    PRE_CHECKPOINT = "pre_checkpoint"
    # After it is saved. data: {"checkpoint_id"}
    POST_CHECKPOINT = "post_checkpoint"
    # As soon as the run learns of its first accepted interrupt, before the stop's
    # checkpoint. data: {"reason" (the message str), "source", "mode", "interrupt_reason"}
    PRE_INTERRUPT = "pre_interrupt"
    # After the stop's checkpoint is durable, before the run returns.
    # data: PRE_INTERRUPT's keys plus "checkpoint_id"
    POST_INTERRUPT = "post_interrupt"
    # Before a tool is called. data: {"tool", "arguments"}
    PRE_TOOL = "pre_tool"
    # After it returned. data: {"tool", "arguments", "result"}
    POST_TOOL = "post_tool"
    # Spend crossed the budget's warning threshold (once per budget). data: {"budget"}
    BUDGET_WARNING = "budget_warning"

    # Hashed as its value, in C: Enum's own __hash__ is Python code (the name's hash), and the
    # loop looks events up twice per cycle. It also agrees with ==, which a str value satisfies.
    __hash__ = str.__hash__


class HookPriority(IntEnum):
    """Run order among the hooks of one event: lower values first, ties in registration order.

    The values are kailash-kaizen's; a hook registered without one counts as NORMAL.

    >>> sorted([HookPriority.LOW, HookPriority.CRITICAL, HookPriority.NORMAL])
    [<HookPriority.CRITICAL: 0>, <HookPriority.NORMAL: 2>, <HookPriority.LOW: 3>]
    """

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3


def _coerce_event(event: Any) -> HookEvent:
    try:
        return HookEvent(event)
    except ValueError:
        raise ValueError(f"event {event!r} is not a HookEvent; expected one of {[e.value for e in HookEvent]}") from None


@dataclass(frozen=True)
class HookResult:
    """The outcome of one hook call.

    ``error`` is a message, or the exception itself (type, traceback and chain
    intact) when the hook raised or timed out. ``hook`` names the hook that
    produced it (set by :class:`HookManager`). ``ok`` is ``success``.

    >>> HookResult(success=True).ok
    True
    >>> HookResult(success=False, error="blocked rm_rf").error
    'blocked rm_rf'
    """

    success: bool = True
    data: Any = None
    error: str | BaseException | None = None
    hook: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.success, bool):
            raise TypeError(f"success must be a bool, got {type(self.success).__name__}: {self.success!r}")
        if self.error is not None and not isinstance(self.error, str | BaseException):
            raise TypeError(f"error must be a str, an exception or None, got {type(self.error).__name__}: {self.error!r}")

    @property
    def ok(self) -> bool:
        """The same as ``success``."""
        return self.success


@dataclass(frozen=True)
class HookContext:
    """What a hook sees: the event, the agent, the event's ``data``, the cycle and the state.

    ``agent`` is anything with ``.name`` and ``.interrupt_manager`` (the agent
    itself in-process), or None. ``event_type`` and ``agent_id`` are
    kailash-kaizen's names for ``event`` and ``agent_name``.

    >>> ctx = HookContext(HookEvent.PRE_TOOL, agent=None, data={"tool": "rm_rf"}, cycle=3)
    >>> ctx.data["tool"], ctx.agent_name, ctx.event_type.value
    ('rm_rf', None, 'pre_tool')
    >>> ctx.request_interrupt("dangerous tool")  # no agent, no manager: refused
    False
    """

    event: HookEvent
    agent: Any = None
    data: dict[str, Any] = field(default_factory=dict)
    cycle: int = 0
    state: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ once, here.
        object.__setattr__(self, "event", _coerce_event(self.event))
        if self.data is None:
            object.__setattr__(self, "data", {})
        elif not isinstance(self.data, dict):
            if not isinstance(self.data, Mapping):
                raise TypeError(f"data must be a dict, got {type(self.data).__name__}: {self.data!r}")
            object.__setattr__(self, "data", dict(self.data))
        if not isinstance(self.cycle, int) or isinstance(self.cycle, bool) or self.cycle < 0:
            raise ValueError(f"cycle must be an int >= 0, got {self.cycle!r}")

    @property
    def agent_name(self) -> str | None:
        """The agent's name, or None without an agent.

        >>> HookContext("post_cycle").agent_name is None
        True
        """
        return getattr(self.agent, "name", None)

    @property
    def agent_id(self) -> str | None:
        """kailash-kaizen's name for :attr:`agent_name`.

        >>> HookContext("post_cycle").agent_id is None
        True
        """
        return self.agent_name

    @property
    def event_type(self) -> HookEvent:
        """kailash-kaizen's name for :attr:`event`.

        >>> HookContext("pre_cycle").event_type
        <HookEvent.PRE_CYCLE: 'pre_cycle'>
        """
        return self.event

    def request_interrupt(
        self,
        message: str = "",
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Ask the agent to stop with a PROGRAMMATIC interrupt; ``metadata["hook"]`` names this event.

        Returns the manager's answer (True if accepted), or False when the
        agent has no interrupt manager. A bad ``mode`` is a ValueError either way.

        >>> from kaizen_ray.core.interrupts import InterruptManager
        >>> class Agent:
        ...     name, interrupt_manager = "a1", InterruptManager("a1")
        >>> ctx = HookContext(HookEvent.POST_TOOL, Agent(), {"tool": "rm_rf"})
        >>> ctx.request_interrupt("dangerous tool", mode="immediate", metadata={"tool": "rm_rf"})
        True
        >>> Agent.interrupt_manager.reason.metadata
        {'tool': 'rm_rf', 'hook': 'post_tool'}
        """
        source, mode = coerce_source_mode(InterruptSource.PROGRAMMATIC, mode)
        manager = getattr(self.agent, "interrupt_manager", None)
        if manager is None:
            return False
        meta = {**(metadata or {}), "hook": self.event.value}
        return manager.request_interrupt(source, mode, message, meta)


Hook = Callable[[HookContext], "HookResult | Any | Awaitable[HookResult | Any]"]


def _check_timeout(name: str, value: Any) -> float:
    # >= 0 like AutonomousConfig.hook_timeout_s, which feeds it; 0 starts hooks without waiting for them.
    return finite_non_negative(name, value, unit="seconds")


def _check_priority(value: Any) -> int:
    if value is None:
        return HookPriority.NORMAL
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("priority", value, "a HookPriority or an int (lower runs first)")
    return int(value)


def _hook_name(hook: Any) -> str:
    return getattr(hook, "__qualname__", None) or f"{type(hook).__qualname__} object"


def _is_async(hook: Any) -> bool:
    # A callable object's async __call__ counts: iscoroutinefunction(obj) is False for it.
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None))


class _Abandoned(Exception):
    """Our own deadline passed (never a hook's own TimeoutError)."""


@dataclass(frozen=True)
class _Entry:
    priority: int
    seq: int
    hook: Hook
    timeout_s: float | None


class HookManager:
    """Registry and bounded runner of hooks, per event, in priority order.

    >>> hooks = HookManager(timeout_s=1.0)
    >>> seen = []
    >>> hooks.register(HookEvent.PRE_CYCLE, lambda ctx: seen.append(("late", ctx.cycle)), HookPriority.LOW)
    >>> hooks.register(HookEvent.PRE_CYCLE, lambda ctx: seen.append(("first", ctx.cycle)))
    >>> results = asyncio.run(hooks.trigger(HookContext(HookEvent.PRE_CYCLE, cycle=1)))
    >>> seen, [r.success for r in results]
    ([('first', 1), ('late', 1)], [True, True])
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = _check_timeout("timeout_s", timeout_s)
        self._entries: dict[HookEvent, list[_Entry]] = {e: [] for e in HookEvent}
        self._seq = itertools.count()
        self._lock = threading.Lock()
        # Abandoned async hooks, held until they end so the loop does not lose them mid-flight.
        self._abandoned: set[asyncio.Task[Any]] = set()

    def register(
        self,
        event: HookEvent | str,
        hook: Hook,
        priority: HookPriority | int | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        """Run ``hook(ctx)`` on ``event``: sync or async, in ``priority`` order, bounded by ``timeout_s``.

        ``timeout_s`` defaults to the manager's. Registering the same hook
        twice runs it twice.

        >>> m = HookManager()
        >>> m.register("post_cycle", repr, HookPriority.HIGH, timeout_s=0.5)
        >>> m.register("post_cyle", repr)
        Traceback (most recent call last):
        ...
        ValueError: event 'post_cyle' is not a HookEvent; expected one of [...]
        """
        event = _coerce_event(event)
        if not callable(hook):
            raise TypeError(f"hook for {event.value} must be callable, got {type(hook).__name__}: {hook!r}")
        rank = _check_priority(priority)
        if timeout_s is not None:
            timeout_s = _check_timeout("timeout_s", timeout_s)
        with self._lock:
            self._entries[event].append(_Entry(rank, next(self._seq), hook, timeout_s))
            self._entries[event].sort(key=lambda e: (e.priority, e.seq))

    def unregister(self, event: HookEvent | str, hook: Hook) -> int:
        """Remove every registration of ``hook`` for ``event``; returns how many there were.

        Hooks compare by ``==``, so ``self.method`` unregisters what ``self.method`` registered.

        >>> m = HookManager()
        >>> m.register("pre_cycle", repr)
        >>> m.unregister("pre_cycle", repr), m.hooks_for("pre_cycle")
        (1, [])
        """
        event = _coerce_event(event)
        with self._lock:
            kept = [e for e in self._entries[event] if e.hook != hook]
            removed = len(self._entries[event]) - len(kept)
            self._entries[event] = kept
        return removed

    def has_hooks(self, event: HookEvent) -> bool:
        """True if any hook is registered for ``event`` (a :class:`HookEvent`): the agent loop's check, every cycle.

        >>> m = HookManager()
        >>> m.register("pre_cycle", repr)
        >>> m.has_hooks(HookEvent.PRE_CYCLE), m.has_hooks(HookEvent.POST_CYCLE)
        (True, False)
        """
        # Lock-free (a list's truth is one atomic read) and no coercion: it runs
        # twice per cycle. A hook registered meanwhile runs from the next check on.
        return bool(self._entries[event])

    def hooks_for(self, event: HookEvent | str) -> list[Hook]:
        """The hooks registered for ``event``, in the order they run.

        >>> m = HookManager()
        >>> m.register("pre_tool", len, HookPriority.LOW)
        >>> m.register("pre_tool", repr, HookPriority.CRITICAL)
        >>> [h.__name__ for h in m.hooks_for("pre_tool")]
        ['repr', 'len']
        """
        event = _coerce_event(event)
        with self._lock:
            return [e.hook for e in self._entries[event]]

    async def trigger(self, ctx: HookContext) -> list[HookResult]:
        """Run the hooks of ``ctx.event`` one after the other, each bounded by its timeout.

        Never raises for a hook's failure: it is logged and returned as
        ``HookResult(success=False, error=...)``. A hook returning None counts
        as ``HookResult(success=True)``, any other value as its ``data``.

        >>> async def blocked(ctx):
        ...     return HookResult(success=False, error=f"blocked {ctx.data['tool']}")
        >>> m = HookManager()
        >>> m.register(HookEvent.PRE_TOOL, blocked)
        >>> asyncio.run(m.trigger(HookContext(HookEvent.PRE_TOOL, data={"tool": "rm_rf"})))
        [HookResult(success=False, data=None, error='blocked rm_rf', hook='blocked')]
        """
        if not isinstance(ctx, HookContext):
            raise TypeError(f"trigger expects a HookContext, got {type(ctx).__name__}: {ctx!r}")
        with self._lock:
            entries = list(self._entries[ctx.event])
        return [await self._run_one(e.hook, ctx, self.timeout_s if e.timeout_s is None else e.timeout_s) for e in entries]

    async def _run_one(self, hook: Hook, ctx: HookContext, timeout_s: float) -> HookResult:
        name = _hook_name(hook)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            if _is_async(hook):
                value = await self._await_bounded(hook(ctx), deadline, name)
            else:
                # A sync hook runs in a daemon thread so that one that hangs is
                # abandoned at its deadline instead of blocking the stop.
                call = DaemonCall(hook, ctx, name=f"kaizen-hook-{ctx.event.value}")
                value = await self._await_bounded(call.result(), deadline, name)
                if inspect.isawaitable(value):  # e.g. a lambda returning a coroutine
                    value = await self._await_bounded(value, deadline, name)
        except _Abandoned:
            error = TimeoutError(
                f"hook {name} on {ctx.event.value} for {ctx.agent_name!r} ran past its timeout "
                f"of {timeout_s:g}s and was abandoned"
            )
            logger.warning("%s", error)
            return HookResult(success=False, error=error, hook=name)
        except Exception as exc:  # noqa: BLE001 - a hook can never break the loop
            logger.error("hook %s on %s for %r raised %r", name, ctx.event.value, ctx.agent_name, exc, exc_info=exc)
            return HookResult(success=False, error=exc, hook=name)
        if value is None:
            return HookResult(success=True, hook=name)
        if isinstance(value, HookResult):
            if not value.success:
                logger.info("hook %s on %s for %r reported failure: %s", name, ctx.event.value, ctx.agent_name, value.error)
            return value if value.hook is not None else replace(value, hook=name)
        return HookResult(success=True, data=value, hook=name)

    async def _await_bounded(self, awaitable: Awaitable[Any], deadline: float, name: str) -> Any:
        """Await ``awaitable`` until ``deadline``; past it, cancel it and leave without waiting.

        Not ``asyncio.wait_for``: it waits for the cancelled task to end, so an
        async hook that swallows its cancellation would hold up the stop.
        """
        task = asyncio.ensure_future(awaitable)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait({task}, timeout=max(deadline - loop.time(), 0))
        except asyncio.CancelledError:
            task.cancel()  # the trigger itself is cancelled: so is the hook
            raise
        if task.done():
            if task.cancelled():
                raise RuntimeError("the hook's task was cancelled from inside") from None
            return task.result()
        task.cancel()  # a sync hook's thread goes on: only the wait for it is cancelled
        self._abandoned.add(task)
        task.add_done_callback(functools.partial(self._forget, name))
        raise _Abandoned

    def _forget(self, name: str, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("abandoned hook %s ended later with %r", name, task.exception())
