"""Supervisor interrupts and manifests on a real local Ray.

Fan-out is checked structurally (children that acknowledge only once their
siblings have would stall a one-by-one forwarding), nesting by the ``propagated_from`` chain, level-triggering
by interrupting before any child exists, and the manifest by resuming from it.
Restarts are in test_supervisor_restarts.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
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
SIBLINGS = 3
GIVE_UP_S = 20.0  # how long a child waits for its siblings before it gives up (and says so)


def ack_and_wait_for_siblings(folder: Path, name: str) -> None:
    """Note that ``name`` accepted, then wait (bounded) until all its siblings have too; note giving up."""
    folder.mkdir(exist_ok=True)
    (folder / f"ack-{name.replace('/', '%2F')}").touch()
    give_up = time.monotonic() + GIVE_UP_S
    while len(list(folder.glob("ack-*"))) < SIBLINGS:
        if time.monotonic() > give_up:
            (folder / f"gave-up-{name.replace('/', '%2F')}").touch()
            return
        time.sleep(0.005)


class AcksWithItsSiblings(Counter):
    """A counter whose manager accepts an interrupt only once all its siblings have accepted it too.

    The listener runs inside ``request_interrupt`` on the actor's control
    thread, so whoever waits for this child's reply waits for its siblings.
    Forwarding to one child after the other, each waiting for the reply,
    stalls the first until it gives up (leaving a ``gave-up-`` file behind);
    forwarding to all at once, each sees its siblings' acks at once.
    """

    def __init__(self, config: Any = None, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        acks = Path(self.config.storage_path).parent / "acks"
        self.interrupt_manager.add_listener(lambda reason, mode: ack_and_wait_for_siblings(acks, self.name))


def counting(storage: Any, name: str, goal: int, seed: int, *, cls: type = Counter, delay: float = 0.05) -> kr.ChildSpec:
    config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
    return kr.ChildSpec(cls, name=name, config=config, task={"goal": goal, "seed": seed, "delay": delay})


def spawn(name: str, storage: Any, children: list[kr.ChildSpec], **flags: Any) -> Any:
    return kr.Supervisor.spawn(name, children=children, config=kr.SupervisorConfig(storage_path=storage, **flags))


def test_interrupt_fans_out_to_all_children_concurrently(ray_cluster, storage, cleanup):
    sup = spawn("fan", storage, [counting(storage, f"w{i}", 10_000, i + 1, cls=AcksWithItsSiblings) for i in range(SIBLINGS)])
    cleanup(sup)
    ref = sup.start()
    for i in range(3):
        wait_for_checkpointed_cycle(ray_cluster, f"fan/w{i}", 1)

    assert sup.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "fan out") is True
    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "interrupted"
    reasons = {name: child["interrupt_reason"] for name, child in result["children"].items()}
    for name, reason in reasons.items():
        assert result["children"][name]["status"] == "interrupted"
        assert reason.message == "fan out" and reason.source == kr.InterruptSource.PROGRAMMATIC
        assert reason.metadata["propagated_from"] == "fan"
    # Each child accepted while its siblings were being asked too: nobody gave up waiting for them.
    acks = storage.parent / "acks"
    assert sorted(p.name for p in acks.iterdir()) == [f"ack-fan%2Fw{i}" for i in range(SIBLINGS)]


def test_interrupt_travels_through_nested_supervisors(ray_cluster, storage, cleanup):
    outer = spawn("outer", storage, [counting(storage, "x", 10_000, 1)])
    cleanup(outer)
    inner = spawn("inner", storage, [counting(storage, f"y{i}", 10_000, i + 2) for i in range(2)])
    cleanup(inner)
    outer.interrupt_manager.add_child(inner.interrupt_manager)
    outer_ref, inner_ref = outer.start(), inner.start()
    for full_name in ("outer/x", "inner/y0", "inner/y1"):
        wait_for_checkpointed_cycle(ray_cluster, full_name, 1)

    assert outer.request_interrupt(kr.InterruptSource.USER, kr.InterruptMode.GRACEFUL, "stop the tree") is True
    outer_result, inner_result = ray.get([outer_ref, inner_ref], timeout=WAIT_S)

    assert outer_result["status"] == inner_result["status"] == "interrupted"
    assert outer_result["children"]["x"]["interrupt_reason"].metadata["propagated_from"] == "outer"
    assert inner_result["interrupt_reason"].metadata["propagated_from"] == "outer"
    for name in ("y0", "y1"):
        child = inner_result["children"][name]
        assert child["status"] == "interrupted"
        reason = child["interrupt_reason"]
        assert (reason.source, reason.message) == (kr.InterruptSource.USER, "stop the tree")
        assert reason.metadata["propagated_from"] == "inner"


def test_manifest_names_every_child_checkpoint_and_resuming_it_resumes_every_child(ray_cluster, storage, cleanup):
    tasks = {"w0": {"goal": 40, "seed": 5, "delay": 0.05}, "w1": {"goal": 40, "seed": 8, "delay": 0.05}}
    specs = [kr.ChildSpec(Counter, name=n, config=kr.AutonomousConfig(storage_path=storage), task=t) for n, t in tasks.items()]
    sup = spawn("mf", storage, specs)
    cleanup(sup)
    ref = sup.start()
    for name in tasks:
        wait_for_checkpointed_cycle(ray_cluster, f"mf/{name}", 3)
    sup.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "pause")
    paused = ray.get(ref, timeout=WAIT_S)
    assert paused["status"] == "interrupted"

    manifest = kr.load_checkpoint(paused["checkpoint_id"], storage)
    assert manifest.agent == "mf" and manifest.metadata["kind"] == "manifest"
    assert manifest.state["children"] == {name: paused["children"][name]["checkpoint_id"] for name in tasks}
    at_pause = {}
    for name, checkpoint_id in manifest.state["children"].items():
        child_checkpoint = kr.load_checkpoint(checkpoint_id, storage)
        assert child_checkpoint.agent == f"mf/{name}"
        assert child_checkpoint.status == kr.CheckpointStatus.INTERRUPTED
        assert 3 <= child_checkpoint.cycle == paused["children"][name]["cycles"] < tasks[name]["goal"]
        at_pause[name] = child_checkpoint

    # The same supervisor resumes: the pause its last run already stopped for does not stop this one.
    resumed = ray.get(sup.start(resume_from_checkpoint=manifest.id), timeout=WAIT_S)

    assert resumed["status"] == "completed", resumed
    all_checkpoints = {info.id: info for info in kr.list_checkpoints(storage)}
    for name, task in tasks.items():
        child = resumed["children"][name]
        assert child["status"] == "completed" and child["cycles"] == task["goal"]
        assert child["state"] == expected_state(task, f"mf/{name}")  # as if never paused
        # The resumed run continued the paused one: its checkpoints chain back to
        # the manifest's, one cycle each, and none repeats a cycle before the pause.
        node, cycles = all_checkpoints[child["checkpoint_id"]], []
        while node.id != at_pause[name].id:
            cycles.append(node.cycle)
            node = all_checkpoints[node.parent_id]
        assert sorted(cycles) == list(range(at_pause[name].cycle + 1, task["goal"] + 1))


def test_children_spawned_after_the_interrupt_stop_at_their_first_boundary(ray_cluster, storage, cleanup):
    sup = spawn("lvl", storage, [counting(storage, f"w{i}", 10_000, i) for i in range(3)])
    cleanup(sup)
    # Interrupted before its run, so before any child actor exists.
    assert sup.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "not today") is True

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted"
    assert result["interrupt_reason"].message == "not today"
    for name, child in result["children"].items():
        assert child["status"] == "interrupted", name
        assert child["cycles"] == 0, name
        assert child["interrupt_reason"].message == "not today"
        assert child["interrupt_reason"].metadata["propagated_from"] == "lvl"
        assert kr.load_checkpoint(child["checkpoint_id"], storage).agent == f"lvl/{name}"
