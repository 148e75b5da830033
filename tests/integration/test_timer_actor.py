"""The timer actor on a real local Ray: timeouts on handles, from the run's start, cancelled at its end.

A :class:`TimeoutInterruptHandler` added to a handle becomes a deadline on the
namespace's one named timer actor (``kaizen-timer``). Agents mark the start of
the cycle a test cares about by creating a file, so tests wait for that event
instead of sleeping and hoping.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import ray

import kaizen_ray as kr
from kaizen_ray.runtime._namespaces import system_namespace
from kaizen_ray.runtime.timer import TIMER_NAME, GcsDeadlineStore, TimerActor, _interrupt_target, get_or_create_timer

from tests._support.ray_agents import (
    AwaitsForever,
    BlocksForever,
    Counter,
    SlowToStart,
    WaitsForRelease,
    counting,
    deadlines_of,
)
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

WAIT_S = 60.0  # generous: other Ray tests share these two cores
# The timer fires on the monotonic clock, elapsed_seconds is read on the wall
# clock: allow for the wall clock's slew (at most 0.05 %), nothing more.
SLEW = 1e-3
FOREVER = counting(None, delay=0.02)


def config(storage: Path, **overrides: Any) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=storage, **overrides)


def timeout_reason(result: dict[str, Any]) -> kr.InterruptReason:
    reason = result["interrupt_reason"]
    assert reason is not None, result
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "timeout", reason
    return reason


def assert_not_early(reason: kr.InterruptReason, timeout_s: float) -> None:
    """The deadline fired no earlier than ``timeout_s`` after the run's start."""
    assert reason.metadata["timeout_seconds"] == timeout_s
    assert reason.metadata["elapsed_seconds"] >= timeout_s * (1 - SLEW), reason.metadata


@ray.remote(num_cpus=0, max_concurrency=1)
class Probe:
    """A stand-in target that notes which deadlines reached it, in arrival order (one call at a time)."""

    def __init__(self) -> None:
        self.arrived: list[str] = []

    def request_interrupt(self, source: str, mode: str, reason: str, metadata: dict[str, Any]) -> bool:
        self.arrived.append(metadata["deadline"])
        return True

    def arrivals(self) -> list[str]:
        return list(self.arrived)


# -- a timeout stops agents --------------------------------------------------------------------


@pytest.mark.parametrize("agent_cls", [AwaitsForever, BlocksForever], ids=["async-step-awaiting", "sync-step-blocking"])
def test_a_timeout_stops_an_agent_whose_step_is_blocked(ray_cluster, storage, tmp_path, cleanup, agent_cls):
    marker, cancelled = tmp_path / "cycle2-started", tmp_path / "cycle2-cancelled"
    name = f"blocked-{agent_cls.__name__.lower()}"
    cfg = config(storage, checkpoint_frequency=1, immediate_shutdown_timeout=0.5)
    handle = agent_cls.spawn(config=cfg, name=name)
    cleanup(handle)
    ref = handle.start({"marker": str(marker), "cancelled": str(cancelled)})
    wait_until(marker.exists, "cycle 2 to start blocking")
    # Added mid-run, a timeout still counts from the run's start: it fires while cycle 2 is blocked,
    # however long cycle 1 took on a loaded machine (at once if its second is already past).
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0, mode="immediate"))
    result = ray.get(ref, timeout=WAIT_S)

    reason = timeout_reason(result)
    assert result["mode"] == "immediate" and reason.mode == kr.InterruptMode.IMMEDIATE
    assert_not_early(reason, 1.0)
    # The blocked cycle 2 never committed: the state is the one after cycle 1, on disk too.
    assert result["cycles"] == 1 and result["state"]["n"] == 1
    saved = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert saved.agent == name and saved.cycle == 1 and saved.state["n"] == 1
    if agent_cls is AwaitsForever:
        # An await can be cancelled: the run stopped by itself.
        assert result["status"] == "interrupted" and cancelled.exists()
        assert saved.status == kr.CheckpointStatus.INTERRUPTED
    else:
        # A thread cannot: past immediate_shutdown_timeout the actor was killed.
        assert result["status"] == "killed"
        with pytest.raises(kr.AgentGoneError):
            handle.status()


