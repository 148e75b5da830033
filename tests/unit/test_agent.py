"""The in-process cycle loop: commits, cancellation, escalation, checkpoints, resume, hooks."""

from __future__ import annotations

import asyncio
import signal
import threading

import pytest

import kaizen_ray as kr
from kaizen_ray.core.agent import AgentPhase
from tests._support.agents import WAIT_S, AwaitsAtCycle, BlocksAtCycle, Counter


def cfg(tmp_path, **kw):
    return kr.AutonomousConfig(storage_path=tmp_path, **kw)


def run(coro):
    return asyncio.run(coro)


def interrupt_when(event: threading.Event, manager: kr.InterruptManager, *args) -> threading.Thread:
    def go() -> None:
        assert event.wait(WAIT_S), "the step never reached the gate"
        manager.request_interrupt(*args)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


RESULT_KEYS = {"status", "output", "state", "cycles", "cost", "checkpoint_id", "interrupt_reason", "mode"}


def test_completed_run_returns_the_contract_dict_and_a_durable_checkpoint(tmp_path):
    result = run(Counter(config=cfg(tmp_path)).run_autonomous(3))
    assert RESULT_KEYS <= result.keys()
    assert (result["status"], result["output"], result["cycles"]) == ("completed", 3, 3)
    assert result["interrupt_reason"] is None and result["mode"] is None
    ckpt = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (ckpt.status, ckpt.cycle, ckpt.state["n"], ckpt.agent) == ("completed", 3, 3, "Counter")


def test_max_cycles_counts_across_resumes(tmp_path):
    first = run(Counter(config=cfg(tmp_path, max_cycles=4)).run_autonomous(100))
    assert (first["status"], first["cycles"]) == ("completed", 4)
    again = run(Counter(config=cfg(tmp_path, max_cycles=6)).run_autonomous(resume_from_checkpoint=first["checkpoint_id"]))
    assert again["cycles"] == 6 and again["state"]["n"] == 6


def test_the_last_cycle_before_max_cycles_is_checkpointed_once(tmp_path):
    # checkpoint_frequency=1 saves after every cycle, but the final save of cycle 4 is the only one of it.
    result = run(Counter(config=cfg(tmp_path, max_cycles=4, checkpoint_frequency=1)).run_autonomous(100))
    cycles = [info.cycle for info in kr.list_checkpoints(tmp_path, agent="Counter")]
    assert cycles == [1, 2, 3, 4] and result["checkpoint_id"] == kr.list_checkpoints(tmp_path)[-1].id


def test_graceful_interrupt_lets_the_cycle_in_flight_finish_and_commit(tmp_path):
    agent = BlocksAtCycle(config=cfg(tmp_path), block_at=2)

    def stop_then_release():
        assert agent.entered.wait(WAIT_S)
        assert agent.interrupt_manager.request_interrupt(kr.InterruptSource.PROGRAMMATIC, reason="enough")
        agent.release.set()

    threading.Thread(target=stop_then_release, daemon=True).start()
    result = run(agent.run_autonomous())
    assert result["status"] == "interrupted" and result["mode"] == "graceful"
    assert result["cycles"] == 2 and result["state"] == {"n": 2}  # cycle 2 was committed
    assert result["interrupt_reason"].message == "enough"
    assert result["interrupt_reason"].metadata["checkpoint_id"] == result["checkpoint_id"]
    ckpt = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (ckpt.status, ckpt.cycle, ckpt.state) == ("interrupted", 2, {"n": 2})
    assert ckpt.interrupt_reason.message == "enough"


def test_immediate_cancels_an_async_step_mid_await_and_keeps_the_last_completed_cycle(tmp_path):
    agent = AwaitsAtCycle(config=cfg(tmp_path), block_at=4)
    interrupt_when(agent.entered, agent.interrupt_manager, "user", "immediate", "stop now")
    result = run(agent.run_autonomous())
    assert agent.cancelled.is_set(), "the step never saw CancelledError"
    assert (result["status"], result["mode"], result["cycles"], result["state"]) == ("interrupted", "immediate", 3, {"n": 3})
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).state == {"n": 3}


