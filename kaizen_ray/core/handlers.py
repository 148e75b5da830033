"""Declarative interrupt handlers and how they behave in-process.

A handler is configuration (validated at construction, read-only after) plus
process-local runtime state that is dropped when it is pickled, so the same
object can be shipped to a Ray actor. Its protocol is ``arm(manager)`` /
``disarm(manager)``; the manager decides when: a bare manager arms it from
``add_handler`` to ``remove_handler``, an agent's manager for each run
(:meth:`~kaizen_ray.core.interrupts.InterruptManager.arm_handlers`).

* :class:`TimeoutInterruptHandler` — a deadline on the shared
  :class:`~kaizen_ray.core.deadlines.DeadlineScheduler` thread, so it fires
  while the event loop or the main thread is blocked.
* :class:`BudgetInterruptHandler` — a :class:`~kaizen_ray.core.budget.BudgetLedger`
  shared by every manager it is armed on (one budget scope).
* :class:`SignalInterruptHandler` — Ctrl+C / SIGTERM, every press counted
  (one byte per delivery on the signal wakeup fd, read by a thread), so two
  presses are two even while the main thread sits in a C call. Defined in
  :mod:`kaizen_ray.core.signals`, re-exported here.

The base class :class:`InterruptHandler` lives in
:mod:`kaizen_ray.core._handler_base` (shared with ``signals`` without an
import cycle) and is re-exported here too.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from typing import Any

from kaizen_ray.core._handler_base import InterruptHandler, _notify, logger
from kaizen_ray.core._validate import finite_non_negative
from kaizen_ray.core.budget import BudgetDecision, BudgetLedger, Reservation
from kaizen_ray.core.deadlines import shared_scheduler
from kaizen_ray.core.interrupts import InterruptMode, InterruptSource, coerce_mode
from kaizen_ray.core.signals import SignalInterruptHandler

__all__ = [
    "InterruptHandler",
    "TimeoutInterruptHandler",
    "BudgetInterruptHandler",
    "SignalInterruptHandler",
]


class TimeoutInterruptHandler(InterruptHandler):
    """A SYSTEM interrupt ``timeout_seconds`` after the run starts.

    The deadline counts from ``arm`` (on an agent's manager: from each run's
    start, never from ``add_handler``); ``disarm`` cancels it. One handler may
    serve several managers, each with its own deadline.

    >>> from kaizen_ray.core.interrupts import InterruptManager
    >>> m = InterruptManager()
    >>> m.add_handler(TimeoutInterruptHandler(0.05))
    >>> m.wait(5), m.reason.metadata["handler"]
    (True, 'timeout')
    """

    def __init__(self, timeout_seconds: float, mode: InterruptMode | str = InterruptMode.GRACEFUL) -> None:
        self._timeout = finite_non_negative("timeout_seconds", timeout_seconds, unit="seconds")
        self._mode = coerce_mode(mode)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._token = uuid.uuid4().hex  # keys this handler's deadlines on the shared scheduler
        self._armed: dict[int, tuple[Any, int, float]] = {}  # id(manager) -> (manager, generation, started_at)
        self._generations = itertools.count()

    @property
    def timeout_seconds(self) -> float:
        """Seconds from the start of the run to the interrupt."""
        return self._timeout

    @property
    def mode(self) -> InterruptMode:
        """The mode of the interrupt it raises."""
        return self._mode

    def __repr__(self) -> str:
        return f"TimeoutInterruptHandler(timeout_seconds={self._timeout}, mode={self._mode.value!r})"

    def arm(self, manager: Any) -> None:
        """Start ``manager``'s deadline from now (armed again: it starts over)."""
        self._arm(manager)

    def disarm(self, manager: Any) -> None:
        """Cancel ``manager``'s deadline."""
        self._disarm(manager)

    def due_at(self, manager: Any) -> float | None:
        """When ``manager``'s deadline is due on the shared scheduler's clock, or None if not armed."""
        return shared_scheduler().due_of(self._key(manager))

    def _key(self, manager: Any) -> tuple[str, str, int]:
        return ("timeout", self._token, id(manager))

    def _arm(self, manager: Any) -> None:
        scheduler = shared_scheduler()
        with self._lock:
            generation = next(self._generations)
            started = scheduler.clock()
            self._armed[id(manager)] = (manager, generation, started)
            scheduler.call_at(self._key(manager), started + self._timeout, lambda: self._fire(manager, generation))

    def _disarm(self, manager: Any) -> None:
        with self._lock:
            self._armed.pop(id(manager), None)
            shared_scheduler().cancel(self._key(manager))

    def _fire(self, manager: Any, generation: int) -> None:
        # A deadline taken off the queue just before a re-arm or a cancel is
        # stale: only the current generation may interrupt.
        with self._lock:
            entry = self._armed.get(id(manager))
            if entry is None or entry[1] != generation:
                return
            del self._armed[id(manager)]
        elapsed = shared_scheduler().clock() - entry[2]
        meta = {"handler": "timeout", "timeout_seconds": self._timeout, "elapsed_seconds": elapsed}
        _notify([manager], InterruptSource.SYSTEM, self._mode, f"timeout after {self._timeout:g}s", meta)

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout_seconds": self._timeout, "mode": self._mode.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._timeout = float(state["timeout_seconds"])
        self._mode = InterruptMode(state["mode"])
        self._init_runtime()


