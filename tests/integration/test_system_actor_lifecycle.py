"""SYSTEM actors on a real local Ray: where they live, and what the timer keeps across its own restart.

DESIGN "SYSTEM actors": the timer keeps its pending deadlines across a restart
(a run whose timer crashed still times out). That no system actor is ever left
detached in an anonymous namespace is in test_anonymous_namespace.py (a driver
with a Ray of its own).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import ray

import kaizen_ray as kr

from kaizen_ray.runtime.timer import GcsDeadlineStore, get_or_create_timer

from tests._support.ray_agents import Counter
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

WAIT_S = 60.0  # generous: other Ray tests share these two cores

LONG_RUN = {"seed": 1, "goal": 10**9, "delay": 0.02}  # a Counter that would count for years


def timer_pid(timer: Any) -> int:
    return ray.get(timer.__ray_call__.remote(lambda actor: os.getpid()), timeout=WAIT_S)


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
    ray.kill(timer, no_restart=False)  # Ray restarts it, re-running __init__

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

    before = timer_pid(timer)
    ray.kill(timer, no_restart=False)
    wait_until(lambda: timer_pid(timer) != before, "the timer actor to be restarted")
    assert ray.get(timer.stats.remote(), timeout=WAIT_S) == {"pending": 0, "fired": 0, "restored": 0}
