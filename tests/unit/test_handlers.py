"""The declarative handlers in-process: timeout, budget, and real signals."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from kaizen_ray.core.deadlines import DeadlineScheduler, shared_scheduler
from kaizen_ray.core.handlers import (
    BudgetInterruptHandler,
    InterruptHandler,
    SignalInterruptHandler,
    TimeoutInterruptHandler,
)
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource

WAIT = 20.0  # generous bound on waiting for a thread or a child; never reached when all is well
REPO = Path(__file__).resolve().parents[2]


def witness_after(delay_s: float) -> threading.Event:
    """An Event set by the shared scheduler ``delay_s`` from now: every deadline due earlier has fired by then."""
    event = threading.Event()
    shared_scheduler().call_later(("witness", object()), delay_s, event.set)
    return event


# -- base and validation ---------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "5", None, True])
def test_timeout_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout_seconds") as info:
        TimeoutInterruptHandler(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_max_cost_is_validated(bad: float) -> None:
    with pytest.raises(ValueError, match="max_cost") as info:
        BudgetInterruptHandler(bad)
    assert repr(bad) in str(info.value)


def test_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        TimeoutInterruptHandler(1.0, mode="gentle")
    with pytest.raises(ValueError, match="mode"):
        BudgetInterruptHandler(1.0, mode="gentle")


@pytest.mark.parametrize("bad", [[], [signal.SIGKILL], [9999], ["SIGINT"], [True], [2.0]], ids=repr)
def test_signals_are_validated(bad: list) -> None:
    with pytest.raises(ValueError, match="signal"):
        SignalInterruptHandler(bad)


def test_config_is_read_only() -> None:
    handler = TimeoutInterruptHandler(1.0)
    with pytest.raises(AttributeError):
        handler.timeout_seconds = 2.0  # type: ignore[misc]
    with pytest.raises(AttributeError, match="read-only"):
        handler.extra = 1  # type: ignore[attr-defined]
    assert handler.timeout_seconds == 1.0


def test_every_handler_has_the_arm_disarm_protocol() -> None:
    for handler in (TimeoutInterruptHandler(1.0), BudgetInterruptHandler(1.0), SignalInterruptHandler()):
        assert isinstance(handler, InterruptHandler)
        for name in ("arm", "disarm"):
            assert callable(getattr(handler, name))


# -- TimeoutInterruptHandler -----------------------------------------------------


def test_timeout_fires_system_while_the_main_thread_is_blocked() -> None:
    m = InterruptManager(name="t")
    m.add_handler(TimeoutInterruptHandler(0.1))
    assert m.wait(WAIT)  # the main thread is blocked here; only the scheduler thread can wake it
    reason = m.reason
    assert reason is not None
    assert (reason.source, reason.mode, reason.message) == (
        InterruptSource.SYSTEM,
        InterruptMode.GRACEFUL,
        "timeout after 0.1s",
    )
    assert reason.metadata["handler"] == "timeout" and reason.metadata["timeout_seconds"] == 0.1
    assert reason.metadata["elapsed_seconds"] >= 0.1 - 1e-6  # never before its time


def test_timeout_fires_while_the_event_loop_is_blocked() -> None:
    m = InterruptManager()
    handler = TimeoutInterruptHandler(0.05, mode=InterruptMode.IMMEDIATE)

    async def step_that_never_awaits() -> bool:
        handler.arm(m)
        give_up = time.monotonic() + WAIT
        while not m.is_interrupted() and time.monotonic() < give_up:
            time.sleep(0.005)  # blocks the loop: nothing on it can run
        return m.is_interrupted()

    assert asyncio.run(step_that_never_awaits())
    assert m.mode is InterruptMode.IMMEDIATE and m.reason.metadata["handler"] == "timeout"


def test_arming_again_restarts_from_now() -> None:
    m = InterruptManager()
    handler = TimeoutInterruptHandler(30.0)
    clock = shared_scheduler().clock
    try:
        handler.arm(m)
        first = handler.due_at(m)
        assert first is not None
        while clock() <= first - 30.0:  # let the clock move on
            pass
        before = clock()
        handler.arm(m)
        second = handler.due_at(m)
        assert second is not None and second > first
        assert before + 30.0 <= second <= clock() + 30.0
    finally:
        handler.disarm(m)


def test_the_deadline_counts_from_the_last_arm(monkeypatch: pytest.MonkeyPatch) -> None:
    # A scheduler on a clock only the test moves: the arithmetic is exact, whatever the load.
    now = [1000.0]
    sched = DeadlineScheduler(clock=lambda: now[0], name="fake-timeouts")
    monkeypatch.setattr("kaizen_ray.core.handlers.shared_scheduler", lambda: sched)
    m = InterruptManager()
    handler = TimeoutInterruptHandler(0.2)
    try:
        handler.arm(m)
        assert handler.due_at(m) == pytest.approx(1000.2)
        now[0] = 1005.0
        handler.arm(m)  # 5 s later: the deadline starts over from here
        assert handler.due_at(m) == pytest.approx(1005.2)
        now[0] = 1005.25
        sched.call_at("nudge", 0.0, lambda: None)  # wakes the thread to read the moved clock
        assert m.wait(WAIT)
    finally:
        sched.close()
    assert m.reason.metadata["elapsed_seconds"] == pytest.approx(0.25)  # from the last arm, not 5.25 from the first
    assert len(m.history) == 1  # the first deadline was replaced, not added


def test_disarm_cancels_the_deadline() -> None:
    m = InterruptManager()
    handler = TimeoutInterruptHandler(0.3)
    handler.arm(m)
    handler.disarm(m)
    assert handler.due_at(m) is None
    assert witness_after(0.4).wait(WAIT)  # due after the timeout would have been
    assert not m.is_interrupted()


def test_remove_handler_cancels_the_deadline() -> None:
    m = InterruptManager()
    handler = TimeoutInterruptHandler(0.3)
    m.add_handler(handler)
    m.remove_handler(handler)
    assert witness_after(0.4).wait(WAIT)
    assert not m.is_interrupted()


def test_one_timeout_handler_serves_several_managers() -> None:
    handler = TimeoutInterruptHandler(0.05)
    a, b, c = InterruptManager(name="a"), InterruptManager(name="b"), InterruptManager(name="c")
    for m in (a, b, c):
        m.add_handler(handler)
    handler.disarm(b)  # only b's deadline is cancelled
    assert a.wait(WAIT) and c.wait(WAIT)
    assert witness_after(0.1).wait(WAIT)
    assert not b.is_interrupted()
    assert a.reason is not c.reason and a.reason.metadata["handler"] == "timeout"


def test_a_timeout_handler_pickles_as_config() -> None:
    m = InterruptManager()
    handler = TimeoutInterruptHandler(30.0, mode="immediate")
    handler.arm(m)
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(handler))
    finally:
        handler.disarm(m)
    assert (copy.timeout_seconds, copy.mode) == (30.0, InterruptMode.IMMEDIATE)
    assert copy.due_at(m) is None  # runtime state stays behind
    other = InterruptManager()
    fast = cloudpickle.loads(cloudpickle.dumps(TimeoutInterruptHandler(0.01)))
    other.add_handler(fast)
    assert other.wait(WAIT)


# -- BudgetInterruptHandler ------------------------------------------------------


def test_crossing_the_budget_interrupts_every_attached_manager() -> None:
    budget = BudgetInterruptHandler(1.0)
    a, b = InterruptManager(name="a"), InterruptManager(name="b")
    a.add_handler(budget)
    b.add_handler(budget)
    assert not budget.charge(0.7, manager=a).exhausted
    assert not a.is_interrupted() and not b.is_interrupted()
    decision = budget.charge(0.5, manager=b)
    assert decision.newly_exhausted
    for m in (a, b):
        reason = m.reason
        assert (reason.source, reason.mode) == (InterruptSource.SYSTEM, InterruptMode.GRACEFUL)
        assert reason.message == "budget exhausted: spent 1.2 of 1"
        assert reason.metadata == {"handler": "budget", "max_cost": 1.0, "spent": pytest.approx(1.2)}
    assert budget.spent == pytest.approx(1.2) and budget.remaining == 0.0


def test_a_refused_reservation_interrupts_the_scope() -> None:
    budget = BudgetInterruptHandler(1.0, mode=InterruptMode.IMMEDIATE)
    m = InterruptManager()
    m.add_handler(budget)
    granted = budget.reserve(0.8, manager=m)
    assert granted is not None and not m.is_interrupted()
    assert budget.reserve(0.3, manager=m) is None
    assert m.mode is InterruptMode.IMMEDIATE
    assert m.reason.message.startswith("reservation of 0.3 refused")
    assert m.reason.metadata["handler"] == "budget"
    assert budget.release(granted.id) == pytest.approx(0.8)


def test_charges_within_a_reservation_never_overshoot() -> None:
    budget = BudgetInterruptHandler(1.0)
    m = InterruptManager()
    m.add_handler(budget)
    r = budget.reserve(1.0, manager=m)
    assert r is not None
    budget.charge(0.4, manager=m, reservation_id=r.id)
    assert budget.snapshot()["reserved"] == pytest.approx(0.6) and budget.remaining == pytest.approx(0.0)
    budget.charge(0.6, manager=m, reservation_id=r.id)
    assert budget.spent == pytest.approx(1.0) and m.is_interrupted()


def test_the_warning_listeners_run_once_and_a_failing_one_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    budget = BudgetInterruptHandler(10.0, warning_threshold=0.5)
    seen: list[dict] = []

    def broken(snapshot: dict) -> None:
        raise RuntimeError("listener bug")

    budget.add_warning_listener(broken)
    budget.add_warning_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        for _ in range(4):
            budget.charge(2.0)
    assert len(seen) == 1 and seen[0]["spent"] == 6.0 and seen[0]["warning_fired"] is True
    assert any("warning listener" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="callable"):
        budget.add_warning_listener("nope")  # type: ignore[arg-type]


def test_an_exhausted_budget_is_level_triggered() -> None:
    budget = BudgetInterruptHandler(1.0)
    budget.charge(1.0)
    late = InterruptManager(name="late")
    late.add_handler(budget)  # added after the crossing: stopped at once
    assert late.is_interrupted() and late.reason.message == "budget exhausted: spent 1 of 1"
    late.reset()
    budget.arm(late)  # a new run on a spent budget stops at once too
    assert late.is_interrupted()


def test_detached_managers_are_not_interrupted() -> None:
    budget = BudgetInterruptHandler(1.0)
    kept, gone = InterruptManager(), InterruptManager()
    kept.add_handler(budget)
    gone.add_handler(budget)
    gone.remove_handler(budget)
    budget.charge(2.0)
    assert kept.is_interrupted() and not gone.is_interrupted()


def test_a_budget_handler_pickles_with_its_spend_not_its_managers() -> None:
    budget = BudgetInterruptHandler(2.0, mode="immediate")
    m = InterruptManager()
    m.add_handler(budget)
    budget.charge(1.5)
    copy = cloudpickle.loads(cloudpickle.dumps(budget))
    assert (copy.spent, copy.max_cost, copy.mode) == (1.5, 2.0, InterruptMode.IMMEDIATE)
    copy.charge(1.0)
    assert copy.spent == 2.5 and budget.spent == 1.5
    assert not m.is_interrupted()  # the copy has no managers


# -- SignalInterruptHandler in-process (no signal that could reach pytest's own handlers) ----


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_remove_restores_a_python_function_and_sig_ign(restore_signals: None) -> None:
    def custom(signum: int, frame: object) -> None:
        pass

    signal.signal(signal.SIGINT, custom)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    m = InterruptManager()
    handler = SignalInterruptHandler()
    m.add_handler(handler)
    assert handler.installed
    assert signal.getsignal(signal.SIGINT) not in (custom, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGINT)
    pipe = handler._inst.pipe
    assert pipe.alive
    m.remove_handler(handler)
    assert signal.getsignal(signal.SIGINT) is custom
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert not handler.installed and not pipe.alive  # the last one out stopped the pipe's threads
    m.remove_handler(handler)  # again: nothing to do
    assert signal.getsignal(signal.SIGINT) is custom


def test_arming_twice_installs_once_and_disarm_restores(restore_signals: None) -> None:
    before = signal.getsignal(signal.SIGINT)
    m = InterruptManager()
    handler = SignalInterruptHandler((signal.SIGINT,))
    handler.arm(m)
    installed = signal.getsignal(signal.SIGINT)
    handler.arm(m)  # installs nothing more
    assert installed is not before and signal.getsignal(signal.SIGINT) is installed
    handler.disarm(m)
    assert signal.getsignal(signal.SIGINT) is before


def test_arm_from_another_thread_warns_and_installs_nothing(restore_signals: None) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handler = SignalInterruptHandler()
    caught: list[BaseException | pytest.WarningsRecorder] = []

    def attach_elsewhere() -> None:
        try:
            with pytest.warns(RuntimeWarning, match="main thread") as record:
                handler.arm(InterruptManager())
            caught.append(record)
        except BaseException as exc:  # reported to the test thread
            caught.append(exc)

    t = threading.Thread(target=attach_elsewhere, name="not-main")
    t.start()
    t.join(WAIT)
    assert len(caught) == 1 and isinstance(caught[0], pytest.WarningsRecorder), caught
    assert "not-main" in str(caught[0][0].message)
    assert not handler.installed
    assert {s: signal.getsignal(s) for s in before} == before


def test_disarm_from_another_thread_hands_the_next_signal_back(restore_signals: None) -> None:
    recorded: list[int] = []

    def base(signum: int, frame: object) -> None:
        recorded.append(signum)

    signal.signal(signal.SIGUSR1, base)
    m = InterruptManager()
    handler = SignalInterruptHandler((signal.SIGUSR1,))
    m.add_handler(handler)
    pipe = handler._inst.pipe
    caught: list[BaseException | pytest.WarningsRecorder] = []

    def detach_elsewhere() -> None:
        try:
            with pytest.warns(RuntimeWarning, match="cannot be restored") as record:
                m.remove_handler(handler)
            caught.append(record)
        except BaseException as exc:  # reported to the test thread
            caught.append(exc)

    t = threading.Thread(target=detach_elsewhere)
    t.start()
    t.join(WAIT)
    assert len(caught) == 1 and isinstance(caught[0], pytest.WarningsRecorder), caught
    assert not handler.installed and signal.getsignal(signal.SIGUSR1) is not base  # could not restore there
    signal.raise_signal(signal.SIGUSR1)  # in the main thread: ours steps aside for base
    assert recorded == [signal.SIGUSR1] and signal.getsignal(signal.SIGUSR1) is base
    pipe.join_threads(WAIT)
    assert not pipe.alive and not m.is_interrupted()


def test_a_real_signal_in_process_reaches_the_manager(restore_signals: None) -> None:
    recorded: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: recorded.append(signum))
    m = InterruptManager()
    handler = SignalInterruptHandler((signal.SIGUSR1,))
    m.add_handler(handler)
    signal.raise_signal(signal.SIGUSR1)
    assert m.wait(WAIT)
    assert m.reason.source is InterruptSource.USER and m.mode is InterruptMode.GRACEFUL
    assert m.reason.metadata == {"signal": "SIGUSR1", "count": 1}
    assert handler.presses == 1 and recorded == []
    m.remove_handler(handler)
    signal.raise_signal(signal.SIGUSR1)
    assert recorded == [signal.SIGUSR1]  # the previous handler is back


def test_nested_installs_restore_in_lifo_order(restore_signals: None) -> None:
    recorded: list[int] = []

    def base(signum: int, frame: object) -> None:
        recorded.append(signum)

    signal.signal(signal.SIGUSR1, base)
    outer_m, inner_m = InterruptManager(name="outer"), InterruptManager(name="inner")
    outer, inner = SignalInterruptHandler((signal.SIGUSR1,)), SignalInterruptHandler((signal.SIGUSR1,))
    outer_m.add_handler(outer)
    inner_m.add_handler(inner)
    signal.raise_signal(signal.SIGUSR1)
    assert inner_m.wait(WAIT)
    assert (inner.presses, outer.presses, recorded) == (1, 0, [])
    inner_m.remove_handler(inner)
    assert signal.getsignal(signal.SIGUSR1) is outer._inst.py_handler
    signal.raise_signal(signal.SIGUSR1)
    assert outer_m.wait(WAIT) and outer.presses == 1 and recorded == []
    outer_m.remove_handler(outer)
    assert signal.getsignal(signal.SIGUSR1) is base


def test_out_of_order_removal_restores_the_handler_from_before_both(restore_signals: None, caplog: pytest.LogCaptureFixture) -> None:
    """Two overlapping runs, the first to start the first to end: what was there before both comes back."""
    recorded: list[int] = []

    def base(signum: int, frame: object) -> None:
        recorded.append(signum)

    signal.signal(signal.SIGUSR1, base)
    outer_m, inner_m = InterruptManager(), InterruptManager()
    outer, inner = SignalInterruptHandler((signal.SIGUSR1,)), SignalInterruptHandler((signal.SIGUSR1,))
    outer_m.add_handler(outer)
    inner_m.add_handler(inner)
    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        outer_m.remove_handler(outer)  # not LIFO: inner's handler stays on top, and will restore base itself
    assert not any("out of order" in r.getMessage() for r in caplog.records)
    assert signal.getsignal(signal.SIGUSR1) is inner._inst.py_handler
    inner_m.remove_handler(inner)
    assert signal.getsignal(signal.SIGUSR1) is base  # at once, not only after a signal came
    signal.raise_signal(signal.SIGUSR1)
    assert recorded == [signal.SIGUSR1] and not outer_m.is_interrupted() and not inner_m.is_interrupted()


def test_out_of_order_removal_behind_someone_elses_handler_still_hands_signals_back(
    restore_signals: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Ours is under a handler we do not know: we cannot restore, so we say so and step aside when called."""
    recorded: list[int] = []

    def base(signum: int, frame: object) -> None:
        recorded.append(signum)

    def theirs(signum: int, frame: object) -> None:  # someone else's, installed over ours: it calls the one before
        previous(signum, frame)

    signal.signal(signal.SIGUSR1, base)
    m = InterruptManager()
    handler = SignalInterruptHandler((signal.SIGUSR1,))
    m.add_handler(handler)
    previous = signal.signal(signal.SIGUSR1, theirs)
    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        m.remove_handler(handler)
    assert any("out of order" in r.getMessage() for r in caplog.records)
    signal.raise_signal(signal.SIGUSR1)  # theirs calls ours, which steps aside for base
    assert recorded == [signal.SIGUSR1] and not m.is_interrupted()


