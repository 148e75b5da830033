"""A node is lost: its supervised child restarts on another node from checkpoints on shared S3 storage.

Its own ``ray.cluster_utils.Cluster`` (``own_ray``: the shared head is stopped
first): a head with no custom resources, where each supervisor is pinned, and
worker nodes that each offer ``{"worker": 1}``, so a child asking for it may
run on any of them. Checkpoints go to ``s3://`` on a loopback moto_server, the
only storage the nodes share: the job's ``runtime_env`` carries the ``AWS_*``
variables to every worker. No local folder is involved: the driver runs in an
empty temp folder, which must still be empty after each test.

Ray places the zero-CPU checkpoint store actor on any node (here, mostly the
workers), so each test places it itself, for the case it is about: on the
head, which survives (hard node affinity); or on the child's node, lost with
it, by a ``{"store": ...}`` resource only worker nodes offer, so that Ray can
restart it on a worker added later (it does, empty: whatever it had not
flushed is gone, and the child resumes from what reached S3). Soft node
affinity would do neither reliably: Ray spilled it to the head in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import kaizen_ray as kr
from kaizen_ray.runtime.checkpoints import STORE_NAME, CheckpointStore
from tests._support.ray_agents import Counter, child_status, expected_state, wait_for_checkpointed_cycle
from tests._support.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.own_ray]

WAIT_S = 90.0  # every wait below, each well inside pytest's 180 s
GOAL, SEED, DELAY = 240, 7, 0.05  # ~12 s of cycles at least: still running when its node goes
TASK = {"goal": GOAL, "seed": SEED, "delay": DELAY}


@pytest.fixture(scope="module")
def cluster(own_ray, s3):
    """A head (1 CPU, no custom resources) and two worker nodes; the driver's job carries the S3 variables."""
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for name in ("node_a", "node_b"):
            c.add_node(num_cpus=1, resources={name: 1, "worker": 1, "store": 1})
        ray.init(
            address=c.address, namespace=f"nodeloss-{uuid.uuid4().hex[:6]}", log_to_driver=False,
            configure_logging=False, runtime_env={"env_vars": dict(s3.env)},
        )  # fmt: skip
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> Iterator[Path]:
    """The driver's cwd for the test: a relative or default-local path written in the driver lands here."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert list(cwd.iterdir()) == []  # no local path was involved


@pytest.fixture
def uri(s3) -> str:
    return f"s3://{s3.bucket}/{uuid.uuid4().hex[:8]}/ckpts"


def _node_id(actor: Any) -> str:
    return ray.get(actor.describe.remote(), timeout=30)["node_id"]


def _worker(cluster: Cluster, node_id: str) -> Any:
    return next(node for node in cluster.worker_nodes if node.node_id == node_id)


def _actor_table(actor: Any) -> dict[str, Any]:
    """The GCS's entry for ``actor`` (its node, state, restarts): the store has no ``describe()`` to ask."""
    return ray._private.state.actors(actor._actor_id.hex())


def _store_on(namespace: str, **placement: Any) -> Any:
    """The checkpoint store of ``namespace``, placed by ``placement`` (Ray actor options) before anything else makes it."""
    options = {"name": STORE_NAME, "namespace": namespace, "lifetime": "detached", **placement}
    store = CheckpointStore.options(**options).remote()
    ray.get(store.ping.remote(), timeout=WAIT_S)
    return store


def _spawn(name: str, namespace: str, uri: str) -> kr.SupervisorHandle:
    """A supervisor pinned to the head over one permanent counter that checkpoints every cycle to ``uri``."""
    child = kr.ChildSpec(
        Counter, name="worker", restart="permanent", task=TASK,
        config=kr.AutonomousConfig(storage_path=uri, checkpoint_frequency=1),
        actor_options={"resources": {"worker": 1}},  # any worker node will do
    )  # fmt: skip
    head = ray.get_runtime_context().get_node_id()  # the driver's node
    sup = kr.Supervisor.spawn(
        name, children=[child], strategy="one_for_one", max_restarts=3, restart_window_s=120.0, namespace=namespace,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False),
    )  # fmt: skip
    assert sup.storage_path == uri  # the manifest goes beside its child: on S3 too
    assert _node_id(sup.actor) == head
    return sup


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


