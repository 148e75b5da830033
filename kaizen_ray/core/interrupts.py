"""The interrupt manager: who hears of a stop, and when (its vocabulary is in :mod:`kaizen_ray.core._reasons`).

Semantics, stated once and implemented to the letter:

* An :class:`InterruptManager` is *level-triggered*: once a request is
  accepted it stays interrupted until :meth:`InterruptManager.reset`.
* The **first** accepted reason is kept. Later requests never replace it.
* The mode only **escalates**: a GRACEFUL manager accepts an IMMEDIATE request
  (the reason stays the first one; ``mode`` becomes IMMEDIATE); every other
  request on an interrupted manager is refused (returns ``False``).
* Every accepted request, the first and the escalation, is appended to
  ``history``, and is forwarded to every child at once, outside the lock.
  Because acceptance is monotonic (at most two per episode), forwarding through
  a loop of children (a child that is also an ancestor) stops by itself.
* Waiters (:meth:`InterruptManager.wait`, :meth:`InterruptManager.wait_async`)
  wake on the next accepted request after they started waiting, even if a
  :meth:`~InterruptManager.reset` came in between: reset never orphans them.
* Signal handlers never call into the manager directly (the interrupted main
  thread may hold its lock): see :mod:`kaizen_ray.core.handlers`.
* Handlers act while armed: on a bare manager from ``add_handler`` to
  ``remove_handler``; on an agent's manager (``scope_to_runs``) during each
  run, between ``arm_handlers`` and ``disarm_handlers``
  (:mod:`kaizen_ray.core._arming`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from kaizen_ray.core._arming import HandlerArming
from kaizen_ray.core._validate import finite_non_negative
from kaizen_ray.core.errors import ConfigError
from kaizen_ray.core._reasons import (
    InterruptedError,
    InterruptMode,
    InterruptReason,
    InterruptSource,
    InterruptTarget,
    coerce_mode,
    coerce_source_mode,
    pick_message,
)

logger = logging.getLogger("kaizen_ray")

__all__ = [
    "InterruptSource",
    "InterruptMode",
    "InterruptReason",
    "InterruptedError",
    "InterruptManager",
    "InterruptTarget",
    "coerce_mode",
    "coerce_source_mode",
    "pick_message",
]


Listener = Callable[[InterruptReason, InterruptMode], None]


class _Accepted(tuple):
    """An accepted request's facts ``(source, mode, message, time, [model])``, made into its :class:`InterruptReason` on first read.

    Why not the model at once: a request holds the GIL from its call to its
    return, and only then does a thread spinning on ``is_interrupted()`` see
    it. Validating a pydantic model was most of that time; a request without
    metadata (every request but a forwarded one) has nothing left to validate
    once its source and mode are looked up and its message is a str, so its
    model waits for the first reader. A request with metadata is modelled at
    once, so bad metadata is still refused at the call. A tuple, made in C:
    even a Python ``__init__`` is time the spinning thread waits for.
    """

    __slots__ = ()
    _build_lock = threading.Lock()
    source: InterruptSource = property(itemgetter(0))  # type: ignore[assignment]
    mode: InterruptMode = property(itemgetter(1))  # type: ignore[assignment]
    message: str = property(itemgetter(2))  # type: ignore[assignment]

    def reason(self) -> InterruptReason:
        cell = self[4]
        if cell[0] is None:
            with self._build_lock:  # one model per request, whichever thread reads it first
                if cell[0] is None:
                    at = datetime.fromtimestamp(self[3], UTC)
                    cell[0] = InterruptReason(source=self[0], mode=self[1], message=self[2], timestamp=at)
        return cell[0]

# Keyed by value: a StrEnum member hashes and compares as its value, so either finds it.
_SOURCES: dict[str, InterruptSource] = {s.value: s for s in InterruptSource}
_MODES: dict[str, InterruptMode] = {m.value: m for m in InterruptMode}


class InterruptManager(HandlerArming):
    """Thread-safe, signal-safe interrupt state of one agent, with children to forward to.

    Its handlers (``add_handler`` …) are armed as :mod:`kaizen_ray.core._arming`
    says: from ``add_handler`` on a bare manager, for each run on an agent's.

    >>> m = InterruptManager(name="parent")
    >>> child = InterruptManager(name="child")
    >>> m.add_child(child)
    >>> m.request_interrupt(InterruptSource.PROGRAMMATIC, reason="enough")
    True
    >>> child.reason.metadata["propagated_from"]
    'parent'
    >>> m.request_interrupt(InterruptSource.USER)  # the first reason is kept
    False
    >>> m.request_interrupt(InterruptSource.USER, InterruptMode.IMMEDIATE)  # mode escalates
    True
    >>> (m.reason.message, m.mode.value, len(m.history))
    ('enough', 'immediate', 2)
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reason: _Accepted | None = None
        self._mode: InterruptMode | None = None
        self._history: list[_Accepted] = []
        self._episode: list[_Accepted] = []  # accepted since the last reset
        self._undelivered: list[tuple[_Accepted, InterruptMode]] = []
        self._delivering = False
        # Bumped on every accepted request: a waiter wakes when it moves,
        # which is what keeps waiters alive across reset().
        self._generation = 0
        self._sync_waiters = 0  # threads in wait(): notified only when there are some
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._children: list[Any] = []
        self._init_arming()
        self._listeners: list[Listener] = []
        self._shutdown_callbacks: list[Callable[[], Any]] = []

    def __repr__(self) -> str:
        state = self._mode.value if self._mode else "running"
        return f"InterruptManager(name={self.name!r}, state={state}, children={len(self._children)})"

    # -- state ---------------------------------------------------------------

    def is_interrupted(self) -> bool:
        """True once a request was accepted (until :meth:`reset`). Lock-free read."""
        return self._reason is not None

    @property
    def mode(self) -> InterruptMode | None:
        """The current mode: that of the first request, or IMMEDIATE after escalation."""
        return self._mode

    @property
    def reason(self) -> InterruptReason | None:
        """The first accepted reason of this episode, or None."""
        accepted = self._reason
        return None if accepted is None else accepted.reason()

    @property
    def episode(self) -> list[InterruptReason]:
        """The requests accepted since the last :meth:`reset` (the first, then any escalation)."""
        with self._lock:
            return [a.reason() for a in self._episode]

    @property
    def generation(self) -> int:
        """How many requests this manager has accepted, ever (resets never lower it)."""
        return self._generation

    @property
    def history(self) -> list[InterruptReason]:
        """Every accepted request, oldest first (a copy). Survives :meth:`reset`."""
        with self._lock:
            return [a.reason() for a in self._history]

    # -- requests ------------------------------------------------------------

    def request_interrupt(
        self,
        source: InterruptSource | str,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        message: str | None = None,
    ) -> bool:
        """Ask this manager (and so its children) to stop. Returns True if accepted.

        Accepted: the first request, or an IMMEDIATE one while GRACEFUL.
        Refused: anything else while interrupted. Never blocks on children or
        listeners beyond their own call; never raises because a child failed.
        ``message=`` is accepted for ``reason=``, as kailash-kaizen's code writes it.
        """
        if message is not None or type(reason) is not str:
            reason = pick_message(reason, message)
        # The common cases: the enums themselves (checked by type: an Enum's __hash__ is a
        # Python call), or their values, by one dict look-up each.
        if type(source) is not InterruptSource or type(mode) is not InterruptMode:
            try:
                source, mode = _SOURCES[source], _MODES[mode]
            except (KeyError, TypeError):
                source, mode = coerce_source_mode(source, mode)  # raises the clear error
        model = InterruptReason(source=source, mode=mode, message=reason, metadata=_metadata(metadata)) if metadata else None
        new = _Accepted((source, mode, reason, time.time(), [model]))
        # One frame from here to the return, no property or helper calls: the whole
        # request holds the GIL, so its length is how late another thread sees
        # is_interrupted() turn True. (The condition's own lock, taken directly:
        # Condition.__enter__ is two Python calls more.)
        with self._lock:
            current = self._mode
            if current is not None and (current is InterruptMode.IMMEDIATE or mode is InterruptMode.GRACEFUL):
                return False  # only GRACEFUL -> IMMEDIATE escalates
            self._mode = mode  # before _reason: a lock-free reader never sees a reason without a mode
            if self._reason is None:
                self._reason = new
            self._history.append(new)
            self._episode.append(new)
            self._generation += 1
            # Every step below is skipped when nobody is there to hear it.
            if self._sync_waiters:
                self._cond.notify_all()
            waiters = ()
            if self._async_waiters:
                waiters = list(self._async_waiters)
                self._async_waiters.clear()
            deliver = False
            if self._listeners or self._children or self._delivering:
                self._undelivered.append((new, mode))
                # If another thread (or this one, further up the stack through a
                # loop of children) is delivering, it delivers this too, in order.
                deliver, self._delivering = not self._delivering, True
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s accepted %s %s interrupt: %s", self._label(), source.value, mode.value, reason)
        for loop, fut in waiters:
            _resolve_threadsafe(loop, fut)
        if deliver:
            self._deliver()
        return True

    def _deliver(self) -> None:
        # One deliverer at a time, never blocking anyone: listeners and children
        # hear the accepted requests in the order they were accepted.
        while True:
            with self._lock:
                if not self._undelivered:
                    self._delivering = False
                    return
                pending, mode = self._undelivered.pop(0)
                listeners = list(self._listeners)
                children = list(self._children)
            accepted = pending.reason()
            for listener in listeners:
                try:
                    listener(accepted, mode)
                except Exception:
                    logger.exception("%s: interrupt listener %r failed", self._label(), listener)
            self._forward(accepted, children)

    def _forward(self, accepted: InterruptReason, children: list[Any]) -> None:
        me = self.name or self._label()
        # forwarded_by: the whole chain, for a stop's provenance (results.forwarded_by); propagated_from: the last hop.
        metadata = {**accepted.metadata, "propagated_from": me, "forwarded_by": [*accepted.metadata.get("forwarded_by", []), me]}
        for child in children:
            # Handles forward without waiting for the remote reply (all at once).
            send = getattr(child, "request_interrupt_nowait", None) or child.request_interrupt
            try:
                send(accepted.source, accepted.mode, accepted.message, metadata)
            except Exception:
                logger.exception("%s: forwarding the interrupt to %r failed", self._label(), child)

    # -- waiting -------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Block until interrupted, or for ``timeout`` seconds.

        Returns True at once if already interrupted; True if a request is
        accepted while waiting (even if a reset() followed it); False on timeout.
        """
        if timeout is not None:
            timeout = finite_non_negative("timeout", timeout, unit="seconds")
        with self._cond:
            if self._reason is not None:
                return True
            start = self._generation
            self._sync_waiters += 1
            try:
                return self._cond.wait_for(lambda: self._generation != start, timeout)
            finally:
                self._sync_waiters -= 1

    async def wait_async(self) -> None:
        """Await the next interrupt (returns at once if interrupted). Cancel-safe."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if self._reason is not None:
                return
            self._async_waiters.add(entry)
        try:
            await fut
        finally:
            with self._lock:
                self._async_waiters.discard(entry)

    # -- wiring ---------------------------------------------------------------

    def add_child(self, child: Any) -> None:
        """Forward every accepted request to ``child`` (a manager or anything with
        ``request_interrupt``). Level-triggered: a child added to an interrupted
        manager is interrupted at once."""
        if not callable(getattr(child, "request_interrupt", None)):
            raise TypeError(f"{child!r} cannot be a child: it has no request_interrupt method")
        with self._lock:
            if child is self:
                raise ValueError(f"{self!r} cannot be its own child")
            if not any(c is child for c in self._children):
                self._children.append(child)
            replay = list(self._episode)
        for accepted in replay:
            self._forward(accepted.reason(), [child])

    def remove_child(self, child: Any) -> None:
        """Stop forwarding to ``child``."""
        with self._lock:
            self._children = [c for c in self._children if c is not child]

    @property
    def children(self) -> list[Any]:
        """The children, in the order they were added (a copy)."""
        with self._lock:
            return list(self._children)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(reason, mode)`` on every accepted request, outside the lock.

        Used by the agent loop to cancel the cycle in flight on IMMEDIATE. A
        listener must be quick and must not block: it may run in a signal
        dispatcher thread or a Ray control thread.
        """
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Undo :meth:`add_listener`.

        Listeners compare by ``==``, as hooks do: ``self.method`` removes what
        ``self.method`` added, though each lookup makes a new bound method.

        >>> class Ear:
        ...     def hear(self, reason, mode): print("heard", mode.value)
        >>> ear, m = Ear(), InterruptManager()
        >>> m.add_listener(ear.hear); m.remove_listener(ear.hear)
        >>> m.request_interrupt("programmatic", "graceful", "nobody hears this")
        True
        """
        with self._lock:
            self._listeners = [x for x in self._listeners if x != listener]

    # -- shutdown ----------------------------------------------------------------

    def on_shutdown(self, callback: Callable[[], Any]) -> None:
        """Register ``callback()`` to run by :meth:`run_shutdown_callbacks` (at the end of a run)."""
        if not callable(callback):
            raise TypeError(f"on_shutdown expects a callable, got {callback!r}")
        with self._lock:
            self._shutdown_callbacks.append(callback)

    def run_shutdown_callbacks(self) -> list[BaseException]:
        """Run the shutdown callbacks once each, newest first; return what they raised."""
        with self._lock:
            callbacks, self._shutdown_callbacks = self._shutdown_callbacks, []
        errors: list[BaseException] = []
        for callback in reversed(callbacks):
            try:
                callback()
            except Exception as exc:  # noqa: BLE001 - reported, never lost
                logger.exception("%s: shutdown callback %r failed", self._label(), callback)
                errors.append(exc)
        return errors

    def reset(self) -> None:
        """Clear the interrupt (not the history). Waiters keep waiting for the next one."""
        with self._lock:
            self._reason = None
            self._mode = None
            self._episode = []

    def _label(self) -> str:
        return f"InterruptManager[{self.name}]" if self.name else "InterruptManager"


def _resolve_threadsafe(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the waiter's loop is closed: nobody is left to wake
        pass


def _metadata(metadata: Any) -> dict[str, Any]:
    """A request's ``metadata`` as the dict it keeps, or ConfigError naming it (never "dictionary update sequence")."""
    if not isinstance(metadata, Mapping):
        raise ConfigError("metadata", metadata, "a dict (str keys, JSON-like values) or None")
    return dict(metadata)
