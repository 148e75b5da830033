"""Supervisor restarts on a real local Ray: kills from outside, strategies, limits, policies.

A child whose worker process is SIGKILLed is in the fault tier (tests/faults/test_supervisor_faults.py).

Children are deterministic counters: the final state of a child that was
killed and restarted from its checkpoint must equal the state computed by
replaying the same transition without any disturbance.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr

from tests._support.ray_agents import Counter, expected_state, wait_for_checkpointed_cycle

pytestmark = pytest.mark.ray

# pytest put this folder on the driver's sys.path only: ship this module's
# agent classes to the workers by value, not as an import they cannot do.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 90.0  # generous: other helpers load this 2-core machine too


class Broken(kr.BaseAutonomousAgent):
    """Its step always raises."""

    async def step(self, state: Any, ctx: Any) -> kr.StepResult:
        raise RuntimeError(f"broken step at cycle {ctx.cycle}")


def counting(storage: Any, name: str, goal: int, seed: int, *, delay: float = 0.05, restart: str = "permanent") -> kr.ChildSpec:
    config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
    return kr.ChildSpec(Counter, name=name, config=config, task={"goal": goal, "seed": seed, "delay": delay}, restart=restart)


def spawn(name: str, storage: Any, children: list[kr.ChildSpec], **flags: Any) -> Any:
    config = kr.SupervisorConfig(storage_path=storage, **flags)
    return kr.Supervisor.spawn(name, children=children, config=config)


def history(storage: Any, agent: str) -> list[kr.Checkpoint]:
    return [kr.load_checkpoint(info.id, storage) for info in kr.list_checkpoints(storage, agent=agent)]


def assert_one_unbroken_history(storage: Any, agent: str, goal: int) -> list[kr.Checkpoint]:
    """Every checkpoint of ``agent`` lies on one parent chain through cycles 1..goal, none run twice.

    A restart from scratch would repeat early cycles (and start a second root);
    a restart from an older checkpoint would repeat the cycles after it. The
    one checkpoint allowed to share its parent's cycle is a stop's (interrupted).
    """
    checkpoints = history(storage, agent)
    by_id = {c.id: c for c in checkpoints}
    final = max(checkpoints, key=lambda c: (c.cycle, c.created_at))
    chain, node = [], final
    while node is not None:
        chain.append(node)
        node = by_id[node.parent_id] if node.parent_id is not None else None
    chain.reverse()
    assert {c.id for c in chain} == set(by_id), "a checkpoint off the chain: some cycles ran twice"
    assert chain[0].cycle == 1 and final.cycle == goal
    for parent, child in zip(chain, chain[1:], strict=False):
        step = child.cycle - parent.cycle
        assert step == 1 or (step == 0 and child.status == kr.CheckpointStatus.INTERRUPTED), (parent, child)
    return checkpoints


def restart_stops(checkpoints: list[kr.Checkpoint]) -> list[kr.Checkpoint]:
    """The checkpoints written because the supervisor stopped this child to restart it."""
    return [
        c for c in checkpoints
        if c.status == kr.CheckpointStatus.INTERRUPTED
        and c.interrupt_reason is not None
        and c.interrupt_reason.metadata.get("cause") == "restart"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "restarted_siblings"),
    [("one_for_all", {"a", "c"}), ("rest_for_one", {"c"})],
)
def test_strategy_restarts_the_right_children(ray_cluster, storage, cleanup, strategy, restarted_siblings):
    sup_name = f"kr-{strategy.replace('_', '-')}"
    goal = 60  # long enough that a and c are still running when b (started with them) reaches cycle 3
    seeds = {"a": 3, "b": 5, "c": 9}
    sup = spawn(
        sup_name, storage, [counting(storage, n, goal, s) for n, s in seeds.items()],
        strategy=strategy, max_restarts=3, restart_window_s=60.0,
    )  # fmt: skip
    cleanup(sup)
    ref = sup.start()
    middle, _ = wait_for_checkpointed_cycle(ray_cluster, f"{sup_name}/b", 3)
    for sibling in ("a", "c"):  # they must still be running for the strategy to matter
        _, status = wait_for_checkpointed_cycle(ray_cluster, f"{sup_name}/{sibling}", 1)
        assert status["phase"] == "running" and status["cycle"] < goal
    ray.kill(middle, no_restart=True)

    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "completed", result
    assert result["restarts"] == 1  # one restart event, whatever the group size
    for name, seed in seeds.items():
        child = result["children"][name]
        assert child["status"] == "completed" and child["cycles"] == goal
        assert child["state"] == expected_state({"goal": goal, "seed": seed, "delay": 0.05}, f"{sup_name}/{name}")
        stops = restart_stops(assert_one_unbroken_history(storage, f"{sup_name}/{name}", goal))
        # A sibling taken down for the restart checkpoints its stop, then resumes from it;
        # the killed child itself left no stop checkpoint; a child outside the group none.
        assert len(stops) == (1 if name in restarted_siblings else 0), (name, stops)
        if stops:
            assert stops[0].interrupt_reason.mode == kr.InterruptMode.IMMEDIATE
            assert strategy in stops[0].interrupt_reason.message


def test_past_max_restarts_the_supervisor_stops_the_rest_gracefully_and_fails(ray_cluster, storage, cleanup):
    bad = kr.ChildSpec(Broken, name="bad", config=kr.AutonomousConfig(storage_path=storage), restart="permanent")
    steady = counting(storage, "steady", 100_000, 1)
    sup = spawn("kr-limit", storage, [bad, steady], max_restarts=1, restart_window_s=60.0)
    cleanup(sup)

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "failed"
    assert result["restarts"] == 1  # the one allowed; the second failure is one too many
    assert "'bad'" in result["error"] and "failed" in result["error"], result["error"]
    failed = result["children"]["bad"]
    assert failed["status"] == "failed" and isinstance(failed["error"], RuntimeError)
    stopped = result["children"]["steady"]
    assert stopped["status"] == "interrupted" and stopped["mode"] == "graceful"
    reason = stopped["interrupt_reason"]
    assert reason.source == kr.InterruptSource.SYSTEM and reason.mode == kr.InterruptMode.GRACEFUL
    assert reason.metadata["handler"] == "escalation"
    assert reason.metadata["propagated_from"] == "kr-limit"
    assert 0 <= stopped["cycles"] < 100_000
    checkpoint = kr.load_checkpoint(stopped["checkpoint_id"], storage)
    assert checkpoint.status == kr.CheckpointStatus.INTERRUPTED and checkpoint.cycle == stopped["cycles"]


def test_crashed_temporary_child_is_not_restarted(ray_cluster, storage, cleanup):
    sup = spawn(
        "kr-temp", storage,
        [counting(storage, "temp", 1_000, 2, restart="temporary"), counting(storage, "other", 25, 4)],
        max_restarts=3, restart_window_s=60.0,
    )  # fmt: skip
    cleanup(sup)
    ref = sup.start()
    temp, before = wait_for_checkpointed_cycle(ray_cluster, "kr-temp/temp", 2)
    ray.kill(temp, no_restart=True)

    result = ray.get(ref, timeout=WAIT_S)

    assert result["restarts"] == 0
    crashed = result["children"]["temp"]
    # Died on its own (a crash, not a stop): Ray's own error, kept by type.
    assert crashed["status"] == "killed" and isinstance(crashed["error"], ray.exceptions.RayActorError), crashed["error"]
    assert before["cycle"] <= crashed["cycles"] < 1_000  # the state of its last flushed checkpoint
    with pytest.raises(ValueError):  # no new actor took its name
        ray.get_actor("kr-temp/temp", namespace=ray_cluster)
    assert max(c.cycle for c in history(storage, "kr-temp/temp")) == crashed["cycles"]
    other = result["children"]["other"]
    assert other["status"] == "completed"
    assert other["state"] == expected_state({"goal": 25, "seed": 4, "delay": 0.05}, "kr-temp/other")
