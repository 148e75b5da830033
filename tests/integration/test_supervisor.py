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

from tests._support.ray_agents import (
    AwaitsForever,
    BlocksForever,
    BlocksItsLoop,
    Counter,
    expected_state,
    wait_for_checkpointed_cycle,
)
from tests._support.waiting import wait_until

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


# -- the supervisor's own bounds on a stop (SupervisorConfig's shutdown timeouts) --------------------


def _one_stuck_child(storage: Path, name: str, cls: type, child_config: dict[str, float], **sup_bounds: float) -> tuple[Any, Any, Path]:
    """A supervisor of one child whose cycle 2 never ends on its own; its run started, the step in flight."""
    marker = storage.parent / f"{name}-in-step"
    config = kr.AutonomousConfig(storage_path=storage, **child_config)
    sup = spawn(name, storage, [kr.ChildSpec(cls, name="w", config=config, task={"marker": str(marker)})], **sup_bounds)
    ref = sup.start()
    wait_until(marker.exists, f"{marker} (cycle 2 of {name}/w in flight)", timeout=WAIT_S, poll=0.01)
    return sup, ref, marker


def test_a_graceful_stop_of_the_tree_becomes_immediate_at_the_supervisors_graceful_timeout(ray_cluster, storage, cleanup):
    # The child would let its cycle run to its end (BLOCK_S), then wait its own 600 s bound: only the
    # supervisor's 0.5 s bound can make this stop IMMEDIATE within the wait.
    sup, ref, _ = _one_stuck_child(
        storage, "bounded", AwaitsForever, {"graceful_shutdown_timeout": 600.0}, graceful_shutdown_timeout=0.5
    )
    cleanup(sup)

    assert sup.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "wind down") is True
    result = ray.get(ref, timeout=WAIT_S)

    child = result["children"]["w"]
    assert (result["status"], child["status"], child["mode"]) == ("interrupted", "interrupted", "immediate")
    assert child["interrupt_reason"].message == "wind down"  # the first reason stays the reason
    assert child["state"]["n"] == 1  # cycle 2 was cancelled: the checkpoint holds the last committed state
    escalation = sup.interrupt_manager.history[-1]
    assert (escalation.source, escalation.mode) == (kr.InterruptSource.SYSTEM, kr.InterruptMode.IMMEDIATE)
    assert escalation.metadata == {"handler": "escalation", "graceful_shutdown_timeout": 0.5}


def test_an_immediate_stop_of_the_tree_kills_the_children_still_running_at_the_supervisors_immediate_timeout(
    ray_cluster, storage, cleanup
):
    # A thread cannot be cancelled: the child would wait BLOCK_S for it (its own bound is 600 s).
    sup, ref, _ = _one_stuck_child(
        storage, "capped", BlocksForever, {"immediate_shutdown_timeout": 600.0}, immediate_shutdown_timeout=0.5
    )
    cleanup(sup)

    assert sup.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.IMMEDIATE, "now") is True
    result = ray.get(ref, timeout=WAIT_S)

    child = result["children"]["w"]
    assert (result["status"], child["status"], result["restarts"]) == ("interrupted", "killed", 0)  # stopping: no restart
    assert child["interrupt_reason"].message == "now" and child["error"] is None  # killed for the stop, not crashed
    # Its last durable checkpoint stays valid, and names the state after cycle 1.
    assert kr.load_checkpoint(child["checkpoint_id"], storage_path=storage).state["n"] == 1


def test_the_roots_immediate_bound_kills_a_child_supervisor_still_stopping_and_its_tree_with_it(ray_cluster, storage, cleanup):
    marker = storage.parent / "leaf-in-step"
    leaf = kr.ChildSpec(
        BlocksForever, name="leaf", task={"marker": str(marker)},
        config=kr.AutonomousConfig(storage_path=storage, immediate_shutdown_timeout=600.0),
    )  # fmt: skip
    middle = kr.ChildSpec(
        kr.Supervisor, name="mid", children=[leaf],
        config=kr.SupervisorConfig(storage_path=storage, immediate_shutdown_timeout=600.0),
    )  # fmt: skip
    root = spawn("root", storage, [middle], immediate_shutdown_timeout=0.5)
    cleanup(root)
    ref = root.start()
    wait_until(marker.exists, f"{marker} (cycle 2 of root/mid/leaf in flight)", timeout=WAIT_S, poll=0.01)

    assert root.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.IMMEDIATE, "all of it") is True
    result = ray.get(ref, timeout=WAIT_S)

    mid = result["children"]["mid"]
    assert (result["status"], mid["status"], mid["error"]) == ("interrupted", "killed", None)
    assert mid["interrupt_reason"].message == "all of it"
    leaf_result = mid["children"]["leaf"]
    assert leaf_result["status"] == "killed" and leaf_result["interrupt_reason"].message == "all of it"
    assert kr.load_checkpoint(leaf_result["checkpoint_id"], storage_path=storage).state["n"] == 1


def test_a_budget_added_to_the_supervisor_mid_run_reaches_a_child_whose_step_blocks_its_loop(ray_cluster, storage, cleanup):
    # use_budget_scope is a control call: it must not wait for the child's event loop.
    sup, ref, _ = _one_stuck_child(storage, "budgeted", BlocksItsLoop, {"immediate_shutdown_timeout": 0.5})
    cleanup(sup)

    sup.add_handler(kr.BudgetInterruptHandler(max_cost=10.0))  # a control call: TimeoutError past 10 s

    assert sup.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.IMMEDIATE, "done") is True
    result = ray.get(ref, timeout=WAIT_S)
    assert result["children"]["w"]["status"] == "killed"  # its own bound: the loop never came back