def test_a_supervisors_timeout_stops_every_child(ray_cluster, storage, cleanup):
    children = [kr.ChildSpec(Counter, name=f"t{i}", config=config(storage), task=FOREVER) for i in range(3)]
    # The deadline counts from the supervisor's run, which includes starting the
    # children's actors: on a loaded machine a child may be stopped before its
    # first cycle, so the test asserts the stop, not a number of cycles.
    sup = kr.Supervisor.spawn("timed-swarm", children=children, config=kr.SupervisorConfig(storage_path=storage))
    cleanup(sup)
    sup.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0))

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted"
    reason = timeout_reason(result)
    assert reason.mode == kr.InterruptMode.GRACEFUL
    assert_not_early(reason, 1.0)
    assert sorted(result["children"]) == ["t0", "t1", "t2"]
    for name, child in result["children"].items():
        assert child["status"] == "interrupted" and child["mode"] == "graceful", (name, child)
        child_reason = timeout_reason(child)
        assert child_reason.metadata["propagated_from"] == "timed-swarm"
        assert kr.load_checkpoint(child["checkpoint_id"], storage).status == kr.CheckpointStatus.INTERRUPTED


# -- when a deadline counts from, and when it ends --------------------------------------------


def test_a_supervisors_deadline_counts_from_its_run_its_childrens_start_included(ray_cluster, storage, cleanup):
    children = [kr.ChildSpec(SlowToStart, name="slow", config=config(storage), task=FOREVER)]
    sup = kr.Supervisor.spawn("slow-swarm", children=children, config=kr.SupervisorConfig(storage_path=storage))
    cleanup(sup)
    sup.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=0.5))

    ref = sup.start()
    # Its child's actor cannot be up before the release below (its __init__ waits up to a minute for it):
    # the deadline fires while the supervisor is still starting it.
    wait_until(lambda: sup.status()["interrupted"], "the supervisor's deadline to fire while its child starts", timeout=20)
    (storage / "release-init").touch()
    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "interrupted"
    assert_not_early(timeout_reason(result), 0.5)
    child = result["children"]["slow"]  # level-triggered: it joined a stopped supervisor, and stopped
    assert child["status"] == "interrupted" and timeout_reason(child).metadata["propagated_from"] == "slow-swarm", child


def test_the_deadline_counts_from_the_start_of_the_run_not_from_the_timer_or_the_actor(
    ray_cluster, storage, cleanup
):
    timer = get_or_create_timer(ray_cluster)
    ray.get(timer.pending.remote(), timeout=WAIT_S)  # the timer actor is up, long before the run
    handle = Counter.spawn(config=config(storage), name="late-starter")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))
    assert handle.status()["phase"] == "idle"  # the agent's actor is up too

    def mine() -> list[dict[str, Any]]:
        return list(deadlines_of(ray_cluster, handle.name).values())

    assert mine() == []  # nothing counts while no run goes
    before_start = time.time()  # one machine, one wall clock: its readings order events across processes
    ref = handle.start(FOREVER)
    (record,) = wait_until(mine, "the run's deadline to be scheduled")

    assert record["timeout_s"] == 600.0
    # Counted from the run's start: after start() was called, not when the timer,
    # the actor or the handler came to be (all of which happened before it).
    assert before_start <= record["started_at"] <= time.time()
    wait_until(lambda: handle.status()["cycle"] >= 1, "the run to be going")
    assert handle.request_interrupt("programmatic", "graceful", "enough") is True
    assert ray.get(ref, timeout=WAIT_S)["status"] == "interrupted"


