"""A supervisor's bounds on its own stop: ``SupervisorConfig``'s two shutdown timeouts, for the whole tree.

Each agent bounds its own stop (``AutonomousConfig``: a GRACEFUL stop escalates
after ``graceful_shutdown_timeout``, an IMMEDIATE one ends with the actor
killed after ``immediate_shutdown_timeout``). A supervisor's bounds sit above
its children's, as OTP's ``shutdown`` sits above a child's own clean-up:

* a GRACEFUL stop of the supervisor (requested, forwarded by its parent, or
  its own giving up) that has not finished ``graceful_shutdown_timeout``
  seconds after it was accepted becomes IMMEDIATE: SYSTEM, ``metadata["handler"]
  == "escalation"``, accepted by the supervisor's manager and so forwarded to
  every child, whatever the children's own timeouts;
* an IMMEDIATE stop of the supervisor that has not finished
  ``immediate_shutdown_timeout`` seconds after it was accepted kills the
  children still running (``kill_stragglers``): each reports ``"killed"``,
  from its last durable checkpoint, and is not restarted (the supervisor is
  stopping).

A bound of None is not armed. Both count only while a run goes
(:meth:`StopBounds.arm` is called by the supervisor for an interrupt
accepted during a run, or standing when one starts) and are dropped when the
run's children are done (:meth:`StopBounds.disarm`): a bound that fires after
that does nothing, so it cannot stop the next run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kaizen_ray.core.deadlines import DeadlineScheduler, shared_scheduler
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource

logger = logging.getLogger("kaizen_ray.supervisor")

__all__ = ["StopBounds"]


class StopBounds:
    """Escalate a supervisor's GRACEFUL stop, and end its IMMEDIATE one, at the configured bounds.

    ``kill_stragglers()`` is called on the scheduler's thread: it must be
    quick (hand the killing to the run's loop).

    >>> import threading; from types import SimpleNamespace
    >>> m = InterruptManager(name="sup")
    >>> bounds = StopBounds("sup", m, SimpleNamespace(graceful_shutdown_timeout=0.01, immediate_shutdown_timeout=60.0), lambda: None)
    >>> escalated = threading.Event(); m.add_listener(lambda reason, mode: mode is InterruptMode.IMMEDIATE and escalated.set())
    >>> bounds.begin(); m.request_interrupt("programmatic", "graceful", "enough"); bounds.arm(m.mode)
    True
    >>> escalated.wait(5), m.history[-1].metadata["handler"]
    (True, 'escalation')
    >>> bounds.disarm()
    """

    def __init__(
        self,
        name: str,
        manager: InterruptManager,
        config: Any,
        kill_stragglers: Callable[[], None],
        scheduler: DeadlineScheduler | None = None,
    ) -> None:
        self._name = name
        self._manager = manager
        self._graceful_s: float | None = config.graceful_shutdown_timeout
        self._immediate_s: float | None = config.immediate_shutdown_timeout
        self._kill_stragglers = kill_stragglers
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._run: object | None = None  # a token per run: a bound armed for one run never acts on the next
        self._keys = (("stop-escalation", id(self)), ("stop-kill", id(self)))

    def _sched(self) -> DeadlineScheduler:
        return self._scheduler if self._scheduler is not None else shared_scheduler()

    def begin(self) -> None:
        """A run begins: interrupts accepted from now on are bounded (see :meth:`arm`)."""
        with self._lock:
            self._run = object()

    def arm(self, mode: InterruptMode | None) -> None:
        """An interrupt in ``mode`` was accepted (or stands) during the run: start its bound. Outside a run, nothing."""
        if mode is None:
            return
        with self._lock:
            run = self._run
        if run is None:
            return
        escalation, kill = self._keys
        sched = self._sched()
        if mode is InterruptMode.IMMEDIATE:
            sched.cancel(escalation)
            if self._immediate_s is not None:
                sched.call_later(kill, self._immediate_s, lambda: self._kill_due(run))
        elif self._graceful_s is not None:
            sched.call_later(escalation, self._graceful_s, lambda: self._escalate(run))

    def disarm(self) -> None:
        """The run's children are done: drop both bounds; one that fires anyway does nothing."""
        with self._lock:
            self._run = None
        for key in self._keys:
            self._sched().cancel(key)

    def _current(self, run: object) -> bool:
        with self._lock:
            return self._run is run

    def _escalate(self, run: object) -> None:
        if not self._current(run):
            return
        self._manager.request_interrupt(
            InterruptSource.SYSTEM,
            InterruptMode.IMMEDIATE,
            f"graceful stop of supervisor {self._name} did not finish within {self._graceful_s}s",
            {"handler": "escalation", "graceful_shutdown_timeout": self._graceful_s},
        )

    def _kill_due(self, run: object) -> None:
        if not self._current(run):
            return
        logger.warning(
            "supervisor %s: its IMMEDIATE stop did not finish within %ss: killing the children still running",
            self._name, self._immediate_s,
        )
        self._kill_stragglers()
