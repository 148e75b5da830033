"""Handlers on an agent's manager are armed for each run, not from add_handler (DESIGN "Interrupts")."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import pytest

import kaizen_ray as kr
from kaizen_ray.core.deadlines import shared_scheduler
from kaizen_ray.core.handlers import BudgetInterruptHandler, SignalInterruptHandler, TimeoutInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager, InterruptSource

WAIT = 20.0  # generous bound on waiting for a thread; never reached when all is well

main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread"
)


def witness_after(delay_s: float) -> threading.Event:
    """An Event set by the shared scheduler ``delay_s`` from now: every deadline due earlier has fired by then."""
    event = threading.Event()
    shared_scheduler().call_later(("witness", object()), delay_s, event.set)
    return event


class Recorder:
    """A handler that records its arm/disarm calls."""

    def __init__(self, fail_arm: bool = False, fail_disarm: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_arm, self.fail_disarm = fail_arm, fail_disarm

    def arm(self, manager: InterruptManager) -> None:
        if self.fail_arm:
            raise RuntimeError("cannot arm")
        self.calls.append("arm")

    def disarm(self, manager: InterruptManager) -> None:
        self.calls.append("disarm")
        if self.fail_disarm:
            raise RuntimeError("cannot disarm")


def scoped() -> InterruptManager:
    m = InterruptManager(name="agent")
    m.scope_to_runs()
    return m


# -- the manager's interface -------------------------------------------------------------


def test_scope_to_runs_disarms_what_add_handler_armed_and_is_idempotent() -> None:
    m, h = InterruptManager(), Recorder()
    m.add_handler(h)
    assert h.calls == ["arm"]  # a bare manager arms at once
    m.scope_to_runs()
    m.scope_to_runs()
    assert h.calls == ["arm", "disarm"] and m.handlers == [h] and not m.running


def test_an_agents_manager_arms_at_each_run_start_and_disarms_at_its_end() -> None:
    m, h = scoped(), Recorder()
    m.add_handler(h)
    assert h.calls == []
    for _ in range(2):
        m.arm_handlers()
        m.arm_handlers()  # a no-op while the run is on
        assert m.running
        m.disarm_handlers()
        m.disarm_handlers()
        assert not m.running
    assert h.calls == ["arm", "disarm", "arm", "disarm"]


def test_a_handler_added_during_a_run_is_armed_at_once_and_disarmed_at_its_end() -> None:
    m, early, late, gone = scoped(), Recorder(), Recorder(), Recorder()
    m.add_handler(early)
    m.add_handler(gone)
    m.arm_handlers()
    m.add_handler(late)
    assert late.calls == ["arm"]
    m.remove_handler(gone)  # removed during the run: disarmed at once
    assert gone.calls == ["arm", "disarm"]
    m.disarm_handlers()
    assert early.calls == late.calls == ["arm", "disarm"] and gone.calls == ["arm", "disarm"]
    assert m.handlers == [early, late]


def test_a_handler_that_cannot_be_armed_fails_the_start_and_leaves_none_armed() -> None:
    m, ok, bad = scoped(), Recorder(), Recorder(fail_arm=True)
    m.add_handler(ok)
    m.add_handler(bad)
    with pytest.raises(RuntimeError, match="cannot arm"):
        m.arm_handlers()
    assert ok.calls == ["arm", "disarm"] and not m.running


def test_a_handler_that_fails_to_disarm_is_logged_and_the_others_are_still_disarmed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m, first, broken = scoped(), Recorder(), Recorder(fail_disarm=True)
    m.add_handler(first)
    m.add_handler(broken)
    m.arm_handlers()
    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        m.disarm_handlers()
    assert first.calls == broken.calls == ["arm", "disarm"] and not m.running
    assert any("disarming" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_timeout_counts_from_each_run_start_never_from_add_handler() -> None:
    m, h = scoped(), TimeoutInterruptHandler(0.2)
    m.add_handler(h)
    assert h.due_at(m) is None
    assert witness_after(0.3).wait(WAIT)  # past the timeout since add_handler
    assert not m.is_interrupted()
    started = shared_scheduler().clock()
    m.arm_handlers()
    due = h.due_at(m)
    assert due is not None and due >= started + 0.2
    assert m.wait(WAIT) and m.reason.metadata["handler"] == "timeout"
    m.disarm_handlers()
    assert h.due_at(m) is None


def test_a_budget_leaves_the_scope_between_runs_and_keeps_its_spend() -> None:
    m, budget = scoped(), BudgetInterruptHandler(1.0)
    m.add_handler(budget)
    budget.charge(1.0)  # spent, but no run is on: nobody to stop
    assert not m.is_interrupted()
    m.arm_handlers()  # a run on a spent budget stops at once
    assert m.is_interrupted() and m.reason.metadata["handler"] == "budget"
    m.disarm_handlers()
    m.reset()
    budget.charge(0.5)  # between runs: m is out of the scope
    assert not m.is_interrupted() and budget.spent == 1.5


# -- with the in-process agent --------------------------------------------------------------


class WaitsForInterrupt(kr.BaseAutonomousAgent):
    """Each step runs until the manager is interrupted, then commits; records what it saw."""

    seen: list[tuple[int, bool]]

    def initial_state(self, task):
        return {"n": 0}

    async def step(self, state, ctx):
        handler = next((h for h in self.interrupt_manager.handlers if isinstance(h, SignalInterruptHandler)), None)
        self.seen.append((ctx.cycle, handler is not None and handler.installed))
        await self.interrupt_manager.wait_async()
        return kr.StepResult({"n": state["n"] + 1})


def agent_with_scoped_manager(tmp_path) -> WaitsForInterrupt:
    # The agent scopes its manager in its constructor; done here too, so this
    # test holds with either side of that change.
    agent = WaitsForInterrupt(config=kr.AutonomousConfig(storage_path=tmp_path), interrupt_manager=scoped())
    agent.seen = []
    return agent


def test_a_timeout_added_long_before_the_run_still_lets_it_run(tmp_path) -> None:
    agent = agent_with_scoped_manager(tmp_path)
    agent.interrupt_manager.add_handler(TimeoutInterruptHandler(0.2))
    assert witness_after(0.3).wait(WAIT)  # the deadline would have passed, counted from add_handler
    result = asyncio.run(agent.run_autonomous(None))
    assert (result["status"], result["cycles"]) == ("interrupted", 1)  # not stopped at cycle 0
    assert result["interrupt_reason"].source is InterruptSource.SYSTEM
    assert result["interrupt_reason"].metadata["handler"] == "timeout"
    assert not agent.interrupt_manager.running


@main_thread_only
def test_a_signal_handler_is_installed_for_every_run_over_asyncios_and_restored_after(tmp_path) -> None:
    agent = agent_with_scoped_manager(tmp_path)
    handler = SignalInterruptHandler()
    agent.interrupt_manager.add_handler(handler)
    assert not handler.installed  # not before a run
    after_runs: list[object] = []

    async def one_run():
        timer = TimeoutInterruptHandler(0.05)  # ends the step without a signal reaching pytest
        agent.interrupt_manager.add_handler(timer)
        try:
            result = await agent.run_autonomous(None)
        finally:
            agent.interrupt_manager.remove_handler(timer)
        after_runs.append(signal.getsignal(signal.SIGINT))  # what was there before the run: asyncio's, or the default
        return result

    before = signal.getsignal(signal.SIGINT)
    for _ in range(2):
        assert asyncio.run(one_run())["status"] == "interrupted"
    assert [installed for _, installed in agent.seen] == [True, True]  # the second run too
    # asyncio.run() installs its own SIGINT handler when it finds the default one:
    # ours went over it and gave it back at the run's end.
    runners = [getattr(getattr(h, "func", h), "__self__", None) for h in after_runs]  # a partial of Runner._on_sigint
    assert all(isinstance(r, asyncio.Runner) for r in runners), after_runs
    assert signal.getsignal(signal.SIGINT) is before and not handler.installed