def test_the_deadline_is_cancelled_when_the_run_ends(ray_cluster, storage, cleanup):
    handle = Counter.spawn(config=config(storage), name="cancels-its-deadline")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))

    def deadlines() -> list[str]:
        return list(deadlines_of(ray_cluster, handle.name))

    ref = handle.start(FOREVER)
    wait_until(lambda: handle.status()["cycle"] >= 1, "the run to be going")
    # Sent as the run starts, not waited for (see the next test): it reaches the timer, once.
    assert len(wait_until(deadlines, "the run's deadline to reach the timer")) == 1
    assert handle.request_interrupt("programmatic", "graceful", "done early") is True
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "interrupted" and result["interrupt_reason"].message == "done early"

    # The cancel goes in the background, once the schedule was answered: it lands shortly after the run returned.
    wait_until(lambda: deadlines() == [], "the deadline to be cancelled")



class _Sent:
    """What the timer's firing sends its target, kept (a stand-in with the handle's ``.remote`` shape)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.request_interrupt = self

    def remote(self, *args: Any) -> None:
        self.calls.append(args)


def test_a_deadline_that_fires_after_its_run_ended_does_not_stop_the_next_run(ray_cluster, storage, tmp_path, cleanup):
    """Late (its schedule came after a slow timer start, already due) or just at the run's end: not this run's."""
    handle = WaitsForRelease.spawn(config=config(storage), name="late-deadline")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))
    task = {"marker": str(tmp_path / "in-step"), "release": str(tmp_path / "release"), "once": True}
    ref = handle.start(task)
    [key] = wait_until(lambda: list(deadlines_of(ray_cluster, handle.name)), "the run's deadline to reach the timer")
    (tmp_path / "release").touch()
    first = ray.get(ref, timeout=WAIT_S)
    assert first["status"] == "completed" and first["interrupt_reason"] is None  # nothing standing: a stop would take

    # Exactly what the timer sends when that deadline fires (its own code builds it), now the run is over.
    sent = _Sent()
    _interrupt_target(key, {"target": sent, "name": handle.name, "started_at": time.time() - 600.0,
                            "timeout_s": 600.0, "mode": "graceful"}, 0.0)
    [(source, mode, message, metadata)] = sent.calls
    assert metadata["deadline"] == key
    assert ray.get(handle._actor.request_interrupt.remote(source, mode, message, metadata), timeout=WAIT_S) is False

    second = handle.run(task)
    assert second["status"] == "completed" and second["interrupt_reason"] is None and second["cycles"] == 1
    # Forwarded by a parent, the same timeout is the parent's to judge: it is taken.
    forwarded = {**metadata, "forwarded_by": ["swarm"]}
    assert ray.get(handle._actor.request_interrupt.remote(source, mode, message, forwarded), timeout=WAIT_S) is True


def test_a_deadline_of_a_handler_removed_mid_run_does_not_stop_the_run(ray_cluster, storage, tmp_path, cleanup):
    """Removed, the deadline is no longer the run's: should it fire before its cancel lands, it is refused."""
    handle = WaitsForRelease.spawn(config=config(storage), name="removed-deadline")
    cleanup(handle)
    timeout = kr.TimeoutInterruptHandler(timeout_seconds=600.0)
    handle.add_handler(timeout)
    task = {"marker": str(tmp_path / "in-step"), "release": str(tmp_path / "release"), "once": True}
    ref = handle.start(task)
    [key] = wait_until(lambda: list(deadlines_of(ray_cluster, handle.name)), "the run's deadline to reach the timer")
    handle.remove_handler(timeout)

    sent = _Sent()  # what the timer sends if the deadline fires now
    _interrupt_target(key, {"target": sent, "name": handle.name, "started_at": time.time() - 600.0,
                            "timeout_s": 600.0, "mode": "graceful"}, 0.0)
    [(source, mode, message, metadata)] = sent.calls
    assert ray.get(handle._actor.request_interrupt.remote(source, mode, message, metadata), timeout=WAIT_S) is False
    (tmp_path / "release").touch()
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "completed" and result["interrupt_reason"] is None

