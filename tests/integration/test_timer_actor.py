"""The timer actor on a real local Ray: timeouts on handles, from the run's start, cancelled at its end.

A :class:`TimeoutInterruptHandler` added to a handle becomes a deadline on the
namespace's one named timer actor (``kaizen-timer``). Agents mark the start of
the cycle a test cares about by creating a file, so tests wait for that event
instead of sleeping and hoping.
"""

from __future__ import annotations

import functools

import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr

from _agents import AwaitsForever  # noqa: E402 - shared agents beside this file (pytest puts this folder on sys.path)
from kaizen_ray.runtime.timer import TIMER_NAME, get_or_create_timer

import _waiting  # noqa: E402 - shared helper beside this file (pytest puts this folder on sys.path)

pytestmark = pytest.mark.ray

# pytest imports this file as a top-level module Ray's workers cannot import:
# ship its agent classes by value, not by reference.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 60.0  # generous: other Ray tests share these two cores
TOLERANCE_S = 0.05  # wall-clock jitter between two processes of one machine


wait_until = functools.partial(_waiting.wait_until, timeout=WAIT_S, poll=0.02)


def config(storage: Path, **overrides: Any) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=storage, **overrides)




def timeout_reason(result: dict[str, Any]) -> kr.InterruptReason:
    reason = result["interrupt_reason"]
    assert reason is not None, result
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "timeout", reason
    return reason


# -- agents (module level: cloudpickle ships them to the actors by value) ----------


class Ticker(kr.BaseAutonomousAgent):
    """Counts forever, a short await per cycle; notes (wall clock) when its run started."""

    def initial_state(self, task):
        return {"n": 0, "started_at": time.time()}

    async def step(self, state, ctx):
        await asyncio.sleep(0.02)
        return kr.StepResult({**state, "n": state["n"] + 1})


class BlocksForever(kr.BaseAutonomousAgent):
    """Cycle 1 returns at once; cycle 2 marks its start and blocks its thread for an hour."""

    def initial_state(self, task):
        return {"n": 0, **task}

    def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            time.sleep(3600)
        return kr.StepResult({**state, "n": state["n"] + 1})


# -- a timeout stops agents --------------------------------------------------------------------


@pytest.mark.parametrize("agent_cls", [AwaitsForever, BlocksForever], ids=["async-step-awaiting", "sync-step-blocking"])
def test_a_timeout_stops_an_agent_whose_step_is_blocked(ray_cluster, storage, tmp_path, cleanup, agent_cls):
    marker, cancelled = tmp_path / "cycle2-started", tmp_path / "cycle2-cancelled"
    name = f"blocked-{agent_cls.__name__.lower()}"
    cfg = config(storage, checkpoint_frequency=1, immediate_shutdown_timeout=0.5)
    handle = agent_cls.spawn(config=cfg, name=name)
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0, mode="immediate"))

    ref = handle.start({"marker": str(marker), "cancelled": str(cancelled)})
    wait_until(marker.exists, "cycle 2 to start blocking")
    result = ray.get(ref, timeout=WAIT_S)

    reason = timeout_reason(result)
    assert result["mode"] == "immediate" and reason.mode == kr.InterruptMode.IMMEDIATE
    assert reason.metadata["timeout_seconds"] == 1.0
    assert reason.metadata["elapsed_seconds"] >= 1.0 - TOLERANCE_S
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
    children = [kr.ChildSpec(Ticker, name=f"t{i}", config=config(storage)) for i in range(3)]
    # The deadline counts from the supervisor's run, which includes starting the
    # children's actors: on a loaded machine a child may be stopped before its
    # first cycle, so the test asserts the stop, not a number of cycles.
    sup = kr.Supervisor.spawn("timed-swarm", children=children, config=kr.SupervisorConfig(storage_path=storage))
    cleanup(sup)
    sup.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0))

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted"
    reason = timeout_reason(result)
    assert reason.mode == kr.InterruptMode.GRACEFUL and reason.metadata["elapsed_seconds"] >= 1.0 - TOLERANCE_S
    assert sorted(result["children"]) == ["t0", "t1", "t2"]
    for name, child in result["children"].items():
        assert child["status"] == "interrupted" and child["mode"] == "graceful", (name, child)
        child_reason = timeout_reason(child)
        assert child_reason.metadata["propagated_from"] == "timed-swarm"
        assert kr.load_checkpoint(child["checkpoint_id"], storage).status == kr.CheckpointStatus.INTERRUPTED


