"""Supervisors and their children killed for real: a child's worker SIGKILLed, the supervisor's actor killed.

A child whose worker process dies (SIGKILL: no clean-up, no last checkpoint)
is restarted by its supervisor from its latest durable checkpoint: its cycles
continue from there, none runs twice. A supervisor whose own actor dies still
resolves ``start()``'s ref to a ``"killed"`` result naming its last manifest
and each child's last durable checkpoint. (Both moved here from
tests/integration: test_supervisor_restarts.py, test_supervisor_contract.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
import ray

import kaizen_ray as kr
from kaizen_ray.core.errors import AgentGoneError

from tests._support.ray_agents import child_status, expected_state, wait_for_checkpointed_cycle
from tests._support.waiting import wait_until
from tests.faults._kills import WAIT_S, sigkill
from tests.integration.test_supervisor_contract import counting, gone
from tests.integration.test_supervisor_restarts import assert_one_unbroken_history, restart_stops, spawn

pytestmark = pytest.mark.ray


def test_a_child_whose_worker_is_sigkilled_is_restarted_from_its_checkpoint_not_from_zero(ray_cluster, storage, cleanup):
    tasks = {"victim": (30, 11), "bystander": (30, 13)}
    children = [counting(storage, n, goal, seed, delay=0.05) for n, (goal, seed) in tasks.items()]
    sup = spawn("sk", storage, children, max_restarts=3, restart_window_s=60.0)
    cleanup(sup)
    ref = sup.start()
    victim, before = wait_for_checkpointed_cycle(ray_cluster, "sk/victim", 3)
    assert before["cycle"] < 30 and before["agent"] == "sk/victim"
    sigkill(victim)

    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "completed", result
    assert result["restarts"] == 1
    for name, (goal, seed) in tasks.items():
        child = result["children"][name]
        assert child["status"] == "completed" and child["cycles"] == goal, child
        assert child["state"] == expected_state({"goal": goal, "seed": seed, "delay": 0.05}, f"sk/{name}")
    # Resumed, not restarted from 0: one parent chain through cycles 1..30, no cycle run twice.
    assert_one_unbroken_history(storage, "sk/victim", 30)
    assert restart_stops(assert_one_unbroken_history(storage, "sk/bystander", 30)) == []


def test_a_dead_supervisor_still_resolves_start_to_a_killed_result_with_each_childs_checkpoint(ray_cluster, storage, cleanup):
    names = ("w0", "w1")
    sup = kr.Supervisor.spawn("doomed", children=[counting(storage, n, 100_000, i) for i, n in enumerate(names)])
    cleanup(sup)
    # A first run, paused, leaves a manifest behind.
    ref = sup.start()
    for n in names:
        first = f"doomed/{n}'s first checkpoint"
        wait_until(lambda n=n: (s := child_status(ray_cluster, f"doomed/{n}")) and s["checkpoint_id"], first)
    sup.request_interrupt("programmatic", "graceful", "pause")
    paused = ray.get(ref, timeout=WAIT_S)
    assert paused["status"] == "interrupted"
    # The second run resumes from it; each child checkpoints past its pause, then the supervisor dies.
    ref = sup.start(resume_from_checkpoint=paused["checkpoint_id"])
    reached = {}
    for n in names:
        past = paused["children"][n]["cycles"] + 2

        def checkpointed_past(n: str = n, past: int = past) -> dict[str, Any] | None:
            status = child_status(ray_cluster, f"doomed/{n}")
            return status if status and status["cycle"] >= past and status["checkpoint_id"] else None

        reached[n] = wait_until(checkpointed_past, f"doomed/{n} past cycle {past}")["cycle"]
    ray.kill(sup.actor, no_restart=True)

    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "killed" and result["agent"] == "doomed"
    assert result["checkpoint_id"] == paused["checkpoint_id"]  # its last manifest
    assert isinstance(result["error"], AgentGoneError) and "killed by `ray.kill`" in str(result["error"])
    assert set(result["children"]) == set(names)
    for n in names:
        child = result["children"][n]
        assert child["status"] == "killed" and child["agent"] == f"doomed/{n}"
        checkpoint = kr.load_checkpoint(child["checkpoint_id"], storage)
        assert checkpoint.agent == f"doomed/{n}"
        assert (checkpoint.cycle, checkpoint.state) == (child["cycles"], child["state"])
        assert checkpoint.cycle >= reached[n] - 1  # the newest durable one: at most the cycle in flight is lost
        # The newest on disk when the result was made. A write-behind save the child
        # sent just before it died can still land after that (the store takes it
        # from the dead child's last call), so at most that one is newer now.
        newest = max(info.cycle for info in kr.list_checkpoints(storage, agent=f"doomed/{n}"))
        assert checkpoint.cycle >= newest - 1, (checkpoint.cycle, newest)
        wait_until(lambda n=n: gone(ray_cluster, f"doomed/{n}"), f"doomed/{n} to die with its supervisor")
