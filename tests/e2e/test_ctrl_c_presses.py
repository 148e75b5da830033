"""Ctrl+C presses counted one by one (DESIGN "Signals"), with real signals sent to child processes.

Python runs a Python-level signal handler once for any number of deliveries
that arrive while the main thread is away from the eval loop; the handler
counts the C-level deliveries instead. The children here keep their main
thread inside a C call that signals do not end (``pthread_mutex_lock`` on a
mutex another thread holds, through ctypes, which releases the GIL) for as
long as the test wants, and say when they are in it.

Each press is sent once the child has counted the previous one: the kernel
keeps at most one pending SIGINT, so two ``os.kill`` calls in a row may be
merged before the child runs at all (a person's presses are far apart); what
Python folded, and these tests guard, is presses arriving while the main
thread sits in C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kaizen_ray.core.handlers import SignalInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager
from tests._support.processes import Process

pytestmark = pytest.mark.e2e

WAIT = 20.0  # generous bound on a child's next line; never reached when all is well

IN_A_C_CALL = textwrap.dedent(
    """
    import ctypes, signal, sys, threading, time

    from kaizen_ray.core.handlers import SignalInterruptHandler
    from kaizen_ray.core.interrupts import InterruptManager

    def out(line):
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: a default glibc mutex, unlocked
    main_tid = threading.main_thread().native_id
    held = threading.Event()
    in_c = False

    def main_blocked_on_mutex():
        with open(f"/proc/self/task/{main_tid}/syscall") as f:
            fields = f.read().split()  # "running", or the syscall number and its arguments
        return len(fields) > 1 and int(fields[1], 16) == ctypes.addressof(mutex)

    def holder():
        libc.pthread_mutex_lock(mutex)
        held.set()
        while not main_blocked_on_mutex():  # the main thread is on its way into the C call
            time.sleep(0.001)
        out("IN_C")
        for line in sys.stdin:
            command = line.split()
            if command[0] == "release":
                break
            if command[0] == "wait-presses":
                while h.presses < int(command[1]):
                    time.sleep(0.001)
                out(f"COUNTED {h.presses} in_c={in_c}")
        libc.pthread_mutex_unlock(mutex)

    m = InterruptManager(name="child")
    h = SignalInterruptHandler()
    m.add_listener(lambda r, mode: out(f"STATE mode={mode.value} count={r.metadata['count']} in_c={in_c}"))
    m.add_handler(h)
    threading.Thread(target=holder, daemon=True).start()
    held.wait()
    try:
        in_c = True
        libc.pthread_mutex_lock(mutex)  # the kernel resumes this wait after each signal: no return to Python
        in_c = False
        history = [(r.source.value, r.mode.value, r.metadata["count"]) for r in m.history]
        out(f"C_DONE mode={m.mode.value} history={history}")
        m.remove_handler(h)
    except KeyboardInterrupt:
        in_c = False
        out(f"KEYBOARDINTERRUPT presses={h.presses} installed={h.installed} "
            f"int_is_default={signal.getsignal(signal.SIGINT) is signal.default_int_handler}")
        m.remove_handler(h)
        total = sum(i for i in range(10000))  # bytecode: where a second KeyboardInterrupt would land
    out("END")
    """
)

TWO_RUNS = textwrap.dedent(
    """
    import asyncio, signal, sys

    import kaizen_ray as kr

    def out(line):
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    class Waiter(kr.BaseAutonomousAgent):
        def initial_state(self, task):
            return {"n": 0}

        async def step(self, state, ctx):
            out(f"IN_STEP cycle={ctx.cycle}")
            await self.interrupt_manager.wait_async()
            return kr.StepResult({"n": state["n"] + 1})

    agent = Waiter(config=kr.AutonomousConfig(storage_path=sys.argv[1]))
    agent.interrupt_manager.add_handler(kr.SignalInterruptHandler())
    for run in (1, 2):
        try:
            result = asyncio.run(agent.run_autonomous(None))
        except KeyboardInterrupt:
            out(f"KEYBOARDINTERRUPT run={run}")
            sys.exit(3)
        r = result["interrupt_reason"]
        out(f"RESULT run={run} status={result['status']} source={r.source.value} mode={r.mode.value} "
            f"meta={r.metadata['signal']},{r.metadata['count']} "
            f"restored={signal.getsignal(signal.SIGINT) is signal.default_int_handler}")
    """
)


STEP_HOLDS_THE_MAIN_THREAD = textwrap.dedent(
    """
    import asyncio, signal, sys, time

    import kaizen_ray as kr

    def out(line):
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()

    hold = [True]

    class Holds(kr.BaseAutonomousAgent):
        def initial_state(self, task):
            return {"n": 0}

        async def step(self, state, ctx):
            if ctx.cycle == 3 and hold[0]:
                out("IN_STEP")
                while True:  # the main thread never goes back to the loop: no cancellation can land
                    time.sleep(0.01)
            return kr.StepResult({"n": state["n"] + 1}, done=ctx.cycle >= 4)

    agent = Holds(config=kr.AutonomousConfig(storage_path=sys.argv[1]), name="holds")
    agent.interrupt_manager.add_handler(kr.SignalInterruptHandler())
    agent.interrupt_manager.add_listener(lambda r, mode: out(f"STATE mode={mode.value} count={r.metadata['count']}"))
    try:
        asyncio.run(agent.run_autonomous(None))
        out("NO_KEYBOARDINTERRUPT")
    except KeyboardInterrupt:
        last = kr.list_checkpoints(sys.argv[1], agent="holds")[-1]
        out(f"KEYBOARDINTERRUPT phase={agent.phase.value} armed={agent.interrupt_manager.running} "
            f"int_is_default={signal.getsignal(signal.SIGINT) is signal.default_int_handler} "
            f"checkpoint={last.status.value},{last.cycle},{kr.load_checkpoint(last.id, storage_path=sys.argv[1]).state['n']}")
    hold[0] = False
    result = asyncio.run(agent.run_autonomous(None, resume_from_checkpoint="latest"))
    out(f"RESUMED status={result['status']} cycles={result['cycles']} n={result['state']['n']}")
    """
)


@pytest.fixture
def start_child(spawn, tmp_path: Path) -> Callable[..., Process]:
    """Start a Python child from source, with a stdin for commands; ended by process group after the test."""

    def start(source: str, *args: str) -> Process:
        script = tmp_path / "child.py"
        script.write_text(source)
        return spawn([sys.executable, script, *args], name="child", stdin=True)

    return start


def expect(child: Process, prefix: str) -> str:
    """The child's very next line, which must start with ``prefix`` (no line may come between)."""
    line = child.next_line(WAIT)
    assert line.startswith(prefix), f"expected {prefix!r}, got {line!r}\n{child.output()}"
    return line


