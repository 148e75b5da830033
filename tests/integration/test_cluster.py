"""On a two-node cluster: a timeout and a budget reach an agent on another node; a lost node is reported.

Its own ``ray.cluster_utils.Cluster`` (the module fixture's single node is not
the point here). Both nodes share this machine's file system, as a real
cluster shares its storage.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import uuid

import pytest
import ray
import ray.cloudpickle
from ray.cluster_utils import Cluster

import kaizen_ray as kr

import _waiting  # noqa: E402 - shared helper beside this file (pytest puts this folder on sys.path)

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

wait_until = functools.partial(_waiting.wait_until, timeout=90.0)


class Spender(kr.BaseAutonomousAgent):
    """Charges 0.1 per 50 ms cycle, for ever."""

    def initial_state(self, task):
        return {"n": 0}

    async def step(self, state, ctx):
        await asyncio.sleep(0.05)
        ctx.charge(0.1)
        return kr.StepResult({"n": state["n"] + 1})


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
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
    timed = Spender.spawn(config=kr.AutonomousConfig(storage_path=storage), name="timed", num_cpus=0, resources={"node_b": 0.1})
    budgeted = Spender.spawn(config=kr.AutonomousConfig(storage_path=storage), name="budgeted", num_cpus=0, resources={"node_b": 0.1})
    assert on_node_b(timed) and on_node_b(budgeted)
    timed.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0))
    budgeted.add_handler(kr.BudgetInterruptHandler(max_cost=0.5))
    first, second = ray.get([timed.start(), budgeted.start()], timeout=120)
    assert first["status"] == "interrupted" and first["interrupt_reason"].metadata["handler"] == "timeout"
    assert second["status"] == "interrupted" and second["interrupt_reason"].metadata["handler"] == "budget"
    assert second["cost"] == pytest.approx(0.5)  # settled before the next cycle: no overshoot at 0.1 a cycle
    for result in (first, second):
        assert kr.load_checkpoint(result["checkpoint_id"], storage_path=storage).status == "interrupted"


def test_an_agent_whose_node_is_lost_is_reported_killed_with_its_checkpoint(cluster, storage):
    c, remote = cluster
    agent = Spender.spawn(config=kr.AutonomousConfig(storage_path=storage), name="doomed", num_cpus=0, resources={"node_b": 0.1})
    assert on_node_b(agent)
    ref = agent.start()
    wait_until(lambda: len(kr.list_checkpoints(storage, agent="doomed")) >= 3, "three checkpoints of the doomed agent")
    c.remove_node(remote)
    result = ray.get(ref, timeout=120)  # the watcher lives on the head: it reports, no bare ActorDiedError
    assert result["status"] == "killed" and result["error"] is not None
    ckpt = kr.load_checkpoint(result["checkpoint_id"], storage_path=storage)
    assert ckpt.agent == "doomed" and ckpt.cycle == result["cycles"] >= 3
