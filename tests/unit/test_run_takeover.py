"""The run's stop while a step is in flight: the cycles share one task, and an IMMEDIATE stop goes on without the step.

A step that never suspends cannot be cancelled (nothing else runs while it
does), so its result is judged when it returns: an IMMEDIATE stop accepted
meanwhile discards it. A step that suspends is cancelled where it awaits, and
the run checkpoints its last committed state without waiting for the step.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import kaizen_ray as kr
from kaizen_ray.core._handler_base import InterruptHandler
from tests._support.agents import WAIT_S


def cfg(tmp_path, **kw):
    return kr.AutonomousConfig(storage_path=tmp_path, **kw)


class _Counts(kr.BaseAutonomousAgent):
    def initial_state(self, task):
        return {"n": 0}


def test_an_immediate_stop_accepted_while_a_step_runs_without_suspending_discards_its_result(tmp_path):
    class StopsItselfFromAThread(_Counts):
        async def step(self, state, ctx):
            if ctx.cycle == 2:
                # Accepted in another thread while this step holds the loop: the step cannot be
                # cancelled, it returns a result, and that result must not be committed.
                t = threading.Thread(target=self.interrupt_manager.request_interrupt, args=("user", "immediate", "now"))
                t.start()
                t.join()
            return kr.StepResult({"n": state["n"] + 1})

    result = asyncio.run(StopsItselfFromAThread(config=cfg(tmp_path)).run_autonomous())
    assert (result["status"], result["mode"], result["cycles"], result["state"]) == ("interrupted", "immediate", 1, {"n": 1})
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).state == {"n": 1}


def test_a_step_that_swallows_its_cancellation_and_goes_on_costs_neither_the_checkpoint_nor_the_deadline(tmp_path):
    entered, swallowed, finished = threading.Event(), threading.Event(), threading.Event()
    released = None

    class GoesOn(_Counts):
        async def step(self, state, ctx):
            nonlocal released
            if ctx.cycle == 2:
                released = asyncio.Event()
                entered.set()
                try:
                    await asyncio.sleep(WAIT_S)
                except asyncio.CancelledError:
                    swallowed.set()
                    await released.wait()  # and on it goes, past the run's end
                    finished.set()
                    return kr.StepResult({"n": -1})
            return kr.StepResult({"n": state["n"] + 1})

    agent = GoesOn(config=cfg(tmp_path, immediate_shutdown_timeout=0.2))

    async def main():
        run = asyncio.ensure_future(agent.run_autonomous())
        assert await asyncio.to_thread(entered.wait, WAIT_S)
        agent.interrupt_manager.request_interrupt("user", "immediate", "now")
        result = await run
        still_running = not finished.is_set()
        released.set()  # let the abandoned step end before the loop closes
        await asyncio.sleep(0)
        return result, still_running

    started = time.monotonic()
    result, still_running = asyncio.run(main())
    assert swallowed.is_set() and still_running, "the run waited for the step instead of abandoning it"
    assert time.monotonic() - started < WAIT_S
    assert (result["status"], result["cycles"], result["state"]) == ("interrupted", 1, {"n": 1})
    ckpt = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (ckpt.status, ckpt.cycle, ckpt.state) == ("interrupted", 1, {"n": 1})


def test_cancelling_the_run_at_a_boundary_cuts_the_hook_short_checkpoints_and_propagates(tmp_path):
    in_hook, hook_cancelled = threading.Event(), threading.Event()

    class Counts(_Counts):
        async def step(self, state, ctx):
            return kr.StepResult({"n": state["n"] + 1})

    agent = Counts(config=cfg(tmp_path))

    async def slow_post_cycle(ctx: kr.HookContext) -> None:
        if ctx.cycle == 2:
            in_hook.set()
            try:
                await asyncio.sleep(WAIT_S)
            except asyncio.CancelledError:
                hook_cancelled.set()
                raise

    agent.hooks.register(kr.HookEvent.POST_CYCLE, slow_post_cycle, timeout_s=WAIT_S * 2)

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous())
        assert await asyncio.to_thread(in_hook.wait, WAIT_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert hook_cancelled.is_set()
    [ckpt] = [c for c in kr.list_checkpoints(tmp_path) if c.status == "interrupted"]
    assert (ckpt.cycle, ckpt.interrupt_reason.mode) == (2, kr.InterruptMode.IMMEDIATE)


def test_a_cancelled_error_a_step_raises_on_its_own_fails_the_run(tmp_path):
    class AwaitsACancelledFuture(_Counts):
        async def step(self, state, ctx):
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # raises CancelledError, though nobody cancelled the run
            return kr.StepResult(state)

    result = asyncio.run(AwaitsACancelledFuture(config=cfg(tmp_path)).run_autonomous())
    assert result["status"] == "failed" and isinstance(result["error"], asyncio.CancelledError)
    assert result["interrupt_reason"] is None
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).status == "failed"


def test_a_budget_that_cannot_settle_the_cycle_an_immediate_stop_cut_short_fails_the_run(tmp_path):
    from kaizen_ray.core.context import FileCheckpointSink

    entered = threading.Event()

    class Unsettled:
        settles_every_cycle = False

        def charge(self, amount):
            pass

        async def reserve(self, amount):
            return True

        async def settle(self):
            raise RuntimeError("the budget is unreachable")

        def snapshot(self):
            return None

        def take_warning(self):
            return None

    class ChargesThenAwaits(_Counts):
        async def step(self, state, ctx):
            ctx.charge(0.5)
            entered.set()
            await asyncio.sleep(WAIT_S)
            return kr.StepResult({"n": state["n"] + 1})

    agent = ChargesThenAwaits(config=cfg(tmp_path))

    async def main():
        run = agent.new_run(sink=FileCheckpointSink(agent.storage), budget=Unsettled())
        def stop_when_entered() -> None:
            assert entered.wait(WAIT_S), "the step never started"
            agent.interrupt_manager.request_interrupt("user", "immediate")

        stopper = asyncio.ensure_future(asyncio.to_thread(stop_when_entered))
        result = await run.execute()
        await stopper
        return result

    result = asyncio.run(main())
    assert result["status"] == "failed" and isinstance(result["error"], RuntimeError)
    assert result["cost"] == 0.5  # the cut-short cycle's spend is counted all the same
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).state == {"n": 0}


@pytest.mark.parametrize("unwinds", ["cancelled", "raising"])
def test_the_cycle_an_immediate_stop_cut_short_is_counted_once_however_its_step_unwinds(tmp_path, unwinds):
    class ChargesThenAwaits(_Counts):
        async def step(self, state, ctx):
            ctx.charge(1.0)
            self.entered.set()
            try:
                await asyncio.sleep(WAIT_S)
            except asyncio.CancelledError:
                if unwinds == "raising":  # its clean-up failed: the takeover has settled the cycle already
                    raise RuntimeError("clean-up failed") from None
                raise
            return kr.StepResult(state)

    agent = ChargesThenAwaits(config=cfg(tmp_path))
    budget = kr.BudgetInterruptHandler(max_cost=10.0)
    agent.interrupt_manager.add_handler(budget)

    async def main():
        agent.entered = asyncio.Event()
        run = asyncio.ensure_future(agent.run_autonomous())
        await agent.entered.wait()
        agent.interrupt_manager.request_interrupt("programmatic", "immediate", "now")
        return await run  # the run returns once the step has unwound (it waits up to immediate_shutdown_timeout)

    result = asyncio.run(main())
    assert (result["status"], result["cost"]) == ("interrupted", 1.0)
    assert (agent.cost, budget.spent) == (1.0, 1.0)


class ExitsAtCycle3(kr.BaseAutonomousAgent):
    """Counts; at cycle 3 the step raises what ``task`` names (SystemExit, KeyboardInterrupt), once per agent."""

    def initial_state(self, task):
        return {"n": 0, "raise": task}

    async def step(self, state, ctx):
        if ctx.cycle == 3 and state["raise"] is not None:
            raise {"exit": SystemExit(3), "keyboard": KeyboardInterrupt()}[state["raise"]]
        return kr.StepResult({**state, "n": state["n"] + 1}, done=ctx.cycle >= 4)


@pytest.mark.parametrize("what", ["exit", "keyboard"])
def test_a_system_exit_or_keyboard_interrupt_from_a_step_ends_the_run_as_a_stop_then_goes_on(tmp_path, what):
    """Checkpointed (the last committed state, as the run failed), everything undone, then raised: the agent runs again."""
    agent = ExitsAtCycle3(config=kr.AutonomousConfig(storage_path=tmp_path), name="exits")
    timeout = kr.TimeoutInterruptHandler(600.0)
    agent.interrupt_manager.add_handler(timeout)
    with pytest.raises((SystemExit, KeyboardInterrupt)) as raised:
        asyncio.run(agent.run_autonomous(what))
    assert type(raised.value) is {"exit": SystemExit, "keyboard": KeyboardInterrupt}[what]
    assert agent.phase is kr.AgentPhase.FINISHED and not agent.interrupt_manager.running
    assert timeout.due_at(agent.interrupt_manager) is None  # disarmed with the run
    [last] = [c for c in kr.list_checkpoints(tmp_path, agent="exits") if c.status == "failed"]
    assert last.cycle == 2 and kr.load_checkpoint(last.id, storage_path=tmp_path).state["n"] == 2
    again = asyncio.run(agent.run_autonomous(None))
    assert again["status"] == "completed" and again["cycles"] == 4


class _ArmsOnceBadly(InterruptHandler):
    """A handler whose first arming fails (a signal handler armed off the main thread under ``-W error``, say)."""

    def __init__(self) -> None:
        object.__setattr__(self, "tries", [])

    def arm(self, manager):
        self.tries.append(1)
        if len(self.tries) == 1:
            raise RuntimeError("cannot arm here")


def test_a_handler_that_cannot_be_armed_fails_the_run_start_and_leaves_the_agent_ready_for_the_next(tmp_path):
    agent = ExitsAtCycle3(config=kr.AutonomousConfig(storage_path=tmp_path), name="arms")
    agent.interrupt_manager.add_handler(_ArmsOnceBadly())
    with pytest.raises(RuntimeError, match="cannot arm here"):
        asyncio.run(agent.run_autonomous(None))
    assert agent.phase is kr.AgentPhase.FINISHED and not agent.interrupt_manager.running
    assert asyncio.run(agent.run_autonomous(None))["status"] == "completed"