def test_a_signal_handler_pickles_as_config() -> None:
    handler = SignalInterruptHandler((signal.SIGTERM,))
    copy = cloudpickle.loads(cloudpickle.dumps(handler))
    assert copy.signals == (signal.SIGTERM,) and not copy.installed and copy.presses == 0


# -- SignalInterruptHandler with real signals in a child process -------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys

    from kaizen_ray.core.handlers import SignalInterruptHandler
    from kaizen_ray.core.interrupts import InterruptManager

    def out(line):
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    def previous_term(signum, frame):  # stands for Ray's SIGTERM handler
        out("PREVIOUS_TERM")
        sys.exit(7)

    signal.signal(signal.SIGTERM, previous_term)
    m = InterruptManager(name="child")
    h = SignalInterruptHandler()
    m.add_listener(lambda r, mode: out(
        f"STATE mode={mode.value} source={r.source.value} signal={r.metadata['signal']} count={r.metadata['count']}"
    ))
    m.add_handler(h)
    pipe = h._inst.pipe
    try:
        out("READY")  # inside the try: the test's presses may all land before the read starts
        for line in sys.stdin:  # the main thread blocks in a read
            if line.strip() == "detach":
                m.remove_handler(h)
                out(f"DETACHED term_is_previous={signal.getsignal(signal.SIGTERM) is previous_term} "
                    f"int_is_default={signal.getsignal(signal.SIGINT) is signal.default_int_handler}")
    except KeyboardInterrupt:
        out(f"KEYBOARDINTERRUPT int_is_default={signal.getsignal(signal.SIGINT) is signal.default_int_handler} "
            f"term_is_previous={signal.getsignal(signal.SIGTERM) is previous_term} "
            f"presses={h.presses} installed={h.installed}")
        m.remove_handler(h)
        pipe.join_threads(10)
        out(f"DETACHED int_is_default={signal.getsignal(signal.SIGINT) is signal.default_int_handler} "
            f"installed={h.installed} dispatcher_alive={pipe.alive}")
    """
)


class Child:
    """A child process running CHILD, whose stdout lines are awaited one by one."""

    def __init__(self, tmp_path: Path) -> None:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str) -> str:
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"child printed nothing within {WAIT}s; waiting for {prefix!r}")
        if line is None:
            self.proc.wait(WAIT)
            pytest.fail(f"child exited ({self.proc.returncode}) before {prefix!r}: {self.proc.stderr.read()}")
        assert line.startswith(prefix), line
        return line

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    c = Child(tmp_path)
    yield c
    c.close()


def test_ctrl_c_graceful_then_immediate_then_keyboard_interrupt(child: Child) -> None:
    child.expect("READY")
    child.kill(signal.SIGINT)
    assert child.expect("STATE") == "STATE mode=graceful source=user signal=SIGINT count=1"
    child.kill(signal.SIGINT)
    assert child.expect("STATE") == "STATE mode=immediate source=user signal=SIGINT count=2"
    child.kill(signal.SIGINT)
    assert child.expect("KEYBOARDINTERRUPT") == (
        "KEYBOARDINTERRUPT int_is_default=True term_is_previous=True presses=3 installed=False"
    )
    assert child.expect("DETACHED") == "DETACHED int_is_default=True installed=False dispatcher_alive=False"
    assert child.proc.wait(WAIT) == 0


def test_sigterm_is_graceful_and_detach_gives_it_back_to_the_previous_handler(child: Child) -> None:
    child.expect("READY")
    child.kill(signal.SIGTERM)
    assert child.expect("STATE") == "STATE mode=graceful source=user signal=SIGTERM count=1"
    child.send("detach")
    assert child.expect("DETACHED") == "DETACHED term_is_previous=True int_is_default=True"
    child.kill(signal.SIGTERM)
    child.expect("PREVIOUS_TERM")
    assert child.proc.wait(WAIT) == 7
