"""One-shot deadlines: a pure queue, one thread that fires them, and the arithmetic of stops.

A deadline must fire while the code it stops is blocked (a step that never
awaits, a main thread stuck in a C call), so it cannot live on the event loop
it guards. :class:`DeadlineScheduler` runs every deadline of the process on one
daemon thread over a :class:`DeadlineQueue` (a heap): thousands of pending
timers cost one thread and O(log n) per operation, which is also what the Ray
timer actor runs.

The pure helpers :func:`escalation_deadlines` and :func:`restart_allowed` hold
the timing rules of escalation and of supervisor restart intensity, over plain
numbers from whatever clock the caller uses.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from kaizen_ray.core._validate import finite as _finite
from kaizen_ray.core._validate import finite_non_negative as _non_negative
from kaizen_ray.core.interrupts import InterruptMode, coerce_mode

logger = logging.getLogger("kaizen_ray.deadlines")

__all__ = [
    "DeadlineQueue",
    "DeadlineScheduler",
    "shared_scheduler",
    "escalation_deadlines",
    "restart_allowed",
]


class DeadlineQueue:
    """A heap of one-shot deadlines keyed by any hashable; no clock, no threads.

    Re-scheduling a key replaces its deadline. Deadlines that tie on ``due``
    come out in the order they were scheduled.

    >>> q = DeadlineQueue()
    >>> q.schedule("a", 5.0, "pa"); q.schedule("b", 2.0); q.schedule("a", 1.0, "pa2")
    >>> len(q), q.next_due()
    (2, 1.0)
    >>> q.pop_due(2.0)
    [('a', 1.0, 'pa2'), ('b', 2.0, None)]
    >>> q.cancel("b"), len(q)
    (False, 0)
    """

    # Superseded heap entries are dropped lazily; compact when they outnumber
    # the live ones so a key re-armed forever does not grow the heap for ever.
    _COMPACT_MIN = 1024

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._live: dict[Hashable, tuple[float, int, Any]] = {}  # key -> (due, seq, payload)
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def schedule(self, key: Hashable, due: float, payload: Any = None) -> None:
        """Fire ``key`` at ``due`` (replacing any earlier deadline of ``key``)."""
        due = _finite("due", due)
        seq = next(self._seq)
        self._live[key] = (due, seq, payload)
        heapq.heappush(self._heap, (due, seq, key))
        if len(self._heap) > self._COMPACT_MIN and len(self._heap) > 2 * len(self._live):
            self._compact()

    def cancel(self, key: Hashable) -> bool:
        """Forget ``key``'s deadline. True if it was pending."""
        return self._live.pop(key, None) is not None

    def due_of(self, key: Hashable) -> float | None:
        """When ``key`` is due, or None if it is not pending."""
        entry = self._live.get(key)
        return None if entry is None else entry[0]

    def next_due(self) -> float | None:
        """The earliest pending ``due``, or None when empty."""
        self._drop_stale_top()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Hashable, float, Any]]:
        """Remove and return every ``(key, due, payload)`` with ``due <= now``, earliest first."""
        out: list[tuple[Hashable, float, Any]] = []
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= now:
            due, seq, key = heapq.heappop(heap)
            entry = live.get(key)
            if entry is not None and entry[1] == seq:
                del live[key]
                out.append((key, due, entry[2]))
        return out

    def _drop_stale_top(self) -> None:
        heap, live = self._heap, self._live
        while heap:
            _, seq, key = heap[0]
            entry = live.get(key)
            if entry is not None and entry[1] == seq:
                return
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [(due, seq, key) for key, (due, seq, _) in self._live.items()]
        heapq.heapify(self._heap)


