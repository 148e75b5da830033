"""Hooks around a run, as DESIGN's Hooks section promises them, in-process."""

from __future__ import annotations

import asyncio

import kaizen_ray as kr
from tests._support.agents import Counter


def cfg(tmp_path, **kw):
    return kr.AutonomousConfig(storage_path=tmp_path, hook_timeout_s=5.0, **kw)


class WaitsForPreInterrupt(kr.BaseAutonomousAgent):
    """Cycle 1 cannot end before a PRE_INTERRUPT hook has run: proof that it ran mid-cycle."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.in_cycle = asyncio.Event()
        self.pre_ran = asyncio.Event()

    async def step(self, state, ctx):
        self.in_cycle.set()
        await self.pre_ran.wait()
        return kr.StepResult({"n": state["n"] + 1})

    def initial_state(self, task):
        return {"n": 0}


def test_pre_interrupt_runs_while_a_graceful_cycle_is_in_flight_and_post_interrupt_sees_the_durable_checkpoint(tmp_path):
    agent = WaitsForPreInterrupt(config=cfg(tmp_path))
    seen: dict[str, object] = {}

    async def pre(ctx: kr.HookContext) -> kr.HookResult:
        seen["pre"] = dict(ctx.data)
        seen["pre_in_flight"] = agent.status()["cycle_in_flight"]
        agent.pre_ran.set()
        return kr.HookResult(success=True)

    def post(ctx: kr.HookContext) -> None:
        seen["post"] = dict(ctx.data)
        # Durable by now: it loads from disk, from another reader.
        seen["post_state"] = kr.load_checkpoint(ctx.data["checkpoint_id"], storage_path=tmp_path).state

    agent.hook_manager.register(kr.HookEvent.PRE_INTERRUPT, pre)
    agent.hooks.register(kr.HookEvent.POST_INTERRUPT, post)

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous("t"))
        await agent.in_cycle.wait()
        agent.interrupt_manager.request_interrupt("user", "graceful", "enough", {"who": "test"})
        return await task

    result = asyncio.run(main())

    assert result["status"] == "interrupted" and result["cycles"] == 1  # the cycle in flight was committed
    assert seen["pre_in_flight"] == 1
    pre_data = seen["pre"]
    assert pre_data["reason"] == "enough" and pre_data["source"] == "user" and pre_data["mode"] == "graceful"
    assert pre_data["interrupt_reason"].metadata["who"] == "test"
    assert seen["post"]["checkpoint_id"] == result["checkpoint_id"] is not None
    assert seen["post_state"] == {"n": 1}


def test_a_hook_sees_the_agent_itself_and_can_stop_it_through_its_manager(tmp_path):
    agent = Counter(config=cfg(tmp_path))

    async def stop_at_two(ctx: kr.HookContext) -> kr.HookResult:
        assert ctx.agent is agent
        if ctx.cycle == 2:
            ctx.agent.interrupt_manager.request_interrupt(
                source=kr.InterruptSource.PROGRAMMATIC, mode=kr.InterruptMode.IMMEDIATE, message="two is enough"
            )
        return kr.HookResult(success=True)

    agent.hooks.register(kr.HookEvent.POST_CYCLE, stop_at_two)
    result = asyncio.run(agent.run_autonomous(100))
    assert (result["status"], result["cycles"], result["mode"]) == ("interrupted", 2, "immediate")
    assert result["interrupt_reason"].message == "two is enough"


def test_an_interrupt_the_run_starts_with_still_gets_its_pre_and_post_hooks(tmp_path):
    class Never(kr.BaseAutonomousAgent):
        async def step(self, state, ctx):
            raise AssertionError("an interrupted run must not start a cycle")

    agent = Never(config=cfg(tmp_path))
    events = []
    agent.hooks.register(kr.HookEvent.PRE_INTERRUPT, lambda ctx: events.append(("pre", ctx.data["reason"])))
    agent.hooks.register(kr.HookEvent.POST_INTERRUPT, lambda ctx: events.append(("post", ctx.data["checkpoint_id"])))
    agent.interrupt_manager.request_interrupt("programmatic", reason="before the run")
    result = asyncio.run(agent.run_autonomous("t"))
    assert result["status"] == "interrupted"
    assert events == [("pre", "before the run"), ("post", result["checkpoint_id"])]


class StopsItselfWhenTold(kr.BaseAutonomousAgent):
    """Completes in one cycle, or (``stop``) asks for a GRACEFUL stop and goes on to the boundary that honours it."""

    stop = False
    runs = 0

    def initial_state(self, task):
        self.runs += 1
        return {}

    async def step(self, state, ctx):
        if self.stop:
            self.interrupt_manager.request_interrupt("programmatic", "graceful", f"stop in run {self.runs}")
        return kr.StepResult(state, done=not self.stop)


def test_an_agent_run_again_hears_each_interrupt_once_and_no_ended_run_escalates_it(tmp_path):
    from kaizen_ray.core.deadlines import shared_scheduler

    agent = StopsItselfWhenTold(config=cfg(tmp_path, graceful_shutdown_timeout=60.0))
    heard: list[str] = []
    agent.hooks.register(kr.HookEvent.PRE_INTERRUPT, lambda ctx: heard.append(ctx.data["reason"]))

    async def main():
        results, runs = [], []
        for stop in (False, True, True):
            agent.stop = stop
            results.append(await agent.run_autonomous("t"))
            runs.append(agent._run)
        return results, runs

    results, runs = asyncio.run(main())

    assert [r["status"] for r in results] == ["completed", "interrupted", "interrupted"]
    # Each interrupted run ran its PRE_INTERRUPT hooks once: an ended run no longer listens to the manager.
    assert heard == ["stop in run 2", "stop in run 3"]
    # Nor does an ended run keep an escalation armed (it would stop a later run, 60 s on).
    assert not [run for run in runs if ("escalation", id(run)) in shared_scheduler()]
