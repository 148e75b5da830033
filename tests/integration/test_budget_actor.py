"""Budget actors on a real local Ray: a shared scope, reservations, overshoot, the warning, status.

A budget actor killed mid-run is in the fault tier (tests/faults/test_system_actor_faults.py).

A :class:`BudgetInterruptHandler` added to a supervisor is one budget scope (a
``kaizen-budget/...`` actor) that every child charges; added to an agent
alone, a scope of its own. The agents here charge a fixed cost per cycle,
optionally reserving it first, and the tests compare what the children say
they spent with what the budget actor recorded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import ray

import kaizen_ray as kr
from kaizen_ray.core.budget import MONEY_TOLERANCE

from tests._support.ray_agents import Spender
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

WAIT_S = 90.0  # generous: other Ray tests share these two cores
N_CHILDREN = 3


def spending_swarm(name: str, storage: Path, task: dict[str, Any]) -> Any:
    children = [
        kr.ChildSpec(Spender, name=f"s{i}", config=kr.AutonomousConfig(storage_path=storage), task=task)
        for i in range(N_CHILDREN)
    ]
    return kr.Supervisor.spawn(name, children=children, config=kr.SupervisorConfig(storage_path=storage))


def spend_task(tmp_path: Path, *, cost: float, reserve: bool, delay: float = 0.02) -> dict[str, Any]:
    warn_dir = tmp_path / "warnings"
    warn_dir.mkdir(exist_ok=True)
    return {"cost": cost, "reserve": reserve, "delay": delay, "warn_dir": str(warn_dir)}


def assert_stopped_by_the_budget(result: dict[str, Any], max_cost: float, cost: float, reserve: bool) -> None:
    """Every child of the swarm result ``result`` stopped on a SYSTEM budget interrupt, sent once the budget was spent.

    The ``spent`` it reports is the ledger's when the budget said stop: with
    charges only, at least ``max_cost``; with reservations, a refused one
    (the others' reservations, at most one cycle each, may not be spent yet).
    """
    total = math.fsum(child["cost"] for child in result["children"].values())
    least = max_cost - (N_CHILDREN * cost if reserve else 0.0) - MONEY_TOLERANCE
    for name, child in result["children"].items():
        assert child["status"] == "interrupted" and child["mode"] == "graceful", (name, child)
        reason = child["interrupt_reason"]
        assert reason.source == kr.InterruptSource.SYSTEM and reason.mode == kr.InterruptMode.GRACEFUL, (name, reason)
        assert reason.metadata["handler"] == "budget" and reason.metadata["max_cost"] == max_cost, (name, reason)
        assert least <= reason.metadata["spent"] <= total + MONEY_TOLERANCE, (name, reason.metadata, total)


def budget_actor(namespace: str, status: dict[str, Any]) -> Any:
    scope = status["budget"]["scope"]
    assert scope.startswith("kaizen-budget"), scope
    return ray.get_actor(scope, namespace=namespace)


# -- a shared scope ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reserve", [True, False], ids=["reservations", "charges-only"])
def test_a_shared_budget_stops_every_child_warns_once_and_bounds_the_overshoot(
    ray_cluster, storage, tmp_path, cleanup, reserve
):
    max_cost, cost = 1.0, 0.07  # not a multiple: charging past the budget overshoots it
    sup = spending_swarm(f"shared-{'res' if reserve else 'charge'}", storage, spend_task(tmp_path, cost=cost, reserve=reserve))
    cleanup(sup)
    sup.add_handler(kr.BudgetInterruptHandler(max_cost=max_cost))

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted"
    reason = result["interrupt_reason"]
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "budget"
    assert reason.metadata["max_cost"] == max_cost
    assert sorted(result["children"]) == [f"s{i}" for i in range(N_CHILDREN)]
    assert_stopped_by_the_budget(result, max_cost, cost, reserve)

    costs = {name: child["cost"] for name, child in result["children"].items()}
    total = math.fsum(costs.values())
    for name, child in result["children"].items():  # a child's cost is exactly what it paid for
        assert child["cost"] == pytest.approx(child["state"]["paid"] * cost, abs=MONEY_TOLERANCE), name
    if reserve:
        # Zero overshoot, however the three interleave; and they did get to spend.
        assert total <= max_cost + MONEY_TOLERANCE, costs
        assert total > max_cost - cost - MONEY_TOLERANCE, costs  # stopped by a refusal, not earlier
        assert sum(child["state"]["refused"] for child in result["children"].values()) >= 1
    else:
        # Spend reached the budget; past it, at most one cycle's charge per agent.
        assert max_cost - MONEY_TOLERANCE <= total <= max_cost + N_CHILDREN * cost + MONEY_TOLERANCE, costs

    # The budget actor's own ledger agrees with the children, and nothing stays reserved.
    snapshot = ray.get(budget_actor(ray_cluster, sup.status()).snapshot.remote(), timeout=WAIT_S)
    assert snapshot["spent"] == pytest.approx(total, abs=MONEY_TOLERANCE)
    assert snapshot["reserved"] == pytest.approx(0.0, abs=MONEY_TOLERANCE) and snapshot["exhausted"] is True
    status_budget = sup.status()["budget"]
    assert status_budget["spent"] == pytest.approx(total, abs=MONEY_TOLERANCE)
    assert status_budget["max_cost"] == max_cost and status_budget["remaining"] == pytest.approx(
        max(0.0, max_cost - total), abs=MONEY_TOLERANCE
    )

    # BUDGET_WARNING fired exactly once across the swarm, in the agent whose charges crossed 80 %.
    warnings = [json.loads(p.read_text()) for p in (tmp_path / "warnings").iterdir()]
    assert len(warnings) == 1, warnings
    assert warnings[0]["agent"].startswith(sup.name + "/")
    assert 0.8 * max_cost - MONEY_TOLERANCE <= warnings[0]["spent"] < 0.8 * max_cost + N_CHILDREN * cost


# -- an agent alone, status ----------------------------------------------------------------------------


def test_status_shows_spend_and_remaining_and_an_agent_alone_charges_its_own_scope(ray_cluster, storage, tmp_path, cleanup):
    task = spend_task(tmp_path, cost=0.125, reserve=False, delay=0.0)
    handles = {
        cycles: Spender.spawn(config=kr.AutonomousConfig(storage_path=storage, max_cycles=cycles), name=f"solo-{cycles}")
        for cycles in (2, 4)
    }
    for handle in handles.values():
        cleanup(handle)
        handle.add_handler(kr.BudgetInterruptHandler(max_cost=1.0))
        budget = handle.status()["budget"]
        assert (budget["spent"], budget["remaining"], budget["max_cost"]) == (0.0, 1.0, 1.0)

    results = dict(zip(handles, ray.get([h.start(task) for h in handles.values()], timeout=WAIT_S)))

    scopes = set()
    for cycles, handle in handles.items():
        assert results[cycles]["status"] == "completed" and results[cycles]["cost"] == cycles * 0.125
        budget = handle.status()["budget"]
        assert budget["spent"] == cycles * 0.125 and budget["remaining"] == 1.0 - cycles * 0.125
        assert budget["exhausted"] is False and budget["scope"].startswith(f"kaizen-budget/{handle.name}/")
        scopes.add(budget["scope"])
    assert len(scopes) == 2  # each charged its own


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, math.nan, -math.inf], ids=["negative", "nan", "minus-inf"])
def test_a_bad_budget_is_refused_at_construction_naming_the_field_and_the_value(bad):
    with pytest.raises(ValueError, match="max_cost") as caught:
        kr.BudgetInterruptHandler(max_cost=bad)
    assert repr(bad) in str(caught.value)


def test_a_supervisor_handle_refuses_what_is_not_a_handler(ray_cluster, storage, tmp_path, cleanup):
    sup = spending_swarm("refuses-junk", storage, spend_task(tmp_path, cost=0.1, reserve=False))
    cleanup(sup)

    with pytest.raises(TypeError, match="not an interrupt handler"):
        sup.add_handler({"max_cost": 1.0})
    with pytest.raises(TypeError, match="Timeout- or BudgetInterruptHandler"):
        ray.get(sup.actor.add_handler.remote(object()), timeout=WAIT_S)
    assert sup.status()["budget"] is None  # nothing was registered


def test_a_child_killed_holding_a_reservation_gives_it_back_and_its_restart_reserves_again(
    ray_cluster, storage, tmp_path, cleanup
):
    """0.6 of 1.0 reserved, the child killed mid-call: its restart's 0.6 fits only if the dead one's was given back."""
    task = {"cost": 0.6, "reserve": True, "delay": 600.0}  # reserves, then its "call" lasts for ever
    spec = kr.ChildSpec(Spender, name="s0", config=kr.AutonomousConfig(storage_path=storage), task=task)
    sup = kr.Supervisor.spawn("holds-res", children=[spec], config=kr.SupervisorConfig(storage_path=storage))
    cleanup(sup)
    sup.add_handler(kr.BudgetInterruptHandler(max_cost=1.0))
    ref = sup.start()
    scope = budget_actor(ray_cluster, sup.status())
    [ledger] = (Path(storage) / ".budgets").glob("holds-res-*.json")

    def holders() -> dict[str, str]:  # the ledger on disk: reservation id -> the agent holding it
        return json.loads(ledger.read_text()).get("holders", {}) if ledger.exists() else {}

    [first] = wait_until(lambda: list(holders()), "the child's reservation", timeout=WAIT_S)
    ray.kill(ray.get_actor("holds-res/s0", namespace=ray_cluster), no_restart=True)
    [second] = wait_until(lambda: [r for r in holders() if r != first], "the restarted child's reservation", timeout=WAIT_S)
    assert holders() == {second: "holds-res/s0"}
    snapshot = ray.get(scope.snapshot.remote(), timeout=WAIT_S)
    assert snapshot["reserved"] == pytest.approx(0.6) and snapshot["exhausted"] is False

    sup.request_interrupt("programmatic", "immediate", "enough")
    result = ray.get(ref, timeout=WAIT_S)
    assert result["restarts"] == 1 and result["interrupt_reason"].message == "enough"
    assert ray.get(scope.snapshot.remote(), timeout=WAIT_S)["reserved"] == pytest.approx(0.0, abs=MONEY_TOLERANCE)