class DeadlineScheduler:
    """Calls ``callback()`` at a deadline, on one daemon thread shared by all deadlines.

    The thread starts at the first deadline. Callbacks run on it, outside the
    lock, in due order; they must be quick (hand real work elsewhere). One that
    raises is logged and the thread goes on. ``cancel`` returns True only if it
    prevented the call; a callback already taken off the queue still runs.

    >>> import threading
    >>> s = DeadlineScheduler()
    >>> fired = threading.Event()
    >>> due = s.call_later("hello", 0.01, fired.set)
    >>> fired.wait(5)
    True
    >>> s.close()
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, name: str = "kaizen-deadlines") -> None:
        self._clock = clock
        self._name = name
        self._queue = DeadlineQueue()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def clock(self) -> Callable[[], float]:
        """The clock that ``due`` values are read on."""
        return self._clock

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def __contains__(self, key: object) -> bool:
        with self._cond:
            return key in self._queue

    def due_of(self, key: Hashable) -> float | None:
        """When ``key`` is due (on :attr:`clock`), or None if it is not pending."""
        with self._cond:
            return self._queue.due_of(key)

    def call_at(self, key: Hashable, due: float, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` once :attr:`clock` reads ``due`` or later; replaces ``key``'s deadline."""
        if not callable(callback):
            raise TypeError(f"callback for deadline {key!r} must be callable, got {callback!r}")
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name}: scheduler is closed; cannot schedule {key!r}")
            before = self._queue.next_due()
            self._queue.schedule(key, due, callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif before is None or due < before:
                self._cond.notify()  # the thread sleeps until `before`: wake it earlier

    def call_later(self, key: Hashable, delay_s: float, callback: Callable[[], Any]) -> float:
        """Call ``callback()`` in ``delay_s`` seconds; returns the due time on :attr:`clock`."""
        due = self._clock() + _non_negative("delay_s", delay_s)
        self.call_at(key, due, callback)
        return due

    def cancel(self, key: Hashable) -> bool:
        """Drop ``key``'s deadline. True if that prevented its callback."""
        with self._cond:
            return self._queue.cancel(key)

    def close(self, timeout: float | None = 5.0) -> None:
        """Drop every pending deadline and stop the thread (waits up to ``timeout`` s for it)."""
        with self._cond:
            self._closed = True
            self._queue = DeadlineQueue()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        cond = self._cond
        with cond:
            while not self._closed:
                due = self._queue.pop_due(self._clock())
                if not due:
                    nxt = self._queue.next_due()
                    # The Condition waits on real time; with another clock this
                    # is a re-check period, which is all it needs to be.
                    cond.wait(None if nxt is None else max(0.0, nxt - self._clock()))
                    continue
                cond.release()
                try:
                    for key, _, callback in due:
                        try:
                            callback()
                        except Exception:
                            logger.exception("%s: callback of deadline %r failed", self._name, key)
                finally:
                    cond.acquire()


_shared: DeadlineScheduler | None = None
_shared_lock = threading.Lock()


def shared_scheduler() -> DeadlineScheduler:
    """The process-wide :class:`DeadlineScheduler` on ``time.monotonic`` (created on first use).

    >>> shared_scheduler() is shared_scheduler()
    True
    """
    global _shared
    sched = _shared
    if sched is None or sched.closed:
        with _shared_lock:
            if _shared is None or _shared.closed:
                _shared = DeadlineScheduler()
            sched = _shared
    return sched


def _forget_shared_after_fork() -> None:
    # A forked child has no scheduler thread (and maybe a held lock): start afresh.
    global _shared, _shared_lock
    _shared = None
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_shared_after_fork)


def escalation_deadlines(
    accepted_at: float,
    mode: InterruptMode | str,
    graceful_timeout_s: float,
    immediate_timeout_s: float,
) -> tuple[float | None, float]:
    """When a stop accepted at ``accepted_at`` escalates and when it is killed.

    Returns ``(escalate_at, kill_at)`` on the clock of ``accepted_at``:

    * GRACEFUL: ``escalate_at = accepted_at + graceful_timeout_s`` (the stop
      becomes IMMEDIATE then), and ``kill_at = escalate_at + immediate_timeout_s``
      (the IMMEDIATE stop gets its full allowance after escalating).
    * IMMEDIATE: no escalation (``None``), ``kill_at = accepted_at + immediate_timeout_s``.

    >>> escalation_deadlines(100.0, InterruptMode.GRACEFUL, 5.0, 2.0)
    (105.0, 107.0)
    >>> escalation_deadlines(100.0, "immediate", 5.0, 2.0)
    (None, 102.0)
    """
    accepted_at = _finite("accepted_at", accepted_at)
    graceful = _non_negative("graceful_timeout_s", graceful_timeout_s)
    immediate = _non_negative("immediate_timeout_s", immediate_timeout_s)
    mode = coerce_mode(mode)
    if mode is InterruptMode.IMMEDIATE:
        return None, accepted_at + immediate
    escalate_at = accepted_at + graceful
    return escalate_at, escalate_at + immediate


def restart_allowed(restart_times: Sequence[float], now: float, max_restarts: int, window_s: float) -> bool:
    """OTP restart intensity: may one more restart happen at ``now``?

    Allowed iff fewer than ``max_restarts`` of ``restart_times`` lie in the
    window ``(now - window_s, now]``. ``max_restarts=0`` never allows one.

    >>> restart_allowed([1.0, 2.0], now=3.0, max_restarts=3, window_s=5.0)
    True
    >>> restart_allowed([1.0, 2.0, 3.0], now=3.0, max_restarts=3, window_s=5.0)
    False
    >>> restart_allowed([1.0, 2.0, 3.0], now=6.0, max_restarts=3, window_s=5.0)  # 1.0 left the window
    True
    """
    now = _finite("now", now)
    window = _non_negative("window_s", window_s)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    start = now - window
    recent = sum(1 for t in restart_times if start < t <= now)
    return recent < max_restarts