def _assert_resumed_and_completed(result: dict[str, Any], uri: str, sup_name: str) -> None:
    """Completed after a restart, and on S3 one chain of the child's checkpoints, cycle 1 to GOAL, none run twice.

    A restart from 0 would write a second cycle-1 checkpoint with no parent;
    one from an older checkpoint would write its later cycles again.
    """
    assert result["status"] == "completed", result
    assert result["restarts"] >= 1
    done = result["children"]["worker"]
    assert done["status"] == "completed" and done["cycles"] == GOAL
    assert done["state"] == expected_state(TASK, f"{sup_name}/worker")
    history = [kr.load_checkpoint(i.id, storage_path=uri) for i in kr.list_checkpoints(uri, agent=f"{sup_name}/worker")]
    assert sorted(c.cycle for c in history) == list(range(1, GOAL + 1)), sorted(c.cycle for c in history)
    assert [c.cycle for c in history if c.parent_id is None] == [1]
    ids = {c.id for c in history}
    assert all(c.parent_id in ids for c in history if c.parent_id is not None)
    manifest = kr.load_checkpoint(result["checkpoint_id"], storage_path=uri)
    assert manifest.agent == sup_name and manifest.state["children"]["worker"] == done["checkpoint_id"]


def test_a_child_on_a_lost_node_restarts_on_the_other_node_from_its_s3_checkpoint(cluster, uri, empty_cwd, cleanup):
    head = ray.get_runtime_context().get_node_id()
    namespace = f"keep-{uuid.uuid4().hex[:6]}"
    store = _store_on(namespace, scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
    assert _actor_table(store)["Address"]["NodeID"] == head  # it survives: every periodic checkpoint reaches S3
    sup = _spawn("nl", namespace, uri)
    cleanup(sup)  # its child holds a worker's {"worker": 1} until the supervisor goes
    ref = sup.start()

    victim, before = wait_for_checkpointed_cycle(namespace, "nl/worker", 3, timeout=WAIT_S)
    assert before["cycle"] < GOAL
    lost = _node_id(victim)
    survivors = [n.node_id for n in cluster.worker_nodes if n.node_id != lost]
    assert len(survivors) == 1 and lost != head  # it ran on one of the two workers
    cluster.remove_node(_worker(cluster, lost))

    node, after = wait_until(
        lambda: _replacement(namespace, "nl/worker", victim), "a new actor of nl/worker", timeout=WAIT_S, poll=0.2
    )
    assert node == survivors[0] and after["agent"] == "nl/worker"
    _assert_resumed_and_completed(ray.get(ref, timeout=WAIT_S), uri, "nl")


def test_a_child_and_the_checkpoint_store_lost_with_one_node_resume_from_what_reached_s3(cluster, uri, empty_cwd, cleanup):
    # One worker node is left from the test above (or both, run alone): the child goes to the first, with the store.
    first, *extra = sorted(cluster.worker_nodes, key=lambda n: n.node_id)
    for node in extra:
        cluster.remove_node(node)
    namespace = f"lose-{uuid.uuid4().hex[:6]}"
    store = _store_on(namespace, resources={"store": 0.01})  # only workers offer it: on first, restartable on second
    assert _actor_table(store)["Address"]["NodeID"] == first.node_id
    sup = _spawn("nl2", namespace, uri)
    cleanup(sup)
    ref = sup.start()

    victim, before = wait_for_checkpointed_cycle(namespace, "nl2/worker", 3, timeout=WAIT_S)
    assert before["cycle"] < GOAL and _node_id(victim) == first.node_id
    second = cluster.add_node(num_cpus=1, resources={"node_c": 1, "worker": 1, "store": 1})  # where the child can go next
    cluster.wait_for_nodes()
    cluster.remove_node(first)

    node, _ = wait_until(
        lambda: _replacement(namespace, "nl2/worker", victim), "a new actor of nl2/worker", timeout=WAIT_S, poll=0.2
    )
    assert node == second.node_id
    _assert_resumed_and_completed(ray.get(ref, timeout=WAIT_S), uri, "nl2")
    table = _actor_table(store)  # Ray restarted the store elsewhere: the run went on with an empty one
    assert table["NumRestarts"] >= 1 and table["Address"]["NodeID"] != first.node_id, table
