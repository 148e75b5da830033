"""A node is lost: its supervised child restarts on the other node from checkpoints on shared S3 storage.

Its own ``ray.cluster_utils.Cluster`` (``own_ray``: the shared head is stopped
first): a head with no custom resources, where the supervisor is pinned, and
two worker nodes that both offer ``{"worker": 1}``, so the child may run on
either. Checkpoints go to ``s3://`` on a loopback moto_server, the only
storage the nodes share: the job's ``runtime_env`` carries the ``AWS_*``
variables to every worker. No local folder is involved: the driver runs in an
empty temp folder, which must still be empty at the end.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import kaizen_ray as kr
from tests._support.moto import moto_s3
from tests._support.ray_agents import Counter, child_status, expected_state, wait_for_checkpointed_cycle
from tests._support.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]

WAIT_S = 90.0  # every wait below, each well inside pytest's 180 s
GOAL, SEED, DELAY = 240, 7, 0.05  # ~12 s of cycles at least: still running when its node goes


@pytest.fixture(scope="module")
def s3():
    """A moto_server, its ``AWS_*`` variables set in the driver too (it lists the bucket without Ray)."""
    with moto_s3() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env.items():
            mp.setenv(key, value)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        yield server


def _node_id(actor: Any) -> str:
    return ray.get(actor.describe.remote(), timeout=30)["node_id"]


def _replacement(namespace: str, full_name: str, old: Any) -> tuple[str, dict[str, Any]] | None:
    """The node and status of the actor now named ``full_name``, once it is another actor than ``old``."""
    status = child_status(namespace, full_name)
    if status is None:
        return None
    try:
        actor = ray.get_actor(full_name, namespace=namespace)
        return None if actor == old else (_node_id(actor), status)
    except (ValueError, ray.exceptions.RayActorError):  # replaced again meanwhile
        return None


def _history(uri: str, agent: str) -> list[kr.Checkpoint]:
    return [kr.load_checkpoint(info.id, storage_path=uri) for info in kr.list_checkpoints(uri, agent=agent)]


def test_a_child_on_a_lost_node_restarts_on_the_other_node_from_its_s3_checkpoint(own_ray, s3, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # anything written to a relative or default-local path in the driver shows up here
    uri = f"s3://{s3.bucket}/{uuid.uuid4().hex[:8]}/ckpts"
    namespace = f"nodeloss-{uuid.uuid4().hex[:6]}"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        workers = {
            "a": cluster.add_node(num_cpus=1, resources={"node_a": 1, "worker": 1}),
            "b": cluster.add_node(num_cpus=1, resources={"node_b": 1, "worker": 1}),
        }
        ray.init(
            address=cluster.address, namespace=namespace, log_to_driver=False, configure_logging=False,
            runtime_env={"env_vars": dict(s3.env)},
        )  # fmt: skip
        cluster.wait_for_nodes()
        head = ray.get_runtime_context().get_node_id()

        child = kr.ChildSpec(
            Counter, name="worker", restart="permanent",
            config=kr.AutonomousConfig(storage_path=uri, checkpoint_frequency=1),
            task={"goal": GOAL, "seed": SEED, "delay": DELAY},
            actor_options={"resources": {"worker": 1}},
        )  # fmt: skip
        sup = kr.Supervisor.spawn(
            "nl", children=[child], strategy="one_for_one", max_restarts=3, restart_window_s=120.0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False),
        )  # fmt: skip
        assert sup.storage_path == uri  # the manifest goes beside its child: on S3 too
        assert _node_id(sup.actor) == head
        ref = sup.start()

        victim, before = wait_for_checkpointed_cycle(namespace, "nl/worker", 3, timeout=WAIT_S)
        assert before["cycle"] < GOAL
        lost = _node_id(victim)
        by_id = {node.node_id: key for key, node in workers.items()}
        assert lost in by_id, (lost, by_id, head)  # on a worker node, never the head
        survivor = workers["b" if by_id[lost] == "a" else "a"].node_id

        cluster.remove_node(workers[by_id[lost]])

        node, after = wait_until(
            lambda: _replacement(namespace, "nl/worker", victim), "a new actor of nl/worker", timeout=WAIT_S, poll=0.2
        )
        assert node == survivor and after["agent"] == "nl/worker"
        result = ray.get(ref, timeout=WAIT_S)

        assert result["status"] == "completed", result
        assert result["restarts"] >= 1
        done = result["children"]["worker"]
        assert done["status"] == "completed" and done["cycles"] == GOAL
        assert done["state"] == expected_state({"goal": GOAL, "seed": SEED, "delay": DELAY}, "nl/worker")
        # Resumed, not restarted from 0: on S3, one chain from cycle 1 to GOAL, no cycle run twice
        # (a fresh start would write a second cycle-1 checkpoint with no parent).
        history = _history(uri, "nl/worker")
        assert sorted(c.cycle for c in history) == list(range(1, GOAL + 1)), sorted(c.cycle for c in history)
        assert [c.cycle for c in history if c.parent_id is None] == [1]
        ids = {c.id for c in history}
        assert all(c.parent_id in ids for c in history if c.parent_id is not None)
        manifest = kr.load_checkpoint(result["checkpoint_id"], storage_path=uri)
        assert manifest.agent == "nl" and manifest.state["children"]["worker"] == done["checkpoint_id"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert list(Path(cwd).iterdir()) == []  # no local path was involved
