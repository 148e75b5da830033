"""Unit tests of the interrupt model (kaizen_ray.core.interrupts).

Each test checks a promise of the module docstring or of DESIGN.md ("Interrupts").
Waiting is done on events or on observable waiter registration, never on a
sleep, except to show that something did *not* happen within a bounded window.
How fast a waiter wakes is measured in benchmarks/wakeup_latency.py, never here.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import pickle
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pydantic import ValidationError

from kaizen_ray.core.interrupts import (
    InterruptedError,
    InterruptManager,
    InterruptMode,
    InterruptReason,
    InterruptSource,
)

G, I = InterruptMode.GRACEFUL, InterruptMode.IMMEDIATE
USER, SYSTEM, PROG = InterruptSource.USER, InterruptSource.SYSTEM, InterruptSource.PROGRAMMATIC


# -- helpers -------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a state we cannot be notified of (a waiter being registered)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        time.sleep(0.0002)


def thread_waiters(m: InterruptManager) -> int:
    return len(m._cond._waiters)  # threads blocked in wait()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in its own thread, so the test thread can request."""
    lp = asyncio.new_event_loop()
    t = threading.Thread(target=lp.run_forever, daemon=True)
    t.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    t.join(5)
    lp.close()


class Recorder:
    """A duck-typed child (like an actor handle): records what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request_interrupt(self, source, mode=G, reason="", metadata=None) -> bool:
        self.calls.append((InterruptSource(source), InterruptMode(mode), reason, dict(metadata or {})))
        return True


class Handler:
    def __init__(self) -> None:
        self.armed: list[InterruptManager] = []
        self.disarmed: list[InterruptManager] = []

    def arm(self, manager: InterruptManager) -> None:
        self.armed.append(manager)

    def disarm(self, manager: InterruptManager) -> None:
        self.disarmed.append(manager)


# -- enums and InterruptReason -------------------------------------------------------


def test_enum_values_are_lower_case_strings_and_modes_are_ordered() -> None:
    assert [s.value for s in InterruptSource] == ["user", "system", "programmatic"]
    assert [m.value for m in InterruptMode] == ["graceful", "immediate"]
    assert InterruptSource("user") is USER and InterruptMode("immediate") is I
    assert G.rank < I.rank


def test_reason_is_frozen_and_rejects_extra_keys() -> None:
    r = InterruptReason(source="user", message="Ctrl+C")
    with pytest.raises(ValidationError):
        r.message = "changed"  # type: ignore[misc]
    assert r.message == "Ctrl+C"
    with pytest.raises(ValidationError, match="bogus"):
        InterruptReason(source="user", bogus=1)  # type: ignore[call-arg]


def test_reason_timestamp_is_utc() -> None:
    before = datetime.now(UTC)
    r = InterruptReason(source=SYSTEM)
    assert r.timestamp.utcoffset() == timedelta(0) and before <= r.timestamp <= datetime.now(UTC)
    with pytest.raises(ValidationError, match="time zone"):
        InterruptReason(source=USER, timestamp=datetime(2024, 1, 1, 12, 0))
    plus2 = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    converted = InterruptReason(source=USER, timestamp=plus2).timestamp
    assert converted == plus2 and converted.utcoffset() == timedelta(0) and converted.hour == 10


def test_with_metadata_returns_a_merged_copy() -> None:
    r = InterruptReason(source=SYSTEM, message="slow", metadata={"handler": "timeout", "k": 1})
    r2 = r.with_metadata(k=2, checkpoint_id="ck-1")
    assert r2 is not r and r2.metadata == {"handler": "timeout", "k": 2, "checkpoint_id": "ck-1"}
    assert r.metadata == {"handler": "timeout", "k": 1}
    assert (r2.source, r2.mode, r2.message, r2.timestamp) == (r.source, r.mode, r.message, r.timestamp)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(
    source=st.sampled_from(InterruptSource),
    mode=st.sampled_from(InterruptMode),
    message=st.text(max_size=30),
    when=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
    offset_h=st.integers(-12, 12),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_reason_json_round_trip(source, mode, message, when, offset_h, metadata) -> None:
    r = InterruptReason(
        source=source, mode=mode, message=message, metadata=metadata,
        timestamp=when.replace(tzinfo=timezone(timedelta(hours=offset_h))),
    )
    dumped = r.model_dump(mode="json")
    assert dumped["source"] == source.value and dumped["mode"] == mode.value
    back = InterruptReason.model_validate(json.loads(json.dumps(dumped)))
    assert back == r and back.timestamp.utcoffset() == timedelta(0)


# -- InterruptedError ------------------------------------------------------------------


def test_interrupted_error_carries_reason_and_checkpoint() -> None:
    r = InterruptReason(source=USER, mode=I, message="stop now")
    err = InterruptedError(r, checkpoint_id="ck-7")
    assert isinstance(err, builtins.InterruptedError) and issubclass(InterruptedError, builtins.InterruptedError)
    assert err.reason is r and err.checkpoint_id == "ck-7"
    for part in ("user", "immediate", "stop now", "ck-7"):
        assert part in str(err)
    bare = InterruptedError(InterruptReason(source=SYSTEM))
    assert bare.checkpoint_id is None and "system" in str(bare) and "graceful" in str(bare)
    with pytest.raises(builtins.InterruptedError) as info:
        raise err
    assert info.value.reason is r


@pytest.mark.parametrize("dumps,loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)])
def test_interrupted_error_survives_pickling(dumps, loads) -> None:
    r = InterruptReason(source=PROG, message="enough", metadata={"checkpoint_id": "ck-2"})
    back = loads(dumps(InterruptedError(r, checkpoint_id="ck-2")))
    assert type(back) is InterruptedError
    assert back.reason == r and back.checkpoint_id == "ck-2"
    assert str(back) == str(InterruptedError(r, checkpoint_id="ck-2"))


# -- request_interrupt: acceptance rules and validation --------------------------------------


def test_first_reason_kept_and_mode_only_escalates() -> None:
    m = InterruptManager(name="m")
    assert not m.is_interrupted() and m.mode is None and m.reason is None and m.history == []
    assert m.request_interrupt(PROG, G, "first", {"k": 1}) is True
    assert m.request_interrupt(USER, G, "again") is False
    assert m.request_interrupt(USER, I, "harder") is True
    assert m.request_interrupt(SYSTEM, I, "harder still") is False
    assert m.request_interrupt(USER, G, "softer") is False
    assert m.is_interrupted() and m.mode is I
    assert (m.reason.message, m.reason.source, m.reason.mode, m.reason.metadata) == ("first", PROG, G, {"k": 1})
    assert [(h.message, h.mode) for h in m.history] == [("first", G), ("harder", I)]


def test_immediate_first_refuses_everything_until_reset() -> None:
    m = InterruptManager()
    assert m.request_interrupt(USER, I, "now") is True
    assert not m.request_interrupt(USER, I) and not m.request_interrupt(SYSTEM, G)
    m.reset()
    assert not m.is_interrupted() and m.mode is None and m.reason is None
    assert m.request_interrupt(SYSTEM, G, "second episode") is True
    assert m.reason.message == "second episode"
    assert [h.message for h in m.history] == ["now", "second episode"]  # history survives reset


def test_string_values_accepted_and_bad_values_named() -> None:
    m = InterruptManager()
    assert m.request_interrupt("user", "immediate", "x") is True
    assert m.reason.source is USER and m.mode is I
    with pytest.raises(ValueError, match=r"'bogus'.*expected.*user"):
        m.request_interrupt("bogus")
    with pytest.raises(ValueError, match=r"'hard'.*expected.*graceful"):
        m.request_interrupt("user", "hard")
    with pytest.raises(TypeError, match="42"):
        m.request_interrupt("user", "graceful", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"metadata must be a dict.*got 'abc'"):
        m.request_interrupt("user", "graceful", "x", metadata="abc")  # type: ignore[arg-type]
    assert len(m.history) == 1  # rejected calls changed nothing
    for bad in ("1", -1, float("nan"), True):
        with pytest.raises(ValueError, match=rf"timeout must be a finite number of seconds >= 0, got {bad!r}"):
            InterruptManager().wait(bad)  # type: ignore[arg-type]


class InterruptMachine(RuleBasedStateMachine):
    """The manager against a five-line model of the acceptance rules."""

    def __init__(self) -> None:
        super().__init__()
        self.m = InterruptManager(name="sm")
        self.heard: list[tuple[InterruptReason, InterruptMode]] = []
        self.m.add_listener(lambda reason, mode: self.heard.append((reason, mode)))
        self.history: list[tuple[InterruptSource, InterruptMode, str]] = []
        self.first: tuple[InterruptSource, InterruptMode, str] | None = None
        self.mode: InterruptMode | None = None
        self.seen_rank = -1  # highest mode rank observed in this episode

    @rule(
        source=st.sampled_from(list(InterruptSource) + [s.value for s in InterruptSource]),
        mode=st.sampled_from(list(InterruptMode) + [m.value for m in InterruptMode]),
        message=st.text(max_size=12),
    )
    def request_interrupt(self, source, mode, message) -> None:
        src, md = InterruptSource(source), InterruptMode(mode)
        expected = self.mode is None or (self.mode is G and md is I)
        assert self.m.request_interrupt(source, mode, message) is expected
        if expected:
            self.history.append((src, md, message))
            self.first = self.first or (src, md, message)
            self.mode = md

    @rule()
    def reset(self) -> None:
        self.m.reset()
        self.first, self.mode, self.seen_rank = None, None, -1

    @invariant()
    def first_reason_is_kept(self) -> None:
        r = self.m.reason
        assert (None if r is None else (r.source, r.mode, r.message)) == self.first
        assert self.m.is_interrupted() is (self.first is not None)
        assert self.m.wait(timeout=0) is (self.first is not None)

    @invariant()
    def mode_never_goes_down(self) -> None:
        assert self.m.mode == self.mode
        rank = -1 if self.m.mode is None else self.m.mode.rank
        assert rank >= self.seen_rank
        self.seen_rank = rank

    @invariant()
    def history_is_exactly_the_accepted_requests(self) -> None:
        got = [(h.source, h.mode, h.message) for h in self.m.history]
        assert got == self.history
        assert [(r.source, r.mode, r.message) for r, _ in self.heard] == self.history
        assert [mode for _, mode in self.heard] == [md for _, md, _ in self.history]


TestInterruptMachine = InterruptMachine.TestCase
TestInterruptMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_concurrent_requests_keep_the_invariants() -> None:
    """8 threads request at once, 200 times over: the model still holds."""
    n, rounds = 8, 200
    parent, child = InterruptManager(name="parent"), InterruptManager(name="child")
    parent.add_child(child)
    heard: list[InterruptReason] = []
    parent.add_listener(lambda r, _mode: heard.append(r))
    rng = random.Random(1234)
    plan: list[list[tuple[InterruptSource, InterruptMode]]] = []
    results: list[bool | None] = [None] * n
    start, done = threading.Barrier(n + 1), threading.Barrier(n + 1)

    def worker(i: int) -> None:
        for rnd in range(rounds):
            start.wait(10)
            src, md = plan[rnd][i]
            results[i] = parent.request_interrupt(src, md, f"{rnd}:{i}")
            done.wait(10)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for rnd in range(rounds):
        all_graceful = rnd % 10 == 0
        plan.append([(rng.choice(list(InterruptSource)), G if all_graceful else rng.choice([G, I])) for _ in range(n)])
    for t in threads:
        t.start()
    for rnd in range(rounds):
        before, heard_before = len(parent.history), len(heard)
        start.wait(10)
        done.wait(10)
        added = parent.history[before:]
        accepted = {f"{rnd}:{i}" for i in range(n) if results[i]}
        assert len(added) in (1, 2) and sum(bool(x) for x in results) == len(added)
        assert {h.message for h in added} == accepted
        assert parent.reason is added[0]  # exactly one first reason
        if len(added) == 2:
            assert (added[0].mode, added[1].mode) == (G, I)  # at most one escalation
        asked_immediate = any(md is I for _, md in plan[rnd])
        assert parent.mode is (I if asked_immediate else G)
        assert heard[heard_before:] == added
        # Forwarding may interleave, but the child ends where the parent is.
        assert child.is_interrupted() and child.mode is parent.mode
        parent.reset()
        child.reset()
    for t in threads:
        t.join(5)


# -- waiting -------------------------------------------------------------------------


def test_wait_times_out_false_and_is_true_at_once_when_interrupted() -> None:
    m = InterruptManager()
    t0 = time.monotonic()
    assert m.wait(timeout=0.05) is False
    assert time.monotonic() - t0 >= 0.05 - 1e-3  # the timeout is honoured, not cut short
    m.request_interrupt(USER)
    assert m.wait(timeout=0) is True and m.wait() is True
    # "At once": a wait with an hour's timeout returns within the (much shorter) bound of this join.
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(m.wait(timeout=3600)), daemon=True)
    t.start()
    t.join(10)
    assert got == [True], "wait() on an interrupted manager blocked instead of returning True"


def test_wait_async_returns_at_once_when_interrupted() -> None:
    m = InterruptManager()
    m.request_interrupt(USER)

    async def main() -> None:
        await asyncio.wait_for(m.wait_async(), 1)

    asyncio.run(main())
    assert m._async_waiters == set()


def test_one_request_wakes_every_waiter(loop) -> None:
    m = InterruptManager()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(m.wait(5))) for _ in range(6)]
    for t in threads:
        t.start()
    futs = [asyncio.run_coroutine_threadsafe(m.wait_async(), loop) for _ in range(3)]
    wait_until(lambda: thread_waiters(m) == 6 and len(m._async_waiters) == 3)
    assert m.request_interrupt(USER) is True
    for t in threads:
        t.join(5)
    assert results == [True] * 6
    assert [f.result(5) for f in futs] == [None] * 3


def test_reset_does_not_orphan_waiters(loop) -> None:
    m = InterruptManager()
    m.request_interrupt(USER, reason="old episode")
    m.reset()  # the waiters below start in a fresh episode after a reset
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(m.wait(5)))
    t.start()
    afut = asyncio.run_coroutine_threadsafe(m.wait_async(), loop)
    wait_until(lambda: thread_waiters(m) == 1 and len(m._async_waiters) == 1)
    m.reset()
    t.join(0.02)
    assert t.is_alive() and not afut.done(), "reset() must not wake the waiters"
    assert m.request_interrupt(SYSTEM, G, "new episode") is True
    t.join(5)
    assert got == [True]
    assert afut.result(5) is None
    assert m._async_waiters == set()


def test_a_waiter_wakes_on_a_request_even_if_reset_follows_at_once() -> None:
    m = InterruptManager()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(m.wait(5)))
    t.start()
    wait_until(lambda: thread_waiters(m) == 1)
    # Keep the GIL so reset() lands before the woken thread re-checks its
    # predicate: it must still report the request it was woken by.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        m.request_interrupt(SYSTEM, G, "brief")
        m.reset()
    finally:
        sys.setswitchinterval(interval)
    t.join(5)
    assert got == [True]

    async def main() -> None:
        task = asyncio.ensure_future(m.wait_async())
        await asyncio.sleep(0)  # registered and suspended
        m.request_interrupt(SYSTEM, G, "brief")  # same loop: the task cannot run in between
        m.reset()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert m._async_waiters == set()


def test_wait_async_cancellation_leaves_no_waiter() -> None:
    m = InterruptManager()

    async def main() -> None:
        task = asyncio.ensure_future(m.wait_async())
        await asyncio.sleep(0)  # let the task register and suspend
        assert len(m._async_waiters) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert m._async_waiters == set()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(m.wait_async(), 0.01)
        assert m._async_waiters == set()
        assert m.request_interrupt(USER) is True  # nothing stale to wake

    asyncio.run(main())


# -- forwarding to children --------------------------------------------------------


def test_forwarding_is_recursive_with_immediate_parent_name() -> None:
    a, b, c = InterruptManager(name="a"), InterruptManager(name="b"), InterruptManager(name="c")
    duck_b, duck_c = Recorder(), Recorder()
    a.add_child(b)
    b.add_child(c)
    b.add_child(duck_b)
    c.add_child(duck_c)
    assert a.request_interrupt(SYSTEM, G, "budget", {"handler": "budget"}) is True
    assert "propagated_from" not in a.reason.metadata
    # propagated_from: the last hop; forwarded_by: the whole chain (a stop's provenance).
    assert b.reason.metadata == {"handler": "budget", "propagated_from": "a", "forwarded_by": ["a"]}
    assert c.reason.metadata == {"handler": "budget", "propagated_from": "b", "forwarded_by": ["a", "b"]}
    assert duck_b.calls == [(SYSTEM, G, "budget", {"handler": "budget", "propagated_from": "b", "forwarded_by": ["a", "b"]})]
    assert duck_c.calls == [(SYSTEM, G, "budget", {"handler": "budget", "propagated_from": "c", "forwarded_by": ["a", "b", "c"]})]
    assert a.request_interrupt(USER, I, "now") is True  # the escalation goes down too
    for m, parent in ((b, "a"), (c, "b")):
        assert m.mode is I and m.reason.message == "budget"
        assert [(h.mode, h.message, h.metadata["propagated_from"]) for h in m.history] == [
            (G, "budget", parent), (I, "now", parent)]
    assert [call[1:3] for call in duck_c.calls] == [(G, "budget"), (I, "now")]


@pytest.mark.parametrize("names", [("a", "b"), ("a", "b", "c")])
def test_forwarding_through_a_loop_terminates(names: tuple[str, ...]) -> None:
    ms = [InterruptManager(name=n) for n in names]
    for parent, child in zip(ms, ms[1:] + ms[:1]):
        parent.add_child(child)
    assert ms[0].request_interrupt(USER, G, "stop") is True
    assert [len(m.history) for m in ms] == [1] * len(ms)
    assert all(m.reason.message == "stop" and m.mode is G for m in ms)
    assert ms[-1].request_interrupt(USER, I, "harder") is True  # escalate from elsewhere in the loop
    assert [len(m.history) for m in ms] == [2] * len(ms)
    assert all(m.mode is I and m.reason.message == "stop" for m in ms)


def test_a_failing_child_does_not_stop_the_others(caplog) -> None:
    class Broken:
        def request_interrupt(self, *args: Any) -> bool:
            raise RuntimeError("actor died")

    m, good, duck = InterruptManager(name="p"), InterruptManager(name="good"), Recorder()
    for child in (Broken(), good, duck):
        m.add_child(child)
    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        assert m.request_interrupt(PROG, G, "stop") is True
    assert good.is_interrupted() and len(duck.calls) == 1
    assert any(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records)


def test_nowait_is_preferred_for_forwarding() -> None:
    class Handle(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.nowait: list[tuple[Any, ...]] = []

        def request_interrupt_nowait(self, source, mode, reason, metadata) -> None:
            self.nowait.append((source, mode, reason, metadata))

    m, h = InterruptManager(name="sup"), Handle()
    m.add_child(h)
    m.request_interrupt(USER, I, "now")
    assert h.calls == [] and h.nowait == [(USER, I, "now", {"propagated_from": "sup", "forwarded_by": ["sup"]})]


def test_child_added_after_interrupt_is_interrupted_at_once() -> None:
    m = InterruptManager(name="sup")
    m.request_interrupt(USER, G, "stop")
    late = InterruptManager(name="late")
    m.add_child(late)
    assert late.reason.message == "stop" and late.reason.metadata["propagated_from"] == "sup"
    m.request_interrupt(USER, I, "now")
    later = Recorder()
    m.add_child(later)  # replays the whole episode, escalation included
    assert [c[1:3] for c in later.calls] == [(G, "stop"), (I, "now")]
    m.reset()
    fresh = Recorder()
    m.add_child(fresh)  # a reset manager is no longer interrupted: nothing to replay
    assert fresh.calls == []


def test_children_are_unique_and_remove_child_stops_forwarding() -> None:
    m, kept, dropped = InterruptManager(), Recorder(), Recorder()
    m.add_child(kept)
    m.add_child(kept)
    m.add_child(dropped)
    assert m.children == [kept, dropped]
    m.remove_child(dropped)
    m.remove_child(dropped)  # removing twice is harmless
    assert m.children == [kept]
    m.request_interrupt(USER)
    assert len(kept.calls) == 1 and dropped.calls == []


def test_add_child_rejects_self_and_non_targets() -> None:
    m = InterruptManager(name="m")
    with pytest.raises(ValueError, match="own child"):
        m.add_child(m)
    with pytest.raises(TypeError, match="request_interrupt"):
        m.add_child(object())

    class NotCallable:
        request_interrupt = "nope"

    with pytest.raises(TypeError, match="request_interrupt"):
        m.add_child(NotCallable())
    assert m.children == []


# -- listeners, shutdown, handlers -----------------------------------------------------


def test_listeners_hear_each_accepted_request(caplog) -> None:
    m, heard = InterruptManager(name="m"), []

    def bad(reason: InterruptReason, mode: InterruptMode) -> None:
        raise RuntimeError("listener bug")

    def good(reason: InterruptReason, mode: InterruptMode) -> None:
        heard.append((reason, mode))

    m.add_listener(bad)
    m.add_listener(good)
    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        assert m.request_interrupt(USER, G, "one") is True
        assert m.request_interrupt(USER, G, "refused") is False
        assert m.request_interrupt(SYSTEM, I, "two") is True
    assert heard == [(m.history[0], G), (m.history[1], I)]
    assert sum(1 for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError) == 2
    m.remove_listener(good)
    m.reset()
    m.request_interrupt(USER)
    assert len(heard) == 2


def test_shutdown_callbacks_run_once_newest_first_errors_returned(caplog) -> None:
    m, ran = InterruptManager(), []
    boom = ValueError("boom")

    def failing() -> None:
        ran.append("failing")
        raise boom

    m.on_shutdown(lambda: ran.append("first"))
    m.on_shutdown(failing)
    m.on_shutdown(lambda: ran.append("last"))
    with pytest.raises(TypeError, match="on_shutdown expects a callable, got 'not callable'"):
        m.on_shutdown("not callable")  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        errors = m.run_shutdown_callbacks()
    assert ran == ["last", "failing", "first"]
    assert errors == [boom]
    assert any(r.exc_info and r.exc_info[1] is boom for r in caplog.records)
    assert m.run_shutdown_callbacks() == [] and ran == ["last", "failing", "first"]


def test_handlers_on_a_bare_manager_arm_once_and_disarm_on_remove() -> None:
    m, h, other = InterruptManager(), Handler(), Handler()
    with pytest.raises(TypeError, match="arm"):
        m.add_handler(object())
    m.add_handler(h)
    m.add_handler(h)
    m.add_handler(other)
    assert h.armed == [m] and m.handlers == [h, other]
    m.remove_handler(h)
    m.remove_handler(h)
    assert h.disarmed == [m] and m.handlers == [other] and other.disarmed == []


def test_a_handler_whose_arm_fails_is_not_registered() -> None:
    class Flaky(Handler):
        fail = True

        def arm(self, manager: InterruptManager) -> None:
            if self.fail:
                raise RuntimeError("cannot arm")
            super().arm(manager)

    m, h = InterruptManager(), Flaky()
    with pytest.raises(RuntimeError, match="^cannot arm$"):
        m.add_handler(h)
    assert m.handlers == [] and h.armed == []
    h.fail = False
    m.add_handler(h)  # a retry must really arm
    assert h.armed == [m] and m.handlers == [h]
