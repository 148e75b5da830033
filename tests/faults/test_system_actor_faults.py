"""The SYSTEM actors killed mid-run: the timer keeps its deadlines, the budget actor its spend.

DESIGN "SYSTEM actors": the timer keeps its pending deadlines across a restart
(a run whose timer crashed still times out), and a budget scope's ledger is on
disk (charges after a restart still count the spend before it). Each actor is
killed for real: SIGKILL of its worker process, or ``ray.kill`` with Ray's
restart. Moved here from tests/integration (test_system_actor_lifecycle.py and
test_budget_actor.py) so that this tier is the one home of kill tests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import ray

import kaizen_ray as kr
from kaizen_ray.core.budget import MONEY_TOLERANCE
from kaizen_ray.runtime.timer import GcsDeadlineStore, get_or_create_timer

from tests._support.ray_agents import Counter
from tests._support.waiting import wait_until
from tests.faults._kills import pid_of, restarted, sigkill
from tests.integration.test_budget_actor import (
    N_CHILDREN,
    assert_stopped_by_the_budget,
    budget_actor,
    spend_task,
    spending_swarm,
)

pytestmark = pytest.mark.ray

WAIT_S = 60.0  # generous: other Ray tests share these two cores

LONG_RUN = {"seed": 1, "goal": 10**9, "delay": 0.02}  # a Counter that would count for years


def timeout_reason(result: dict[str, Any]) -> kr.InterruptReason:
    reason = result["interrupt_reason"]
    assert reason is not None, result
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "timeout", reason
    return reason


# -- the timer keeps its deadlines across its own restart --------------------------------------------


def test_a_run_whose_timer_actor_crashed_still_times_out(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    assert ray.get(timer.pending.remote(), timeout=WAIT_S) == 0
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="outlives-its-timer")
    cleanup(handle)
    # Long enough that the timer is surely killed before it falls due.
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=5.0))

    ref = handle.start(LONG_RUN)
    wait_until(lambda: ray.get(timer.pending.remote(), timeout=WAIT_S) > 0, "the deadline to be scheduled")
    saved = GcsDeadlineStore(ray_cluster).load()
    assert [record["payload"]["name"] for record in saved.values()] == ["outlives-its-timer"]
    old = sigkill(timer)  # the process dies at once; Ray restarts the actor, re-running __init__
    restarted(timer, old, "the timer actor")

    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "interrupted", result
    reason = timeout_reason(result)
    assert reason.metadata["timeout_seconds"] == 5.0 and reason.metadata["deadline"] in saved
    # It was the restarted incarnation that fired it, from what it reloaded.
    stats = ray.get(timer.stats.remote(), timeout=WAIT_S)
    assert stats["restored"] == 1 and stats["fired"] == 1, stats
    wait_until(lambda: ray.get(timer.pending.remote(), timeout=WAIT_S) == 0, "nothing left pending")
    assert GcsDeadlineStore(ray_cluster).load() == {}


def test_a_cancelled_deadline_is_not_reloaded_by_a_restarted_timer(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="cancels-before-a-crash")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))

    ref = handle.start(LONG_RUN)
    wait_until(lambda: GcsDeadlineStore(ray_cluster).load(), "the deadline to be saved")
    assert handle.request_interrupt("programmatic", "graceful", "done early") is True
    assert ray.get(ref, timeout=WAIT_S)["status"] == "interrupted"
    # The cancel is fire-and-forget: it lands shortly after the run returned.
    wait_until(lambda: not GcsDeadlineStore(ray_cluster).load(), "the saved deadline to be deleted")

    before = pid_of(timer)
    ray.kill(timer, no_restart=False)
    restarted(timer, before, "the timer actor")
    assert ray.get(timer.stats.remote(), timeout=WAIT_S) == {"pending": 0, "fired": 0, "restored": 0}


# -- the budget actor keeps its spend across its own restart -----------------------------------------


def test_a_budget_actor_killed_mid_run_restarts_with_its_spend(ray_cluster, storage, tmp_path, cleanup):
    max_cost, cost, hold_at = 1.5, 0.05, 5
    held, go = tmp_path / "held-", tmp_path / "go-on"
    task = {**spend_task(tmp_path, cost=cost, reserve=True, delay=0.01), "hold_at": hold_at, "held": str(held), "go": str(go)}
    sup = spending_swarm("survives-a-crash", storage, task)
    cleanup(sup)
    sup.add_handler(kr.BudgetInterruptHandler(max_cost=max_cost))
    actor = budget_actor(ray_cluster, sup.status())
    ref = sup.start()
    # Every child has paid hold_at cycles and waits, mid-run, for `go`: the ledger stands still.
    markers = [Path(f"{held}survives-a-crash%2Fs{i}") for i in range(N_CHILDREN)]
    wait_until(lambda: all(m.exists() for m in markers), "every child to pay its first cycles and wait")
    spent_before = ray.get(actor.snapshot.remote(), timeout=WAIT_S)["spent"]
    assert spent_before == pytest.approx(N_CHILDREN * hold_at * cost, abs=MONEY_TOLERANCE)

    old = sigkill(actor)
    restarted(actor, old, "the budget actor")  # Ray re-ran __init__, which reloads the ledger
    restored = ray.get(actor.snapshot.remote(), timeout=WAIT_S)
    assert restored["spent"] == pytest.approx(spent_before, abs=MONEY_TOLERANCE)
    # The run was going when its budget actor died, and still is: nothing has stopped it.
    status = sup.status()
    assert status["phase"] == "running" and status["interrupted"] is False, status
    go.touch()
    result = ray.get(ref, timeout=WAIT_S)

    # The restarted actor still interrupts its subscriber, the supervisor.
    assert result["status"] == "interrupted", result
    reason = result["interrupt_reason"]
    assert reason is not None and reason.metadata["handler"] == "budget", result
    assert_stopped_by_the_budget(result, max_cost, cost, reserve=True)
    total = math.fsum(child["cost"] for child in result["children"].values())
    # A ledger reset to zero would have let the swarm spend max_cost again on top.
    assert spent_before < total <= max_cost + MONEY_TOLERANCE
    final = ray.get(actor.snapshot.remote(), timeout=WAIT_S)
    assert final["spent"] == pytest.approx(total, abs=MONEY_TOLERANCE), (final, total)
    assert final["spent"] > max_cost - 2 * cost  # the swarm spent the budget, it did not stop early
