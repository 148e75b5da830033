"""On a two-node cluster: a timeout and a budget reach an agent on another node; a lost node is reported.

Its own ``ray.cluster_utils.Cluster`` (the shared single-node head is not the
point here, and is stopped first: ``own_ray``). Both nodes share this
machine's file system, as a real cluster shares its storage.
"""

from __future__ import annotations

import uuid

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.exceptions import RayActorError

import kaizen_ray as kr

from tests._support.ray_agents import Spender
from tests._support.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]

SPEND = {"cost": 0.1, "delay": 0.05}  # 0.1 per 50 ms cycle, for ever


@pytest.fixture(scope="module")
def cluster(own_ray):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    remote = c.add_node(num_cpus=1, resources={"node_b": 1})
    ray.init(address=c.address, namespace=f"cluster-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        yield c, remote
    finally:
        ray.shutdown()
        c.shutdown()


def on_node_b(handle: kr.AgentHandle) -> bool:
    return ray.get(handle.actor.describe.remote())["node_id"] != ray.get_runtime_context().get_node_id()


def test_timeout_and_budget_reach_an_agent_on_another_node(cluster, storage):
    timed = Spender.spawn(config=kr.AutonomousConfig(storage_path=storage), name="timed", actor_options={"num_cpus": 0, "resources": {"node_b": 0.1}})
    budgeted = Spender.spawn(config=kr.AutonomousConfig(storage_path=storage), name="budgeted", actor_options={"num_cpus": 0, "resources": {"node_b": 0.1}})
    assert on_node_b(timed) and on_node_b(budgeted)
    timed.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0))
    budgeted.add_handler(kr.BudgetInterruptHandler(max_cost=0.5))
    first, second = ray.get([timed.start(SPEND), budgeted.start(SPEND)], timeout=90)
    assert first["status"] == "interrupted" and first["interrupt_reason"].metadata["handler"] == "timeout"
    assert second["status"] == "interrupted" and second["interrupt_reason"].metadata["handler"] == "budget"
    assert second["cost"] == pytest.approx(0.5)  # settled before the next cycle: no overshoot at 0.1 a cycle
    for result in (first, second):
        assert kr.load_checkpoint(result["checkpoint_id"], storage_path=storage).status == "interrupted"


def test_an_agent_whose_node_is_lost_is_reported_killed_with_its_checkpoint(cluster, storage):
    c, remote = cluster
    agent = Spender.spawn(config=kr.AutonomousConfig(storage_path=storage), name="doomed", actor_options={"num_cpus": 0, "resources": {"node_b": 0.1}})
    assert on_node_b(agent)
    ref = agent.start(SPEND)
    wait_until(lambda: len(kr.list_checkpoints(storage, agent="doomed")) >= 3, "three checkpoints of the doomed agent", timeout=90)
    c.remove_node(remote)
    result = ray.get(ref, timeout=90)  # the watcher lives on the head: it reports, no bare ActorDiedError
    # Died with its node: Ray's own error, kept by type for the caller to tell a crash from a kill.
    assert result["status"] == "killed" and isinstance(result["error"], RayActorError), result["error"]
    ckpt = kr.load_checkpoint(result["checkpoint_id"], storage_path=storage)
    assert ckpt.agent == "doomed" and ckpt.cycle == result["cycles"] >= 3