def test_a_timer_actor_that_cannot_start_holds_up_no_run(ray_cluster, storage, cleanup):
    # The namespace's timer actor exists but can never be placed (it asks for CPUs no node has), as
    # a timer still starting is for a while: the run's cycles must not wait for it.
    namespace = f"{ray_cluster}-unplaced-timer"
    stuck = TimerActor.options(name=TIMER_NAME, namespace=system_namespace(namespace), num_cpus=1000).remote(namespace)
    try:
        handle = Counter.spawn(config=config(storage), name="timer-never-up", namespace=namespace)
        cleanup(handle)
        handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))

        result = ray.get(handle.start(counting(3)), timeout=WAIT_S)

        assert result["status"] == "completed" and result["cycles"] == 3, result
        assert get_or_create_timer(namespace)._actor_id == stuck._actor_id  # the run did use that timer
    finally:
        # This namespace's system actors (the stuck timer, the checkpoint store) go with the test.
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["namespace"] == system_namespace(namespace):
                ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))


def test_the_timer_is_one_named_actor_per_namespace(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    fired_before = ray.get(timer.__ray_call__.remote(lambda actor: actor._logic.fired), timeout=WAIT_S)
    handles = [Counter.spawn(config=config(storage), name=f"one-timer-{i}") for i in range(2)]
    for handle in handles:
        cleanup(handle)
        handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=0.5))

    results = ray.get([h.start(FOREVER) for h in handles], timeout=WAIT_S)

    for result in results:
        timeout_reason(result)
    named = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("kaizen-timer")]
    assert [a for a in named if a["namespace"] == ray_cluster] == [{"name": TIMER_NAME, "namespace": ray_cluster}]
    same = ray.get_actor(TIMER_NAME, namespace=ray_cluster)
    assert same._actor_id == timer._actor_id == get_or_create_timer(ray_cluster)._actor_id
    # Both deadlines went through that one actor's loop.
    fired_after = ray.get(timer.__ray_call__.remote(lambda actor: actor._logic.fired), timeout=WAIT_S)
    assert fired_after - fired_before == 2


def test_a_cancelled_deadline_never_fires_and_a_later_one_on_the_same_target_does(ray_cluster):
    timer = get_or_create_timer(ray_cluster)
    probe = Probe.remote()
    now = time.time()

    ray.get(timer.schedule.remote("cancelled", probe, "probe", now, 1.0, "graceful"), timeout=WAIT_S)
    assert ray.get(timer.cancel.remote("cancelled"), timeout=WAIT_S) is True
    assert ray.get(timer.cancel.remote("cancelled"), timeout=WAIT_S) is False  # nothing left to cancel
    ray.get(timer.schedule.remote("later", probe, "probe", now, 2.0, "graceful"), timeout=WAIT_S)

    # One loop fires in due order, and the probe takes one call at a time in the
    # order the timer sent them: had "cancelled" fired, it would be first in line.
    arrived = wait_until(lambda: ray.get(probe.arrivals.remote(), timeout=WAIT_S), "the later deadline to arrive")
    assert arrived == ["later"]
    assert "cancelled" not in GcsDeadlineStore(ray_cluster).load()  # and a restarted timer will not reload it


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, -0.001, math.nan, math.inf], ids=["negative", "tiny-negative", "nan", "inf"])
def test_a_bad_timeout_is_refused_at_construction_naming_the_field_and_the_value(bad):
    with pytest.raises(ValueError, match="timeout_seconds") as caught:
        kr.TimeoutInterruptHandler(timeout_seconds=bad)
    assert repr(bad) in str(caught.value)


def test_add_handler_refuses_what_is_not_a_handler(ray_cluster, storage, cleanup):
    handle = Counter.spawn(config=config(storage), name="refuses-junk")
    cleanup(handle)

    with pytest.raises(TypeError, match="not an interrupt handler"):
        handle.add_handler(object())
    with pytest.raises(TypeError, match="not an interrupt handler"):
        handle.interrupt_manager.add_handler("timeout_seconds=5")
    # The actor refuses it too, for callers that bypass the handle.
    with pytest.raises(TypeError, match="Timeout- or BudgetInterruptHandler"):
        ray.get(handle.actor.add_handler.remote(object()), timeout=WAIT_S)