# -- when a deadline counts from, and when it ends --------------------------------------------


def test_the_deadline_counts_from_the_start_of_the_run_not_from_the_timer_or_the_actor(
    ray_cluster, storage, cleanup
):
    timeout_s, idle_s = 1.5, 3.0  # idle longer than timeout_s + its margin below
    timer = get_or_create_timer(ray_cluster)
    ray.get(timer.pending.remote(), timeout=WAIT_S)  # the timer actor is up, long before the run
    handle = Ticker.spawn(config=config(storage), name="late-starter")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=timeout_s))
    assert handle.status()["phase"] == "idle"  # the agent's actor is up too
    time.sleep(idle_s)  # deliberately idle: a deadline counted from before the run would be past now

    t0 = time.monotonic()
    result = ray.get(handle.start(), timeout=WAIT_S)
    run_s = time.monotonic() - t0

    reason = timeout_reason(result)
    elapsed = reason.metadata["elapsed_seconds"]
    assert timeout_s - TOLERANCE_S <= elapsed < timeout_s + 1.0, elapsed
    # Measured independently: from the state's own start-of-run stamp to the accepted interrupt.
    since_state_start = reason.timestamp.timestamp() - result["state"]["started_at"]
    assert timeout_s - TOLERANCE_S <= since_state_start < timeout_s + 1.0, since_state_start
    assert run_s >= timeout_s - TOLERANCE_S
    assert result["cycles"] >= 3, result["cycles"]  # it worked until the deadline


def test_the_deadline_is_cancelled_when_the_run_ends(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    before = ray.get(timer.pending.remote(), timeout=WAIT_S)
    handle = Ticker.spawn(config=config(storage), name="cancels-its-deadline")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))

    ref = handle.start()
    wait_until(lambda: handle.status()["cycle"] >= 1, "the run to be going")
    # Scheduled before the first cycle, so it is there by now.
    assert ray.get(timer.pending.remote(), timeout=WAIT_S) == before + 1
    assert handle.request_interrupt("programmatic", "graceful", "done early") is True
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "interrupted" and result["interrupt_reason"].message == "done early"

    # The cancel is fire-and-forget: it lands shortly after the run returned.
    wait_until(lambda: ray.get(timer.pending.remote(), timeout=WAIT_S) == before, "the deadline to be cancelled")


def test_the_timer_is_one_named_actor_per_namespace(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    fired_before = ray.get(timer.__ray_call__.remote(lambda actor: actor._logic.fired), timeout=WAIT_S)
    handles = [Ticker.spawn(config=config(storage), name=f"one-timer-{i}") for i in range(2)]
    for handle in handles:
        cleanup(handle)
        handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=0.5))

    results = ray.get([h.start() for h in handles], timeout=WAIT_S)

    for result in results:
        timeout_reason(result)
    named = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("kaizen-timer")]
    assert [a for a in named if a["namespace"] == ray_cluster] == [{"name": TIMER_NAME, "namespace": ray_cluster}]
    same = ray.get_actor(TIMER_NAME, namespace=ray_cluster)
    assert same._actor_id == timer._actor_id == get_or_create_timer(ray_cluster)._actor_id
    # Both deadlines went through that one actor's loop.
    fired_after = ray.get(timer.__ray_call__.remote(lambda actor: actor._logic.fired), timeout=WAIT_S)
    assert fired_after - fired_before == 2


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, -0.001, math.nan, math.inf], ids=["negative", "tiny-negative", "nan", "inf"])
def test_a_bad_timeout_is_refused_at_construction_naming_the_field_and_the_value(bad):
    with pytest.raises(ValueError, match="timeout_seconds") as caught:
        kr.TimeoutInterruptHandler(timeout_seconds=bad)
    assert repr(bad) in str(caught.value)


def test_add_handler_refuses_what_is_not_a_handler(ray_cluster, storage, cleanup):
    handle = Ticker.spawn(config=config(storage), name="refuses-junk")
    cleanup(handle)

    with pytest.raises(TypeError, match="not an interrupt handler"):
        handle.add_handler(object())
    with pytest.raises(TypeError, match="not an interrupt handler"):
        handle.interrupt_manager.add_handler("timeout_seconds=5")
    # The actor refuses it too, for callers that bypass the handle.
    with pytest.raises(TypeError, match="Timeout- or BudgetInterruptHandler"):
        ray.get(handle.actor.add_handler.remote(object()), timeout=WAIT_S)
