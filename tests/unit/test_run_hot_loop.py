"""The cycle loop's cost in kind, not in time: what one cycle creates, what it shares, and what a cancelled step leaves behind.

The time per cycle is a figure of ``benchmarks/cycle_overhead.py``; here only
what can be counted: tasks created per cycle, and warnings.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import warnings

import kaizen_ray as kr
from tests._support.agents import Counter


def cfg(tmp_path, **kw):
    return kr.AutonomousConfig(storage_path=tmp_path, checkpoint_frequency=0, **kw)


def _run_counting_tasks(agent: kr.BaseAutonomousAgent, task: object) -> tuple[dict, int]:
    """The run's result, and how many asyncio tasks its loop created (the run's own included)."""
    created = 0

    def factory(loop: asyncio.AbstractEventLoop, coro, **kw):
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kw)

    async def main() -> dict:
        asyncio.get_running_loop().set_task_factory(factory)
        return await asyncio.ensure_future(agent.run_autonomous(task))

    return asyncio.run(main()), created


def test_cycles_whose_steps_never_suspend_create_no_task_per_cycle(tmp_path) -> None:
    cycles = 50
    result, created = _run_counting_tasks(Counter(config=cfg(tmp_path)), cycles)
    assert (result["status"], result["cycles"]) == ("completed", cycles)
    # The cycles share one task; a step that never suspends costs no turn of the
    # loop. A few tasks for the run itself and its final checkpoint.
    assert created <= 5, f"{created} tasks for {cycles} cycles"


def test_cycles_whose_steps_suspend_create_no_task_per_cycle_either(tmp_path) -> None:
    class Sleeps(Counter):
        async def step(self, state, ctx):
            await asyncio.sleep(0)
            return await super().step(state, ctx)

    cycles = 50
    result, created = _run_counting_tasks(Sleeps(config=cfg(tmp_path)), cycles)
    assert (result["status"], result["cycles"], result["state"]["n"]) == ("completed", cycles, cycles)
    assert created <= 5, f"{created} tasks for {cycles} cycles"


def test_every_step_of_a_run_gets_the_same_context_set_to_the_cycle_in_flight(tmp_path) -> None:
    seen: list[tuple[int, int]] = []

    class Notes(Counter):
        async def step(self, state, ctx):
            seen.append((id(ctx), ctx.cycle))
            return await super().step(state, ctx)

    asyncio.run(Notes(config=cfg(tmp_path)).run_autonomous(3))
    assert [cycle for _, cycle in seen] == [1, 2, 3]
    assert len({ident for ident, _ in seen}) == 1


def test_a_context_variable_a_step_sets_lasts_the_run_but_never_reaches_the_caller(tmp_path) -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[int] = []

    class Sets(Counter):
        async def step(self, state, ctx):
            seen.append(var.get())
            var.set(ctx.cycle)
            return await super().step(state, ctx)

    async def main() -> int:
        await Sets(config=cfg(tmp_path)).run_autonomous(3)
        return var.get()

    assert asyncio.run(main()) == 0  # the caller's context is untouched: the cycles run in a copy of it
    assert seen == [0, 1, 2]  # one copy for the whole run, as one task would have


def test_a_hook_registered_by_a_step_runs_from_the_next_cycle_on(tmp_path) -> None:
    seen: list[int] = []

    class Registers(Counter):
        async def step(self, state, ctx):
            if ctx.cycle == 2:
                self.hooks.register(kr.HookEvent.PRE_CYCLE, lambda hook_ctx: seen.append(hook_ctx.cycle))
            return await super().step(state, ctx)

    result = asyncio.run(Registers(config=cfg(tmp_path)).run_autonomous(4))
    assert result["status"] == "completed"
    assert seen == [2, 3]  # PRE_CYCLE sees the cycles done so far: before cycles 3 and 4


def test_an_immediate_stop_before_the_step_started_leaves_no_coroutine_unawaited(tmp_path) -> None:
    agent = Counter(config=cfg(tmp_path))

    async def stop_now(ctx: kr.HookContext) -> None:
        agent.interrupt_manager.request_interrupt("programmatic", "immediate", "before the step")
        await asyncio.sleep(0)  # the stop reaches the run's loop while this hook runs: the step must never start

    agent.hooks.register(kr.HookEvent.PRE_CYCLE, stop_now)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = asyncio.run(agent.run_autonomous(3))
        gc.collect()
    assert (result["status"], result["cycles"], result["state"]["n"]) == ("interrupted", 0, 0)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
