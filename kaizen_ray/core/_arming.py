"""When the handlers of an :class:`~kaizen_ray.core.interrupts.InterruptManager` act.

A handler acts on a manager while it is *armed* there (``handler.arm(m)`` …
``handler.disarm(m)``). Two lifetimes:

* a bare manager (no agent) arms a handler from ``add_handler`` to
  ``remove_handler``;
* an agent's manager (:meth:`HandlerArming.scope_to_runs`, called by the
  agent) arms its handlers at each run's start and disarms them at its end, for
  every run: a timeout counts from each run's start, a signal handler is
  installed for each run over whatever handler is current then (asyncio's, in
  a second ``asyncio.run``) and the previous one is restored after it.

Its own module so that :mod:`kaizen_ray.core.interrupts` stays readable;
``InterruptManager`` inherits it.

>>> from kaizen_ray.core.interrupts import InterruptManager
>>> isinstance(InterruptManager(), HandlerArming)
True
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("kaizen_ray")

__all__ = ["HandlerArming"]


def _without(items: list[Any], item: Any) -> list[Any]:
    return [x for x in items if x is not item]


def _contains(items: list[Any], item: Any) -> bool:
    return any(x is item for x in items)


class HandlerArming:
    """The handler wiring of a manager: which handlers it has, which are armed, and when.

    Every operation holds one re-entrant lock for its whole length, including
    the handlers' ``arm`` / ``disarm`` calls, so a handler added while a run
    ends is either disarmed by that end or never armed.

    >>> from kaizen_ray.core.interrupts import InterruptManager
    >>> from kaizen_ray.core.handlers import TimeoutInterruptHandler
    >>> m = InterruptManager()
    >>> m.scope_to_runs()
    >>> h = TimeoutInterruptHandler(30)
    >>> m.add_handler(h); h.due_at(m) is None  # an agent's manager: not armed before a run
    True
    >>> m.arm_handlers(); m.running, h.due_at(m) is not None
    (True, True)
    >>> m.disarm_handlers(); m.running, h.due_at(m) is None
    (False, True)
    """

    def _init_arming(self) -> None:
        self._arming_lock = threading.RLock()
        self._handlers: list[Any] = []
        self._armed: list[Any] = []  # in the order they were armed
        self._scoped = False
        self._running = False

    @property
    def handlers(self) -> list[Any]:
        """The added handlers, in the order they were added (a copy), armed or not."""
        with self._arming_lock:
            return list(self._handlers)

    @property
    def running(self) -> bool:
        """True between :meth:`arm_handlers` and :meth:`disarm_handlers` (a run is on)."""
        return self._running

    def add_handler(self, handler: Any) -> None:
        """Add a handler (timeout, budget, signal). Armed at once on a bare manager or during a run;
        otherwise at the next run's start.

        >>> from kaizen_ray.core.interrupts import InterruptManager
        >>> InterruptManager().add_handler(object())
        Traceback (most recent call last):
        ...
        TypeError: <object ...> is not an interrupt handler: it has no arm(manager) method
        """
        for method in ("arm", "disarm"):
            if not callable(getattr(handler, method, None)):
                raise TypeError(f"{handler!r} is not an interrupt handler: it has no {method}(manager) method")
        with self._arming_lock:
            if _contains(self._handlers, handler):
                return
            self._handlers.append(handler)
            if self._scoped and not self._running:
                return
            try:
                handler.arm(self)
            except BaseException:
                # Never listed but not acting: a retry must be able to arm it.
                self._handlers = _without(self._handlers, handler)
                raise
            self._armed.append(handler)

    def remove_handler(self, handler: Any) -> None:
        """Remove a handler; disarmed at once if armed (a signal handler restores the previous ones).

        >>> from kaizen_ray.core.interrupts import InterruptManager
        >>> from kaizen_ray.core.handlers import TimeoutInterruptHandler
        >>> m, h = InterruptManager(), TimeoutInterruptHandler(30)
        >>> m.add_handler(h); m.remove_handler(h); m.handlers, h.due_at(m)
        ([], None)
        """
        with self._arming_lock:
            self._handlers = _without(self._handlers, handler)
            if not _contains(self._armed, handler):
                return
            self._armed = _without(self._armed, handler)
            handler.disarm(self)

    def scope_to_runs(self) -> None:
        """From now on, arm the handlers only during runs (the agent calls it on its manager).

        Handlers armed at this moment (added to the bare manager) are disarmed.
        Idempotent; :meth:`arm_handlers` implies it.

        >>> from kaizen_ray.core.interrupts import InterruptManager
        >>> from kaizen_ray.core.handlers import TimeoutInterruptHandler
        >>> m, h = InterruptManager(), TimeoutInterruptHandler(30)
        >>> m.add_handler(h); m.scope_to_runs(); h.due_at(m) is None
        True
        """
        with self._arming_lock:
            if self._scoped:
                return
            self._scoped = True
            armed, self._armed = self._armed, []
            self._disarm_all(armed)

    def arm_handlers(self) -> None:
        """A run starts: arm every handler from now. Call it in the run's event-loop thread.

        A timeout counts from now, a signal handler is installed over whatever
        is current (it must be the main thread), a budget interrupts at once if
        already spent. A handler added during the run is armed at once. A
        no-op while a run is on. If a handler cannot be armed, those armed by
        this call are disarmed again and the error is raised.

        >>> from kaizen_ray.core.interrupts import InterruptManager
        >>> from kaizen_ray.core.handlers import BudgetInterruptHandler
        >>> m, budget = InterruptManager(), BudgetInterruptHandler(1.0)
        >>> m.scope_to_runs(); m.add_handler(budget); _ = budget.charge(1.0)
        >>> m.is_interrupted(), (m.arm_handlers(), m.is_interrupted())[1]  # spent: the run stops at once
        (False, True)
        """
        with self._arming_lock:
            if self._running:
                return
            self.scope_to_runs()
            done: list[Any] = []
            try:
                for handler in self._handlers:
                    handler.arm(self)
                    done.append(handler)
            except BaseException:
                self._disarm_all(done)
                raise
            self._armed = done
            self._running = True

    def disarm_handlers(self) -> None:
        """The run ended, whatever its status: disarm every armed handler, newest first.

        Timeouts are cancelled, signal handlers restored to what was there
        before the run, budgets leave the scope (their spend stays). A handler
        whose ``disarm`` fails is logged and the others are still disarmed.

        >>> from kaizen_ray.core.interrupts import InterruptManager
        >>> m = InterruptManager()
        >>> m.arm_handlers(); m.disarm_handlers(); m.running
        False
        """
        with self._arming_lock:
            if not self._running:
                return
            self._running = False
            armed, self._armed = self._armed, []
            self._disarm_all(armed)

    def _disarm_all(self, handlers: list[Any]) -> None:
        # Newest first, so nested signal handlers are restored in LIFO order.
        pending: BaseException | None = None
        for handler in reversed(handlers):
            try:
                handler.disarm(self)
            except Exception:
                logger.exception("%r: disarming %r failed", self, handler)
            except BaseException as exc:  # e.g. a third Ctrl+C landing here: raised once all are disarmed
                pending = pending or exc
        if pending is not None:
            raise pending