class BudgetInterruptHandler(InterruptHandler):
    """A SYSTEM interrupt to every armed manager when the budget is exhausted.

    Exhausted: a charge brings spend to ``max_cost`` (within 1e-9), or a
    reservation is refused. Level-triggered: a manager armed on an exhausted
    budget (added to it, or starting a run on it) is interrupted at once. Warning listeners run
    once, with :meth:`snapshot`, when spend first reaches ``warning_threshold``.
    Pickling keeps the spend, not the armed managers nor the listeners.

    >>> from kaizen_ray.core.interrupts import InterruptManager
    >>> m = InterruptManager()
    >>> budget = BudgetInterruptHandler(1.0)
    >>> m.add_handler(budget)
    >>> budget.charge(0.6).exhausted, m.is_interrupted()
    (False, False)
    >>> budget.charge(0.4).newly_exhausted, m.reason.message
    (True, 'budget exhausted: spent 1 of 1')
    """

    def __init__(
        self,
        max_cost: float,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        warning_threshold: float | None = 0.8,
    ) -> None:
        self._ledger = BudgetLedger(max_cost, warning_threshold)
        self._mode = coerce_mode(mode)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._managers: list[Any] = []
        self._warning_listeners: list[Callable[[dict[str, Any]], Any]] = []

    @property
    def mode(self) -> InterruptMode:
        """The mode of the interrupt it raises."""
        return self._mode

    @property
    def max_cost(self) -> float:
        """The budget of the scope."""
        return self._ledger.max_cost

    @property
    def ledger(self) -> BudgetLedger:
        """The ledger of the scope (shared by every armed manager)."""
        return self._ledger

    @property
    def spent(self) -> float:
        """Money charged so far."""
        return self._ledger.spent

    @property
    def remaining(self) -> float:
        """Money neither spent nor reserved."""
        return self._ledger.remaining

    def __repr__(self) -> str:
        return f"BudgetInterruptHandler(max_cost={self.max_cost}, mode={self._mode.value!r}, spent={self.spent})"

    def arm(self, manager: Any) -> None:
        """Add ``manager`` to the scope; interrupted at once if the budget is already exhausted."""
        with self._lock:
            if not any(m is manager for m in self._managers):
                self._managers.append(manager)
        self._interrupt_if_exhausted(manager)

    def disarm(self, manager: Any) -> None:
        """Remove ``manager`` from the scope (the spend stays in the ledger)."""
        with self._lock:
            self._managers = [m for m in self._managers if m is not manager]

    def add_warning_listener(self, listener: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``listener(snapshot)`` once, when spend first reaches the warning threshold."""
        if not callable(listener):
            raise TypeError(f"warning listener must be callable, got {listener!r}")
        with self._lock:
            self._warning_listeners.append(listener)

    def charge(self, amount: float, manager: Any = None, *, reservation_id: str | None = None) -> BudgetDecision:
        """Record spend (out of ``reservation_id`` first); interrupts the scope if it crosses."""
        decision = self._ledger.charge(amount, reservation_id=reservation_id)
        if decision.warning:
            self._warn()
        if decision.newly_exhausted:
            msg = f"budget exhausted: spent {decision.spent:g} of {self.max_cost:g}"
            self._interrupt_scope(msg, manager)
        return decision

    def reserve(self, amount: float, manager: Any = None) -> Reservation | None:
        """Set ``amount`` aside; None if it does not fit, which interrupts the scope."""
        reservation = self._ledger.reserve(amount)
        if reservation is None:
            snap = self._ledger.snapshot()
            msg = (
                f"reservation of {amount:g} refused: spent {snap['spent']:g} + reserved "
                f"{snap['reserved']:g} + {amount:g} exceeds max_cost {snap['max_cost']:g}"
            )
            self._interrupt_scope(msg, manager)
        return reservation

    def release(self, reservation_id: str) -> float:
        """Give back what is left of a reservation; returns that amount."""
        return self._ledger.release(reservation_id)

    def snapshot(self) -> dict[str, Any]:
        """The ledger's :meth:`~kaizen_ray.core.budget.BudgetLedger.snapshot`."""
        return self._ledger.snapshot()

    def _interrupt_scope(self, msg: str, manager: Any = None) -> None:
        with self._lock:
            targets = list(self._managers)
        if manager is not None and not any(m is manager for m in targets):
            targets.append(manager)
        meta = {"handler": "budget", "max_cost": self.max_cost, "spent": self.spent}
        _notify(targets, InterruptSource.SYSTEM, self._mode, msg, meta)

    def _interrupt_if_exhausted(self, manager: Any) -> None:
        reason = self._ledger.exhausted_reason
        if reason is not None:
            meta = {"handler": "budget", "max_cost": self.max_cost, "spent": self.spent}
            _notify([manager], InterruptSource.SYSTEM, self._mode, f"budget exhausted: {reason}", meta)

    def _warn(self) -> None:
        with self._lock:
            listeners = list(self._warning_listeners)
        snap = self._ledger.snapshot()
        for listener in listeners:
            try:
                listener(snap)
            except Exception:
                logger.exception("budget warning listener %r failed", listener)

    def __getstate__(self) -> dict[str, Any]:
        return {"ledger": self._ledger, "mode": self._mode.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._ledger = state["ledger"]
        self._mode = InterruptMode(state["mode"])
        self._init_runtime()