def test_timeout_fires_while_a_sync_step_blocks(tmp_path):
    woke: list[bool] = []

    class Blocking(kr.BaseAutonomousAgent):
        def step(self, state, ctx):
            # Blocks its thread, holding no await, until the interrupt lands:
            # only the deadline thread can end this cycle.
            woke.append(self.interrupt_manager.wait(WAIT_S))
            return kr.StepResult(state)

    agent = Blocking(config=cfg(tmp_path))
    agent.interrupt_manager.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=0.1))
    result = run(agent.run_autonomous("t"))
    reason = result["interrupt_reason"]
    assert woke == [True], "the step was not woken by the timeout"
    assert result["status"] == "interrupted" and result["cycles"] == 1
    assert (reason.source, reason.metadata["handler"]) == (kr.InterruptSource.SYSTEM, "timeout")


def test_a_graceful_stop_past_its_deadline_escalates_to_immediate(tmp_path):
    agent = AwaitsAtCycle(config=cfg(tmp_path, graceful_shutdown_timeout=0.05), block_at=2)
    interrupt_when(agent.entered, agent.interrupt_manager, "programmatic", "graceful", "please stop")
    result = run(agent.run_autonomous())
    history = agent.interrupt_manager.history
    assert [r.mode.value for r in history] == ["graceful", "immediate"]
    assert (history[1].source, history[1].metadata["handler"]) == (kr.InterruptSource.SYSTEM, "escalation")
    assert result["interrupt_reason"].message == "please stop"  # the first reason is kept
    assert (result["mode"], result["state"]) == ("immediate", {"n": 1})


def test_immediate_waits_for_a_sync_step_then_abandons_it_and_discards_its_result(tmp_path):
    agent = BlocksAtCycle(config=cfg(tmp_path, immediate_shutdown_timeout=0.05), block_at=2)
    interrupt_when(agent.entered, agent.interrupt_manager, "user", "immediate")
    try:
        result = run(agent.run_autonomous())
        # Returned while cycle 2's thread was still blocked: the thread was abandoned, not awaited.
        still_blocked = not agent.unblocked.is_set()
    finally:
        agent.release.set()
    assert still_blocked
    assert (result["status"], result["cycles"], result["state"]) == ("interrupted", 1, {"n": 1})


def test_a_step_that_swallows_cancellation_has_its_result_discarded(tmp_path):
    entered = threading.Event()

    class Swallower(kr.BaseAutonomousAgent):
        def initial_state(self, task):
            return {"n": 0}

        async def step(self, state, ctx):
            if ctx.cycle == 2:
                entered.set()
                try:
                    await asyncio.sleep(WAIT_S)
                except asyncio.CancelledError:
                    return kr.StepResult({"n": -1})  # must never be committed
            return kr.StepResult({"n": state["n"] + 1})

    agent = Swallower(config=cfg(tmp_path))
    interrupt_when(entered, agent.interrupt_manager, "user", "immediate")
    result = run(agent.run_autonomous())
    assert (result["status"], result["state"]) == ("interrupted", {"n": 1})


def test_resume_after_an_interrupt_reaches_the_same_final_state(tmp_path):
    straight = run(Counter(config=cfg(tmp_path / "a")).run_autonomous(7))

    class Interrupted(Counter):
        async def step(self, state, ctx):
            if ctx.cycle == 4:
                self.interrupt_manager.request_interrupt("user", reason="Ctrl+C")
            return await super().step(state, ctx)

    first = run(Interrupted(config=cfg(tmp_path / "b"), name="Counter").run_autonomous(7))
    assert (first["status"], first["cycles"]) == ("interrupted", 4)
    second = run(Counter(config=cfg(tmp_path / "b")).run_autonomous(resume_from_checkpoint="latest"))
    assert second["status"] == "completed"
    assert (second["state"], second["cycles"], second["output"]) == (straight["state"], 7, 7)
    chain, ckpt_id = [], second["checkpoint_id"]
    while ckpt_id is not None:
        chain.append(ckpt_id)
        ckpt_id = kr.load_checkpoint(ckpt_id, storage_path=tmp_path / "b").parent_id
    assert first["checkpoint_id"] in chain  # the resumed run descends from the interrupted one


