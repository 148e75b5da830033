"""StepContext: what a step sees of its run's spend (``cost``, ``cycle_cost``) and how a bad charge is refused."""

from __future__ import annotations

import asyncio
import math

import pytest

import kaizen_ray as kr
from kaizen_ray.core._local_budget import LocalBudgetClient
from tests._support.agents import Counter


def context(manager: kr.InterruptManager | None = None, *, cost_so_far: float = 0.0, with_budget: float | None = None):
    manager = manager or kr.InterruptManager(name="a1")
    budget = None
    if with_budget is not None:
        manager.add_handler(kr.BudgetInterruptHandler(max_cost=with_budget))
        budget = LocalBudgetClient(manager)
    ctx = kr.StepContext(agent_name="a1", cycle=4, manager=manager, budget=budget, cost_so_far=cost_so_far)
    return ctx, manager


def test_cost_is_the_runs_spend_so_far_plus_this_cycles_and_cycle_cost_this_cycles_alone():
    ctx, _ = context(cost_so_far=1.5)
    assert (ctx.cost, ctx.cycle_cost) == (1.5, 0.0)
    ctx.charge(0.25)
    ctx.charge(1)  # an int is a number too
    assert (ctx.cost, ctx.cycle_cost) == (2.75, 1.25)
    ctx.charge(0)
    assert (ctx.cost, ctx.cycle_cost) == (2.75, 1.25)


def test_a_charge_reaches_the_budget_and_can_exhaust_it():
    ctx, manager = context(with_budget=1.0)
    ctx.charge(0.4)
    handler = manager.handlers[0]
    assert handler.spent == pytest.approx(0.4) and not ctx.interrupted
    ctx.charge(0.6)
    assert ctx.interrupted and manager.reason.metadata["handler"] == "budget"


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf, -math.inf, True, False, "0.1", None])
def test_a_bad_charge_is_a_config_error_naming_cost_and_the_value_and_changes_nothing(bad):
    ctx, manager = context(cost_so_far=1.0, with_budget=10.0)
    ctx.charge(0.5)
    with pytest.raises(kr.ConfigError) as info:
        ctx.charge(bad)
    err = info.value
    assert (err.field, err.value) == ("cost", bad)
    assert str(err) == f"cost must be a finite number >= 0, got {bad!r}"
    assert (ctx.cost, ctx.cycle_cost) == (1.5, 0.5)
    assert manager.handlers[0].spent == pytest.approx(0.5)  # the budget never saw it


@pytest.mark.parametrize("bad", [-1.0, math.nan, True])
def test_a_bad_reservation_is_refused_the_same_way(bad):
    ctx, _ = context(with_budget=10.0)
    with pytest.raises(kr.ConfigError, match=r"^cost must be a finite number >= 0, got "):
        asyncio.run(ctx.reserve(bad))


def test_without_a_budget_every_reservation_is_granted():
    ctx, _ = context()
    assert asyncio.run(ctx.reserve(1e9)) is True


def test_a_step_sees_its_cost_across_cycles_and_across_a_resume(tmp_path):
    seen: list[tuple[int, float, float]] = []

    class Spender(Counter):
        async def step(self, state, ctx):
            ctx.charge(0.5)
            ctx.charge(0.25)
            seen.append((ctx.cycle, ctx.cost, ctx.cycle_cost))
            return await super().step(state, ctx)

    cfg = kr.AutonomousConfig(storage_path=tmp_path, max_cycles=2)
    first = asyncio.run(Spender(config=cfg).run_autonomous(3))
    assert first["cost"] == 1.5
    again = asyncio.run(Spender(config=kr.AutonomousConfig(storage_path=tmp_path)).run_autonomous(
        resume_from_checkpoint=first["checkpoint_id"]
    ))
    assert seen == [(1, 0.75, 0.75), (2, 1.5, 0.75), (3, 2.25, 0.75)]
    assert (again["status"], again["cost"]) == ("completed", 2.25)


def test_a_bad_charge_in_a_step_fails_the_run_with_the_config_error_and_keeps_the_last_good_state(tmp_path):
    class BadSpender(Counter):
        async def step(self, state, ctx):
            ctx.charge(float("nan") if ctx.cycle == 2 else 0.1)
            return await super().step(state, ctx)

    result = asyncio.run(BadSpender(config=kr.AutonomousConfig(storage_path=tmp_path)).run_autonomous(5))
    assert (result["status"], result["cycles"], result["cost"]) == ("failed", 1, 0.1)
    assert type(result["error"]) is kr.ConfigError and result["error"].field == "cost"
    assert kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path).state["n"] == 1
