"""DeadlineQueue, DeadlineScheduler and the timing helpers of escalation and restarts."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaizen_ray.core.deadlines import (
    DeadlineQueue,
    DeadlineScheduler,
    escalation_deadlines,
    restart_allowed,
    shared_scheduler,
)
from kaizen_ray.core.interrupts import InterruptMode

WAIT = 10.0  # generous bound on waiting for a thread; never reached when all is well

# -- DeadlineQueue (pure) ------------------------------------------------------


def test_queue_pops_due_in_order_and_keeps_the_rest() -> None:
    q = DeadlineQueue()
    q.schedule("c", 3.0, "pc")
    q.schedule("a", 1.0, "pa")
    q.schedule("b", 2.0)
    assert len(q) == 3 and "a" in q and q.next_due() == 1.0
    assert q.pop_due(2.5) == [("a", 1.0, "pa"), ("b", 2.0, None)]
    assert len(q) == 1 and "a" not in q and q.next_due() == 3.0
    assert q.pop_due(2.9) == []
    assert q.pop_due(3.0) == [("c", 3.0, "pc")]  # due == now is due
    assert len(q) == 0 and q.next_due() is None


def test_rescheduling_replaces_and_cancel_reports() -> None:
    q = DeadlineQueue()
    q.schedule("k", 1.0, "first")
    q.schedule("k", 5.0, "second")
    assert len(q) == 1 and q.due_of("k") == 5.0
    assert q.pop_due(4.0) == []  # the superseded 1.0 entry is gone
    assert q.cancel("k") is True
    assert q.cancel("k") is False
    assert len(q) == 0 and q.next_due() is None and q.pop_due(10.0) == []


def test_ties_come_out_in_schedule_order_and_keys_need_not_compare() -> None:
    q = DeadlineQueue()
    keys = [object() for _ in range(5)]  # not orderable: the heap must never compare keys
    for k in keys:
        q.schedule(k, 1.0)
    assert [k for k, _, _ in q.pop_due(1.0)] == keys


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", None, True])
def test_queue_rejects_a_bad_due(bad: object) -> None:
    with pytest.raises(ValueError, match="due"):
        DeadlineQueue().schedule("k", bad)  # type: ignore[arg-type]


def test_re_arming_one_key_forever_does_not_grow_the_heap() -> None:
    q = DeadlineQueue()
    for i in range(50_000):
        q.schedule("same", float(i))
    assert len(q) == 1
    assert len(q._heap) <= 2 * DeadlineQueue._COMPACT_MIN  # lazy deletion is compacted


def test_100k_pending_deadlines_pop_in_due_order_minus_the_cancelled() -> None:
    # Its cost is measured in benchmarks/deadline_queue.py, against a bare heapq.
    q = DeadlineQueue()
    for i in range(100_000):
        q.schedule(("agent", i), float((i * 7919) % 100_000))
    for i in range(0, 100_000, 2):
        q.cancel(("agent", i))
    popped = q.pop_due(math.inf)
    assert len(popped) == 50_000 and len(q) == 0
    assert {key for key, _, _ in popped} == {("agent", i) for i in range(1, 100_000, 2)}
    assert [d for _, d, _ in popped] == sorted(d for _, d, _ in popped)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.integers(0, 9), st.floats(0, 100, allow_nan=False)),
        st.tuples(st.just("cancel"), st.integers(0, 9), st.just(0.0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, now=st.floats(0, 100, allow_nan=False))
def test_pop_due_returns_exactly_the_uncancelled_due_keys_in_order(ops: list, now: float) -> None:
    q = DeadlineQueue()
    model: dict[int, tuple[float, int]] = {}  # key -> (due, order scheduled)
    for n, (op, key, due) in enumerate(ops):
        if op == "schedule":
            q.schedule(key, due, payload=n)
            model[key] = (due, n)
        else:
            assert q.cancel(key) == (key in model)
            model.pop(key, None)
        assert len(q) == len(model)
    expected = sorted(((d, n, k) for k, (d, n) in model.items() if d <= now))
    assert q.pop_due(now) == [(k, d, n) for d, n, k in expected]
    left = {k: v for k, v in model.items() if v[0] > now}
    assert len(q) == len(left)
    assert q.next_due() == (min(d for d, _ in left.values()) if left else None)


# -- escalation and restart intensity (pure) -----------------------------------


def test_graceful_escalates_then_gets_the_full_immediate_allowance() -> None:
    assert escalation_deadlines(100.0, InterruptMode.GRACEFUL, 5.0, 2.0) == (105.0, 107.0)
    assert escalation_deadlines(100.0, "graceful", 0.0, 0.0) == (100.0, 100.0)


def test_immediate_never_escalates() -> None:
    assert escalation_deadlines(100.0, InterruptMode.IMMEDIATE, 5.0, 2.0) == (None, 102.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"graceful_timeout_s": -1.0}, "graceful_timeout_s"),
        ({"immediate_timeout_s": math.nan}, "immediate_timeout_s"),
        ({"accepted_at": math.inf}, "accepted_at"),
        ({"mode": "gentle"}, "mode"),
    ],
)
def test_escalation_rejects_bad_values_naming_them(kwargs: dict, field: str) -> None:
    args = {"accepted_at": 0.0, "mode": "graceful", "graceful_timeout_s": 1.0, "immediate_timeout_s": 1.0}
    with pytest.raises(ValueError, match=field):
        escalation_deadlines(**{**args, **kwargs})


def test_restart_intensity_counts_the_half_open_window() -> None:
    times = [10.0, 12.0, 14.0]
    assert restart_allowed(times, now=14.0, max_restarts=3, window_s=5.0) is False  # 3 in (9, 14]
    assert restart_allowed(times, now=14.0, max_restarts=4, window_s=5.0) is True
    assert restart_allowed(times, now=15.0, max_restarts=3, window_s=5.0) is True  # (10, 15]: 10 is out...
    assert restart_allowed(times, now=15.0, max_restarts=2, window_s=5.0) is False  # ...12 and 14 remain
    assert restart_allowed(times, now=17.0, max_restarts=2, window_s=5.0) is True  # (12, 17]: only 14
    assert restart_allowed([], now=0.0, max_restarts=1, window_s=5.0) is True
    assert restart_allowed([20.0], now=14.0, max_restarts=1, window_s=5.0) is True  # the future is not in it


def test_restart_intensity_zero_means_never() -> None:
    assert restart_allowed([], now=0.0, max_restarts=0, window_s=5.0) is False


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_restart_intensity_rejects_a_bad_max(bad: object) -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        restart_allowed([], now=0.0, max_restarts=bad, window_s=1.0)  # type: ignore[arg-type]


# -- DeadlineScheduler (a real thread) ------------------------------------------
#
# What is due is decided on the scheduler's clock. The tests that depend on
# *when* something fires use a fake clock that only the test moves, so no
# deadline can fall due while the test is still setting up (a loaded machine
# may pause a thread for longer than any real-time margin). How late the real
# thread fires is measured in benchmarks/deadline_lateness.py.


class FakeClock:
    """A clock only the test moves. Starts far from 0 so that ``NUDGE`` is always earlier than any deadline."""

    NUDGE = 0.0

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def advance(sched: DeadlineScheduler, clock: FakeClock, to: float) -> None:
    """Move the fake clock, then wake the scheduler thread to look at it.

    The thread sleeps on real time until its next deadline; a deadline earlier
    than every pending one wakes it (the only wake-up the scheduler offers),
    and a key already due is simply fired and forgotten.
    """
    clock.now = to
    sched.call_at(("nudge", object()), FakeClock.NUDGE, lambda: None)


def settled(sched: DeadlineScheduler) -> bool:
    """Bounded: every callback due on the clock's current reading has run.

    A marker due now fires after every deadline due earlier (and after those
    due now that were scheduled before it), on the same thread.
    """
    done = threading.Event()
    sched.call_at(("settled", object()), sched.clock(), done.set)
    return done.wait(WAIT)


@pytest.fixture
def sched():
    s = DeadlineScheduler(name="test-deadlines")
    yield s
    s.close()


@pytest.fixture
def fake() -> Iterator[tuple[DeadlineScheduler, FakeClock]]:
    clock = FakeClock()
    s = DeadlineScheduler(clock=clock, name="test-deadlines")
    yield s, clock
    s.close()


def test_callbacks_fire_in_due_order_on_one_named_thread(fake) -> None:
    sched, clock = fake
    fired: list[tuple[str, str]] = []
    done = threading.Event()

    def cb(label: str):
        return lambda: fired.append((label, threading.current_thread().name))

    sched.call_at("late", 1060.0, cb("late"))
    sched.call_at("early", 1020.0, cb("early"))
    sched.call_at("last", 1100.0, done.set)
    advance(sched, clock, 1100.0)  # all three are due at once: only their order can tell them apart
    assert done.wait(WAIT)
    assert fired == [("early", "test-deadlines"), ("late", "test-deadlines")]
    assert settled(sched) and len(sched) == 0  # settled: advance()'s nudge may still have been queued


def test_nothing_fires_before_the_clock_reaches_its_due_and_due_equal_to_now_is_due(fake) -> None:
    sched, clock = fake
    fired: list[str] = []
    sched.call_at("k", 1005.0, lambda: fired.append("k"))
    advance(sched, clock, 1004.999)
    assert settled(sched)
    assert fired == [] and sched.due_of("k") == 1005.0
    advance(sched, clock, 1005.0)
    assert settled(sched)
    assert fired == ["k"] and len(sched) == 0


def test_an_earlier_deadline_wakes_a_sleeping_scheduler(sched: DeadlineScheduler) -> None:
    far, near = threading.Event(), threading.Event()
    sched.call_later("far", 60.0, far.set)  # the thread now sleeps ~60 s
    sched.call_later("near", 0.01, near.set)
    assert near.wait(WAIT) and not far.is_set()


def test_cancel_prevents_firing(fake) -> None:
    sched, clock = fake
    cancelled, later = threading.Event(), threading.Event()
    sched.call_later("victim", 50.0, cancelled.set)
    assert sched.cancel("victim") is True
    assert sched.cancel("victim") is False
    sched.call_later("witness", 100.0, later.set)
    advance(sched, clock, 1100.0)
    assert later.wait(WAIT)
    # Callbacks run in due order on one thread: had "victim" fired, it would have before "witness".
    assert not cancelled.is_set()


def test_rescheduling_a_key_moves_its_deadline(fake) -> None:
    sched, clock = fake
    calls: list[str] = []
    witness = threading.Event()
    assert sched.call_later("k", 20.0, lambda: calls.append("old")) == 1020.0
    assert sched.call_later("k", 80.0, lambda: calls.append("new")) == 1080.0
    assert sched.due_of("k") == 1080.0 and len(sched) == 1
    sched.call_later("witness", 120.0, witness.set)
    advance(sched, clock, 1120.0)
    assert witness.wait(WAIT)
    assert calls == ["new"]


def test_a_raising_callback_is_logged_and_the_thread_goes_on(
    sched: DeadlineScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    after = threading.Event()

    def boom() -> None:
        raise RuntimeError("boom in a deadline")

    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        sched.call_later("boom", 0.0, boom)
        sched.call_later("after", 0.02, after.set)
        assert after.wait(WAIT)
    assert any("boom" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_callback_may_schedule_and_cancel(fake) -> None:
    # Callbacks run outside the scheduler's lock: one that calls back into it must not deadlock.
    sched, clock = fake
    victim, second = threading.Event(), threading.Event()
    cancelled: list[bool] = []

    def first() -> None:
        cancelled.append(sched.cancel("victim"))
        sched.call_at("second", 1000.0, second.set)  # already due: fires on the thread's next pass

    sched.call_at("victim", 1050.0, victim.set)
    sched.call_at("first", 1010.0, first)
    advance(sched, clock, 1010.0)  # only "first" is due
    assert second.wait(WAIT), "a deadline scheduled from a callback never fired"
    assert cancelled == [True] and "victim" not in sched
    advance(sched, clock, 1100.0)  # past the victim's due: had the cancel not worked, it would fire now
    assert settled(sched)
    assert not victim.is_set() and len(sched) == 0


def test_thread_starts_lazily_and_close_stops_it() -> None:
    s = DeadlineScheduler(name="lazy")
    assert s._thread is None
    fired = threading.Event()
    s.call_later("x", 0.0, fired.set)
    assert fired.wait(WAIT)
    thread = s._thread
    assert thread is not None and thread.daemon
    s.call_later("never", 60.0, fired.clear)
    s.close()
    assert not thread.is_alive() and len(s) == 0 and s.closed
    with pytest.raises(RuntimeError, match="closed"):
        s.call_later("y", 0.0, fired.set)


def test_call_later_rejects_a_negative_delay_and_a_non_callable(sched: DeadlineScheduler) -> None:
    with pytest.raises(ValueError, match="delay_s"):
        sched.call_later("k", -1.0, lambda: None)
    with pytest.raises(TypeError, match="callable"):
        sched.call_later("k", 1.0, "not callable")  # type: ignore[arg-type]


def test_shared_scheduler_is_one_instance_across_threads() -> None:
    seen: list[DeadlineScheduler] = []
    threads = [threading.Thread(target=lambda: seen.append(shared_scheduler())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(seen) == 8 and all(s is seen[0] for s in seen)
    assert shared_scheduler() is seen[0]


def test_thousands_of_deadlines_share_one_thread(sched: DeadlineScheduler) -> None:
    before = threading.active_count()
    count = 0
    lock = threading.Lock()
    done = threading.Event()

    def tick() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == 2000:
                done.set()

    for i in range(2000):
        sched.call_later(i, (i % 50) / 1000.0, tick)
    assert threading.active_count() <= before + 1
    assert done.wait(WAIT)