def test_raise_on_interrupt_raises_with_the_checkpoint(tmp_path):
    agent = Counter(config=cfg(tmp_path, raise_on_interrupt=True))
    agent.interrupt_manager.request_interrupt("programmatic", reason="halt")
    with pytest.raises(kr.InterruptedError) as info:
        run(agent.run_autonomous(5))
    err = info.value
    assert err.checkpoint_id and err.reason.metadata["checkpoint_id"] == err.checkpoint_id
    assert kr.load_checkpoint(err.checkpoint_id, storage_path=tmp_path).cycle == 0


def test_interrupted_before_the_first_cycle_stops_at_once_level_triggered(tmp_path):
    agent = Counter(config=cfg(tmp_path))
    agent.interrupt_manager.request_interrupt("user")
    result = run(agent.run_autonomous(5))
    assert (result["status"], result["cycles"]) == ("interrupted", 0)


def test_a_step_that_raises_fails_the_run_with_the_error_and_a_checkpoint_of_the_last_good_state(tmp_path):
    class Boom(Counter):
        async def step(self, state, ctx):
            if ctx.cycle == 3:
                try:
                    raise KeyError("tool")
                except KeyError as exc:
                    raise RuntimeError("tool call failed") from exc
            return await super().step(state, ctx)

    result = run(Boom(config=cfg(tmp_path)).run_autonomous(10))
    assert result["status"] == "failed" and result["cycles"] == 2
    assert type(result["error"]) is RuntimeError and isinstance(result["error"].__cause__, KeyError)
    ckpt = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (ckpt.status, ckpt.state["n"]) == ("failed", 2)


def test_a_step_returning_something_else_fails_with_a_clear_type_error(tmp_path):
    class Wrong(kr.BaseAutonomousAgent):
        async def step(self, state, ctx):
            return {"oops": 1}

    result = run(Wrong(config=cfg(tmp_path)).run_autonomous())
    assert result["status"] == "failed" and isinstance(result["error"], TypeError)
    assert "StepResult" in str(result["error"]) and "dict" in str(result["error"])


def test_an_unpicklable_state_fails_naming_agent_and_type_and_keeps_the_last_good_checkpoint(tmp_path):
    class Locky(Counter):
        async def step(self, state, ctx):
            result = await super().step(state, ctx)
            if ctx.cycle == 2:
                return kr.StepResult({**result.state, "lock": threading.Lock()})
            return result

    result = run(Locky(config=cfg(tmp_path, checkpoint_frequency=1)).run_autonomous(5))
    assert result["status"] == "failed"
    assert isinstance(result["error"], kr.CheckpointSerializationError)
    assert "Locky" in str(result["error"]) and "lock" in str(result["error"]).lower()
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).cycle == 1


@pytest.mark.parametrize(("frequency", "expected"), [(0, [5]), (1, [1, 2, 3, 4, 5]), (2, [2, 4, 5])])
def test_checkpoint_frequency(tmp_path, frequency, expected):
    run(Counter(config=cfg(tmp_path, checkpoint_frequency=frequency)).run_autonomous(5))
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent="Counter")] == expected


def test_no_checkpoint_on_interrupt_when_disabled(tmp_path):
    agent = Counter(config=cfg(tmp_path, checkpoint_on_interrupt=False, checkpoint_frequency=0))
    agent.interrupt_manager.request_interrupt("user")
    result = run(agent.run_autonomous(5))
    assert result["status"] == "interrupted" and result["checkpoint_id"] is None
    assert kr.list_checkpoints(tmp_path) == []


def test_hooks_run_in_order_and_a_hook_can_interrupt(tmp_path):
    agent = Counter(config=cfg(tmp_path, checkpoint_frequency=0))
    seen: list[tuple[str, int]] = []
    for event in kr.HookEvent:
        agent.hooks.register(event, lambda ctx: seen.append((ctx.event.value, ctx.cycle)))

    def dangerous(ctx: kr.HookContext):
        if ctx.cycle == 2:
            ctx.request_interrupt("dangerous tool detected", mode="immediate")

    agent.hooks.register(kr.HookEvent.POST_CYCLE, dangerous)
    result = run(agent.run_autonomous(10))
    assert (result["status"], result["cycles"]) == ("interrupted", 2)
    reason = result["interrupt_reason"]
    assert (reason.source, reason.metadata["hook"]) == (kr.InterruptSource.PROGRAMMATIC, "post_cycle")
    assert seen == [
        ("pre_cycle", 0), ("post_cycle", 1), ("pre_cycle", 1), ("post_cycle", 2),
        ("pre_interrupt", 2), ("pre_checkpoint", 2), ("post_checkpoint", 2), ("post_interrupt", 2),
    ]  # fmt: skip