def test_two_presses_while_the_main_thread_sits_in_c_are_graceful_then_immediate(start_child) -> None:
    child = start_child(IN_A_C_CALL)
    expect(child, "IN_C")
    child.send_signal(signal.SIGINT)
    assert expect(child, "STATE") == "STATE mode=graceful count=1 in_c=True"
    child.send_signal(signal.SIGINT)
    assert expect(child, "STATE") == "STATE mode=immediate count=2 in_c=True"
    child.send("release")
    assert expect(child, "C_DONE") == (
        "C_DONE mode=immediate history=[('user', 'graceful', 1), ('user', 'immediate', 2)]"
    )
    expect(child, "END")
    assert child.finish(WAIT) == 0


def test_a_third_press_counted_in_c_raises_keyboard_interrupt_once_with_the_default_handler_back(start_child) -> None:
    child = start_child(IN_A_C_CALL)
    expect(child, "IN_C")
    child.send_signal(signal.SIGINT)
    expect(child, "STATE mode=graceful count=1")
    child.send_signal(signal.SIGINT)
    expect(child, "STATE mode=immediate count=2")
    child.send_signal(signal.SIGINT)
    child.send("wait-presses 3")
    assert expect(child, "COUNTED") == "COUNTED 3 in_c=True"  # counted while the main thread was still in C
    child.send("release")
    assert expect(child, "KEYBOARDINTERRUPT") == "KEYBOARDINTERRUPT presses=3 installed=False int_is_default=True"
    expect(child, "END")  # no second KeyboardInterrupt from the nudge that woke the handler
    assert child.finish(WAIT) == 0


