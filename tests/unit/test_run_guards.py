"""One run at a time per agent, and an agent whose config turns interrupts off."""

from __future__ import annotations

import asyncio

import pytest

import kaizen_ray as kr
from tests._support.agents import WAIT_S, BlocksAtCycle, Counter


def test_a_second_run_while_one_is_going_is_refused_naming_the_agent_and_the_first_run_goes_on(tmp_path):
    agent = BlocksAtCycle(
        config=kr.AutonomousConfig(storage_path=tmp_path, max_cycles=3, checkpoint_frequency=0), name="worker", block_at=2
    )

    async def main():
        first = asyncio.ensure_future(agent.run_autonomous())
        assert await asyncio.to_thread(agent.entered.wait, WAIT_S), "the first run never reached cycle 2"
        with pytest.raises(RuntimeError) as refused:
            await agent.run_autonomous(resume_from_checkpoint="latest")
        during = agent.status()
        agent.release.set()
        return refused.value, during, await asyncio.wait_for(first, WAIT_S)

    refused, during, result = asyncio.run(main())
    assert str(refused) == "agent 'worker' is already running (a second run must wait for the first to end)"
    assert (during["phase"], during["cycle"], during["cycle_in_flight"]) == ("running", 1, 2)
    assert (result["status"], result["cycles"], result["state"]) == ("completed", 3, {"n": 3})
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent="worker")] == [3]  # the refused run wrote nothing


def test_a_run_may_start_again_once_the_first_has_ended(tmp_path):
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path))
    first = asyncio.run(agent.run_autonomous(2))
    again = asyncio.run(agent.run_autonomous(3))
    assert (first["cycles"], again["cycles"], again["status"]) == (2, 3, "completed")


def test_with_interrupts_disabled_a_request_is_accepted_but_the_run_completes_every_cycle(tmp_path):
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path, enable_interrupts=False))
    accepted: list[bool] = []
    agent.hooks.register(
        kr.HookEvent.POST_CYCLE,
        lambda ctx: accepted.append(agent.interrupt_manager.request_interrupt("user", "immediate", "stop"))
        if ctx.cycle == 1 else None,
    )  # fmt: skip
    result = asyncio.run(agent.run_autonomous(4))
    assert accepted == [True] and agent.interrupt_manager.is_interrupted()
    assert (result["status"], result["cycles"], result["output"]) == ("completed", 4, 4)
    assert (result["interrupt_reason"], result["mode"]) == (None, None)
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).status == "completed"


def test_with_interrupts_disabled_handlers_are_not_armed_for_the_run(tmp_path):
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path, enable_interrupts=False))
    timeout = kr.TimeoutInterruptHandler(0.0)  # armed, it would stop the run at its first boundary
    agent.interrupt_manager.add_handler(timeout)
    due_during_run: list[float | None] = []
    agent.hooks.register(kr.HookEvent.PRE_CYCLE, lambda ctx: due_during_run.append(timeout.due_at(agent.interrupt_manager)))
    result = asyncio.run(agent.run_autonomous(3))
    assert due_during_run == [None, None, None]
    assert (result["status"], result["cycles"]) == ("completed", 3)
    assert not agent.interrupt_manager.is_interrupted() and agent.interrupt_manager.history == []


def test_the_same_agent_with_interrupts_enabled_is_stopped_by_that_handler(tmp_path):
    # The control for the two tests above: the only difference is enable_interrupts.
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path))
    agent.interrupt_manager.add_handler(kr.TimeoutInterruptHandler(0.0))
    result = asyncio.run(agent.run_autonomous(1000))
    assert result["status"] == "interrupted" and result["interrupt_reason"].metadata["handler"] == "timeout"