def test_hooks_that_raise_or_hang_never_hold_up_a_system_interrupt(tmp_path):
    agent = Counter(config=cfg(tmp_path, hook_timeout_s=0.05))
    hung = threading.Event()
    finished: list[str] = []  # a hook appends here only once it has run to its end

    def blocks(ctx):
        hung.wait(WAIT_S)
        finished.append("sync pre_interrupt")

    async def hangs(ctx):
        await asyncio.sleep(WAIT_S)
        finished.append("async post_interrupt")

    agent.hooks.register(kr.HookEvent.PRE_INTERRUPT, blocks)
    agent.hooks.register(kr.HookEvent.PRE_INTERRUPT, lambda ctx: 1 / 0)
    agent.hooks.register(kr.HookEvent.POST_INTERRUPT, hangs)
    agent.interrupt_manager.request_interrupt("system", metadata={"handler": "budget"})
    try:
        result = run(agent.run_autonomous(5))
        # Had the run waited for either hook, that hook would have finished first.
        finished_before_the_result = list(finished)
    finally:
        hung.set()
    assert finished_before_the_result == []
    assert result["status"] == "interrupted" and result["interrupt_reason"].metadata["handler"] == "budget"
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).status == "interrupted"


def test_budget_handler_stops_the_run_when_spend_reaches_max_cost(tmp_path):
    class Spender(Counter):
        async def step(self, state, ctx):
            ctx.charge(0.1)
            return await super().step(state, ctx)

    agent = Spender(config=cfg(tmp_path))
    agent.interrupt_manager.add_handler(kr.BudgetInterruptHandler(max_cost=0.3))
    result = run(agent.run_autonomous(10))
    reason = result["interrupt_reason"]
    assert (result["status"], result["cycles"]) == ("interrupted", 3)  # 0.1 * 3 >= 0.3 within 1e-9
    assert reason.metadata["handler"] == "budget" and result["cost"] == pytest.approx(0.3)


def test_a_refused_reservation_stops_before_spending(tmp_path):
    class Careful(Counter):
        async def step(self, state, ctx):
            if not await ctx.reserve(0.4):
                return kr.StepResult(state)
            ctx.charge(0.4)
            return await super().step(state, ctx)

    agent = Careful(config=cfg(tmp_path))
    agent.interrupt_manager.add_handler(kr.BudgetInterruptHandler(max_cost=1.0))
    result = run(agent.run_autonomous(10))
    assert result["status"] == "interrupted" and result["cost"] == pytest.approx(0.8)
    assert result["state"]["n"] == 2


@pytest.mark.parametrize("raised", [RuntimeError("the tool broke"), asyncio.CancelledError()], ids=["error", "its-own-cancel"])
def test_a_failed_cycle_counts_its_spend_and_gives_back_what_is_left_of_its_reservation(tmp_path, raised):
    class FailsMidway(Counter):
        async def step(self, state, ctx):
            assert await ctx.reserve(3.0)
            ctx.charge(1.0)
            raise raised  # a CancelledError nobody asked for fails the run too

    agent = FailsMidway(config=cfg(tmp_path))
    budget = kr.BudgetInterruptHandler(max_cost=10.0)
    agent.interrupt_manager.add_handler(budget)
    results = [run(agent.run_autonomous(10)) for _ in range(3)]

    assert [(r["status"], type(r["error"])) for r in results] == [("failed", type(raised))] * 3
    assert [r["cost"] for r in results] == [1.0] * 3  # each run's failed cycle spent 1.0
    ledger = budget.snapshot()
    assert (ledger["spent"], ledger["reserved"], ledger["remaining"]) == (3.0, 0.0, 7.0)  # nothing held for ever


