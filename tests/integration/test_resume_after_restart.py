"""Resume from the checkpoint on disk after Ray itself went away.

This module runs its own Ray lifecycle (two clusters, one after the other), so
it is ``own_ray``: the shared head is stopped first, and nothing of the first
cluster (actors, store, objects) can help the second one.
"""

from __future__ import annotations

import uuid

import pytest
import ray

import kaizen_ray as kr

from tests._support.ray_agents import Counter, counting, expected_state

pytestmark = [pytest.mark.ray, pytest.mark.own_ray, pytest.mark.usefixtures("own_ray")]


def start_ray(namespace: str) -> None:
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=namespace, log_to_driver=False)


def test_resume_from_the_checkpoint_on_disk_after_ray_restarts(storage):
    namespace = f"resume-{uuid.uuid4().hex[:8]}"
    task = counting(6)
    try:
        start_ray(namespace)
        first = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage, max_cycles=3), name="counter")
        stopped = first.run(task)
        assert stopped["status"] == "completed" and stopped["cycles"] == 3 and stopped["state"]["n"] == 3
        ray.shutdown()

        start_ray(namespace)  # a fresh cluster: a new store that has never seen these checkpoints
        second = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="counter")
        resumed = second.run(resume_from_checkpoint="latest")
        by_id = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="counter-by-id").run(
            resume_from_checkpoint=stopped["checkpoint_id"]
        )
    finally:
        ray.shutdown()

    assert resumed["status"] == "completed" and resumed["output"] == 6 and resumed["cycles"] == 6
    # The saved state and cycle count carried on: cycles 4..6 ran after the restart, 1..3 before it,
    # each once and numbered on (the counter's acc folds in every cycle's number, in order).
    assert resumed["state"] == expected_state(task, "counter")
    assert by_id["status"] == "completed" and by_id["state"] == {**expected_state(task, "counter"), "agent": "counter-by-id"}
    final = kr.load_checkpoint(resumed["checkpoint_id"], storage)
    assert final.status == kr.CheckpointStatus.COMPLETED and final.cycle == 6
    # The resumed run's first checkpoint descends from the one the first cluster flushed.
    history = {info.id: info for info in kr.list_checkpoints(storage, agent="counter")}
    first_after_restart = next(info for info in history.values() if info.cycle == 4)
    assert first_after_restart.parent_id == stopped["checkpoint_id"]