def test_a_signal_handler_added_once_stops_every_run_gracefully(start_child, tmp_path: Path) -> None:
    child = start_child(TWO_RUNS, str(tmp_path / "ckpt"))
    for run in (1, 2):  # the second asyncio.run() installs asyncio's own SIGINT handler first
        expect(child, "IN_STEP")
        child.send_signal(signal.SIGINT)
        assert expect(child, "RESULT") == (
            f"RESULT run={run} status=interrupted source=user mode=graceful meta=SIGINT,1 restored=True"
        )
    assert child.finish(WAIT) == 0


# -- in-process: the wakeup fd shared with asyncio (SIGUSR1/SIGUSR2 only: pytest keeps SIGINT) ----


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_asyncio_add_signal_handler_keeps_working_while_ours_is_installed(restore_signals: None) -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        got = asyncio.Event()
        seen: list[str] = []
        loop.add_signal_handler(signal.SIGUSR1, lambda: (seen.append("usr1"), got.set()))
        m, h = InterruptManager(), SignalInterruptHandler((signal.SIGUSR2,))
        m.add_handler(h)  # our wakeup fd goes over asyncio's; bytes that are not ours go on to it
        try:
            signal.raise_signal(signal.SIGUSR1)
            await asyncio.wait_for(got.wait(), WAIT)
            signal.raise_signal(signal.SIGUSR2)
            assert await asyncio.to_thread(m.wait, WAIT)
            assert m.reason.metadata == {"signal": "SIGUSR2", "count": 1}
        finally:
            m.remove_handler(h)
        got.clear()
        signal.raise_signal(signal.SIGUSR1)  # asyncio's wakeup fd is back
        await asyncio.wait_for(got.wait(), WAIT)
        loop.remove_signal_handler(signal.SIGUSR1)
        return seen

    assert asyncio.run(main()) == ["usr1", "usr1"]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_presses_are_still_counted_when_someone_replaced_the_wakeup_fd(restore_signals: None) -> None:
    m, h = InterruptManager(), SignalInterruptHandler((signal.SIGUSR1,))
    m.add_handler(h)
    r, w = os.pipe()
    os.set_blocking(w, False)
    ours = signal.set_wakeup_fd(w)  # another library takes the wakeup fd
    try:
        signal.raise_signal(signal.SIGUSR1)  # its byte goes to them; our Python-level handler counts it
        assert m.wait(WAIT) and m.reason.metadata == {"signal": "SIGUSR1", "count": 1}
        assert signal.set_wakeup_fd(w) == w  # theirs was left in place
        assert os.read(r, 16) == bytes([signal.SIGUSR1])
    finally:
        signal.set_wakeup_fd(ours)
        m.remove_handler(h)
        os.close(r)
        os.close(w)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_press_inside_signals_to_before_any_wait_interrupts_the_target_and_the_old_handler_comes_back(restore_signals: None) -> None:
    # What handle.run() relies on: the handler is there from the block's first
    # line, before the run is submitted, not only once the driver waits on it.
    from kaizen_ray.runtime._ctrl_c import signals_to

    fell_through: list[int] = []

    def before(signum: int, frame: object) -> None:  # a press the block missed lands here, not in pytest
        fell_through.append(signum)

    signal.signal(signal.SIGINT, before)
    target = InterruptManager(name="run-target")
    with signals_to(target):
        signal.raise_signal(signal.SIGINT)  # nothing submitted, nothing waited on yet
        assert target.wait(WAIT)
    assert fell_through == []
    assert (target.reason.source.value, target.mode.value) == ("user", "graceful")
    assert signal.getsignal(signal.SIGINT) is before


def test_a_third_press_while_a_step_holds_the_main_thread_checkpoints_cleans_up_and_raises(start_child, tmp_path: Path) -> None:
    """The KeyboardInterrupt lands inside the step: the run still ends as a stop does, and the agent runs again."""
    child = start_child(STEP_HOLDS_THE_MAIN_THREAD, str(tmp_path / "ckpts"))
    expect(child, "IN_STEP")
    child.send_signal(signal.SIGINT)
    expect(child, "STATE mode=graceful count=1")
    child.send_signal(signal.SIGINT)
    expect(child, "STATE mode=immediate count=2")
    child.send_signal(signal.SIGINT)
    assert expect(child, "KEYBOARDINTERRUPT") == (
        "KEYBOARDINTERRUPT phase=finished armed=False int_is_default=True checkpoint=interrupted,2,2"
    )
    assert expect(child, "RESUMED") == "RESUMED status=completed cycles=4 n=4"
    assert child.finish(WAIT) == 0