def test_cancelling_the_run_task_checkpoints_then_propagates_cancellation(tmp_path):
    agent = AwaitsAtCycle(config=cfg(tmp_path), block_at=3)

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous())
        assert await asyncio.to_thread(agent.entered.wait, WAIT_S), "the step never reached cycle 3"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    [ckpt] = [c for c in kr.list_checkpoints(tmp_path) if c.status == "interrupted"]
    assert ckpt.cycle == 2 and ckpt.interrupt_reason.mode == kr.InterruptMode.IMMEDIATE


def test_phase_goes_idle_running_finished_and_status_reports_it(tmp_path):
    agent = Counter(config=cfg(tmp_path))
    assert agent.status()["phase"] == "idle"
    phases = []
    agent.hooks.register(kr.HookEvent.PRE_CYCLE, lambda ctx: phases.append(agent.phase))
    run(agent.run_autonomous(2))
    assert phases == [AgentPhase.RUNNING, AgentPhase.RUNNING]
    status = agent.status()
    assert (status["phase"], status["cycle"], status["interrupted"]) == ("finished", 2, False)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_a_signal_handler_on_the_manager_is_installed_for_the_run_only(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    handler = kr.SignalInterruptHandler()
    agent = Counter(config=cfg(tmp_path))
    agent.interrupt_manager.add_handler(handler)
    assert signal.getsignal(signal.SIGINT) is before  # an agent's handlers act during its runs only
    during = []
    agent.hooks.register(kr.HookEvent.PRE_CYCLE, lambda ctx: during.append(handler.installed))
    run(agent.run_autonomous(2))
    assert during == [True, True]
    assert signal.getsignal(signal.SIGINT) is before


def test_bad_config_names_the_field_and_value():
    with pytest.raises(ValueError, match="immediate_shutdown_timeout.*nan"):
        kr.AutonomousConfig(immediate_shutdown_timeout=float("nan"))
    with pytest.raises(ValueError, match="bogus"):
        kr.AutonomousConfig(bogus=1)
    with pytest.raises(ValueError, match="checkpoint_frequency"):
        kr.AutonomousConfig(checkpoint_frequency=-1)
    with pytest.raises(TypeError, match="config must be"):
        Counter(config=42)


def test_a_new_run_starts_clear_of_an_interrupt_the_last_run_stopped_for(tmp_path):
    agent = Counter(config=cfg(tmp_path))
    agent.interrupt_manager.request_interrupt("user", reason="first stop")
    first = run(agent.run_autonomous(3))
    assert (first["status"], first["cycles"]) == ("interrupted", 0)
    again = run(agent.run_autonomous(resume_from_checkpoint=first["checkpoint_id"]))
    assert (again["status"], again["cycles"]) == ("completed", 3)
    assert [r.message for r in agent.interrupt_manager.history] == ["first stop"]


def test_a_request_made_between_runs_still_stops_the_next_run(tmp_path):
    agent = Counter(config=cfg(tmp_path))
    agent.interrupt_manager.request_interrupt("user", reason="first stop")
    run(agent.run_autonomous(3))
    agent.interrupt_manager.reset()
    agent.interrupt_manager.request_interrupt("programmatic", reason="not yet")
    again = run(agent.run_autonomous(resume_from_checkpoint="latest"))
    assert (again["status"], again["cycles"], again["interrupt_reason"].message) == ("interrupted", 0, "not yet")


def test_status_names_the_cycle_in_flight_only_while_its_step_runs(tmp_path):
    seen: list = []

    class Reporter(Counter):
        async def step(self, state, ctx):
            seen.append((ctx.cycle, self.status()["cycle_in_flight"]))
            return await super().step(state, ctx)

    agent = Reporter(config=cfg(tmp_path))
    agent.hooks.register(kr.HookEvent.POST_CYCLE, lambda ctx: seen.append(("post", agent.status()["cycle_in_flight"])))
    run(agent.run_autonomous(2))
    assert seen == [(1, 1), ("post", None), (2, 2), ("post", None)]
    assert agent.status()["cycle_in_flight"] is None
