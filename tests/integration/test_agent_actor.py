"""AgentActor on a real local Ray: control calls mid-step, IMMEDIATE, the kill, detached agents, bad input.

Every agent here marks the start of the cycle a test cares about by creating a
file (the actor runs on this machine), so the test waits for that event instead
of sleeping and hoping the step has begun. How fast control calls land is
measured in benchmarks/control_latency.py, not here.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray import AgentGoneError

from tests._support.ray_agents import AwaitsForever, BlocksForever, BlocksItsLoop, Counter, Polite, WaitsForRelease, deadlines_of, run_driver
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

# pytest imports this file as a top-level module that Ray's workers cannot
# import: ship its agent classes by value, not by reference.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT_S = 60.0  # generous: other Ray tests share these two cores


def config(storage: Path, **overrides) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=storage, **overrides)


# -- agents of this module only (module level: cloudpickle ships them to the actors by value) --------


class Crasher(kr.BaseAutonomousAgent):
    """Cycle 1 returns at once; cycle 2 takes its whole process down."""

    def initial_state(self, task):
        return {"n": 0}

    async def step(self, state, ctx):
        if state["n"] >= 1:
            os._exit(1)
        return kr.StepResult({"n": state["n"] + 1})


class Holder(kr.BaseAutonomousAgent):
    """Keeps a lock in its state: cloudpickle cannot serialise it."""

    def initial_state(self, task):
        return {"lock": threading.Lock()}

    async def step(self, state, ctx):
        return kr.StepResult(state)


# -- control calls while a step blocks ------------------------------------------------------------


def test_control_calls_are_answered_while_a_sync_step_blocks(ray_cluster, storage, tmp_path, cleanup):
    marker, release = tmp_path / "step-started", tmp_path / "release-the-step"
    handle = WaitsForRelease.spawn(config=config(storage), name="blocked-but-reachable")
    cleanup(handle)
    ref = handle.start({"marker": str(marker), "release": str(release)})
    wait_until(marker.exists, "the step to start blocking")

    # The step cannot return before `release` exists: both calls are answered while it blocks.
    status = handle.status()
    accepted = handle.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "while blocked")
    assert status["phase"] == "running" and status["cycle"] == 0 and status["cycle_in_flight"] == 1
    assert accepted is True
    assert handle.status()["interrupted"] is True and not release.exists()
    release.touch()

    result = ray.get(ref, timeout=RESULT_TIMEOUT_S)
    # GRACEFUL: the blocked cycle finished and was committed, then the run stopped at the boundary.
    assert result["status"] == "interrupted" and result["mode"] == "graceful"
    assert result["cycles"] == 1 and len(result["state"]["spans"]) == 1
    assert result["interrupt_reason"].message == "while blocked"


# -- IMMEDIATE and the boundary ----------------------------------------------------------------


def test_immediate_cancels_an_async_step_at_its_next_await(ray_cluster, storage, tmp_path):
    marker, cancelled = tmp_path / "cycle2-started", tmp_path / "cycle2-cancelled"
    handle = AwaitsForever.spawn(config=config(storage), name="async-waiter")
    ref = handle.start({"marker": str(marker), "cancelled": str(cancelled)})
    wait_until(marker.exists, "cycle 2 to start awaiting")

    assert handle.request_interrupt("user", "immediate", "now") is True
    result = ray.get(ref, timeout=RESULT_TIMEOUT_S)

    assert cancelled.exists(), "the step never saw CancelledError"
    assert result["status"] == "interrupted" and result["mode"] == "immediate"
    assert result["cycles"] == 1 and result["state"]["n"] == 1  # the cancelled cycle was not committed
    saved = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert saved.state["n"] == 1 and saved.status == kr.CheckpointStatus.INTERRUPTED


@pytest.mark.parametrize("mode", ["graceful", "immediate"])
def test_a_sync_step_sees_ctx_interrupted_and_the_run_stops_at_the_boundary(ray_cluster, storage, tmp_path, mode):
    marker, saw = tmp_path / "step-started", tmp_path / "step-saw-the-interrupt"
    handle = Polite.spawn(config=config(storage, immediate_shutdown_timeout=30.0), name=f"polite-{mode}")
    ref = handle.start({"marker": str(marker), "saw": str(saw), "linger": mode == "immediate"})
    wait_until(marker.exists, "the step to start polling ctx.interrupted")

    assert handle.request_interrupt("programmatic", mode, "stop please") is True
    result = ray.get(ref, timeout=RESULT_TIMEOUT_S)

    assert saw.exists()
    assert result["status"] == "interrupted" and result["mode"] == mode  # stopped by itself, not killed
    if mode == "graceful":
        # The cycle in flight returned and was committed; no cycle after it started.
        assert result["cycles"] == 1 and result["state"]["saw_interrupt"] is True
    else:
        # IMMEDIATE discards the step's result: the last committed state is the initial one.
        assert result["cycles"] == 0 and result["state"]["n"] == 0
    assert kr.load_checkpoint(result["checkpoint_id"], storage).cycle == result["cycles"]
    assert handle.status()["phase"] == "finished"


@pytest.mark.parametrize("agent_cls", [BlocksForever, BlocksItsLoop], ids=["sync-step", "async-step-blocking-its-loop"])
def test_a_stop_past_immediate_shutdown_timeout_kills_the_actor_and_keeps_the_last_checkpoint(
    ray_cluster, storage, tmp_path, agent_cls
):
    marker = tmp_path / "cycle2-started"
    name = f"stubborn-{agent_cls.__name__.lower()}"
    handle = agent_cls.spawn(config=config(storage, immediate_shutdown_timeout=0.5, checkpoint_frequency=1), name=name)
    ref = handle.start({"marker": str(marker)})
    wait_until(marker.exists, "cycle 2 to start blocking")

    assert handle.request_interrupt("user", "immediate", "stop now") is True
    result = ray.get(ref, timeout=RESULT_TIMEOUT_S)  # the result dict, never a bare ActorDiedError

    assert result["status"] == "killed" and result["mode"] == "immediate"
    assert result["interrupt_reason"].message == "stop now"
    # The last flushed checkpoint is after cycle 1: valid on disk and what the result reports.
    assert result["cycles"] == 1 and result["state"]["n"] == 1
    saved = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert saved.agent == name and saved.cycle == 1 and saved.state["n"] == 1

    # The actor is gone: control calls say so (AgentGoneError), rather than time out (TimeoutError).
    with pytest.raises(AgentGoneError, match=name):
        handle.request_interrupt("user", "graceful", "anyone there?")
    with pytest.raises(kr.AgentGoneError):
        handle.status()


def test_an_actor_that_dies_mid_run_still_resolves_start_to_a_killed_result(ray_cluster, storage):
    handle = Crasher.spawn(config=config(storage, checkpoint_frequency=1), name="crasher")

    result = ray.get(handle.start(), timeout=RESULT_TIMEOUT_S)

    assert result["status"] == "killed" and result["interrupt_reason"] is None
    assert isinstance(result["error"], ray.exceptions.RayActorError)
    assert result["cycles"] == 1 and result["state"] == {"n": 1}  # the last flushed checkpoint
    assert kr.load_checkpoint(result["checkpoint_id"], storage).cycle == 1


# -- driver-side handles ------------------------------------------------------------------------


def test_run_blocks_until_the_result_and_status_reports_the_agent(ray_cluster, storage):
    handle = Counter.spawn(config=config(storage), name="counter-run")
    assert handle.status()["phase"] == "idle"

    result = handle.run(3)

    assert result["status"] == "completed" and result["output"] == 3 and result["cycles"] == 3
    status = handle.status()
    assert status["phase"] == "finished" and status["cycle"] == 3
    assert status["checkpoint_id"] == result["checkpoint_id"]


def test_interrupt_manager_proxy_drives_the_actors_manager_and_wires_children(ray_cluster, storage):
    parent = Counter.spawn(config=config(storage), name="proxy-parent")
    child = Counter.spawn(config=config(storage), name="proxy-child")
    with pytest.raises(TypeError, match="proxy-parent"):
        parent.interrupt_manager.add_child(kr.InterruptManager(name="local"))

    parent.interrupt_manager.add_child(child.interrupt_manager)
    assert child.interrupt_manager.is_interrupted() is False
    assert parent.interrupt_manager.request_interrupt("user", "graceful", "stop the family") is True

    assert child.interrupt_manager.wait(timeout=30) is True
    reason = child.interrupt_manager.reason
    assert reason.source == kr.InterruptSource.USER and reason.message == "stop the family"
    assert reason.metadata["propagated_from"] == "proxy-parent"
    assert parent.interrupt_manager.mode == kr.InterruptMode.GRACEFUL
    assert [r.message for r in parent.interrupt_manager.history] == ["stop the family"]

    # Level-triggered: runs started after the interrupt stop at their first boundary.
    refs = [parent.start(10), child.start(10)]
    for result in ray.get(refs, timeout=RESULT_TIMEOUT_S):
        assert result["status"] == "interrupted" and result["cycles"] == 0

    parent.interrupt_manager.reset()
    assert parent.interrupt_manager.is_interrupted() is False


def test_add_handler_on_a_handle_interrupts_the_actor(ray_cluster, storage):
    handle = Counter.spawn(config=config(storage), name="counter-timeout")
    with pytest.raises(TypeError, match="not an interrupt handler"):
        handle.add_handler(object())
    handle.add_handler(kr.TimeoutInterruptHandler(0.5))

    result = handle.run(None)  # counts forever but for the timeout

    # How many cycles fit in 0.5 s depends on the machine's load: only the stop and its cause are the point.
    assert result["status"] == "interrupted"
    reason = result["interrupt_reason"]
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "timeout"
    assert reason.metadata["elapsed_seconds"] >= 0.5 * 0.999  # counted from the run's start, never early


def test_handles_proxies_and_actors_have_useful_reprs(ray_cluster, storage):
    handle = Counter.spawn(config=config(storage), name="counter-repr")

    assert repr(handle) == f"AgentHandle('counter-repr', namespace={handle.namespace!r})"
    assert "counter-repr" in repr(handle.interrupt_manager)
    actor_repr = ray.get(handle.actor.__ray_call__.remote(lambda actor: repr(actor)), timeout=30)
    # Name and class only: Ray takes the repr once, so it must not show state that goes stale.
    assert actor_repr == "AgentActor(counter-repr, Counter)"
    handle.run(2)
    actor_repr = ray.get(handle.actor.__ray_call__.remote(lambda actor: repr(actor)), timeout=30)
    assert actor_repr == "AgentActor(counter-repr, Counter)"


# -- detached agents -------------------------------------------------------------------------------

_DETACHED_DRIVER = textwrap.dedent(
    """
    import asyncio, sys
    import ray
    import kaizen_ray as kr

    class Ticker(kr.BaseAutonomousAgent):
        def initial_state(self, task):
            return {"n": 0}

        async def step(self, state, ctx):
            await asyncio.sleep(0.05)
            return kr.StepResult({"n": state["n"] + 1})

    address, namespace, name, storage = sys.argv[1:5]
    ray.init(address=address, namespace=namespace, log_to_driver=False)
    # No namespace given: a detached agent goes to "kaizen", where other drivers can find it.
    handle = Ticker.spawn(config=kr.AutonomousConfig(storage_path=storage), name=name, lifetime="detached")
    assert handle.namespace == "kaizen", handle.namespace
    handle.start()
    deadline = __import__("time").monotonic() + 30
    while handle.status()["cycle"] < 1:  # running before this driver goes
        assert __import__("time").monotonic() < deadline, "the detached agent never ran a cycle"
        __import__("time").sleep(0.05)
    """
)


def test_a_detached_agent_outlives_its_driver_and_is_found_by_name(ray_cluster, storage, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(_DETACHED_DRIVER)
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(kr.__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    code, out = run_driver([str(script), address, ray_cluster, "ticker", str(storage)], env=env, timeout=60)
    assert code == 0, out[-3000:]  # the driver has exited here

    with pytest.raises(AgentGoneError):  # not in the driver's own namespace
        kr.get_agent("ticker", namespace=ray_cluster)
    handle = kr.get_agent("ticker", namespace="kaizen")
    assert isinstance(handle, kr.AgentHandle) and handle.storage_path == str(storage)
    first = handle.status()["cycle"]
    wait_until(lambda: handle.status()["cycle"] > first, "the detached agent to keep cycling without its driver")

    assert handle.request_interrupt("user", "graceful", "found you") is True
    wait_until(lambda: handle.status()["phase"] == "finished", "the detached agent to stop")
    final = handle.status()
    saved = kr.load_checkpoint(final["checkpoint_id"], storage)
    assert saved.status == kr.CheckpointStatus.INTERRUPTED and saved.cycle == final["cycle"]
    handle.kill()

    with pytest.raises(AgentGoneError, match="no-such-agent"):
        kr.get_agent("no-such-agent", namespace=ray_cluster)


# -- bad input and faults ------------------------------------------------------------------------------


def test_spawning_with_an_unwritable_storage_path_fails_at_once(ray_cluster, tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    bad = in_the_way / "checkpoints"

    with pytest.raises(kr.CheckpointStorageError, match=re.escape(str(bad))):
        Counter.spawn(config=config(bad), name="never-spawned")
    with pytest.raises(ValueError):
        ray.get_actor("never-spawned")  # no actor was started for it


def test_a_state_cloudpickle_cannot_serialise_names_the_agent_and_the_type(ray_cluster, storage):
    handle = Holder.spawn(config=config(storage, max_cycles=2), name="holder")

    result = handle.run(None)

    assert result["status"] == "failed"
    error = result["error"]
    assert isinstance(error, kr.CheckpointSerializationError)
    assert error.agent == "holder" and "lock" in error.type_name
    assert "'holder'" in str(error) and "lock" in str(error)


def test_resuming_an_unknown_checkpoint_says_which_id_and_where(ray_cluster, storage):
    handle = Counter.spawn(config=config(storage), name="counter-resume-missing")

    with pytest.raises(kr.CheckpointNotFoundError) as caught:
        ray.get(handle.start(3, resume_from_checkpoint="ck-does-not-exist"), timeout=RESULT_TIMEOUT_S)

    message = str(caught.value)
    assert "ck-does-not-exist" in message and str(storage) in message


def test_a_second_start_while_a_run_goes_is_refused_and_leaves_the_first_runs_deadline_alone(ray_cluster, storage, cleanup):
    handle = Counter.spawn(config=config(storage), name="runs-once-at-a-time")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))

    def deadlines() -> list[str]:
        return list(deadlines_of(ray_cluster, handle.name))

    first = handle.start(None)  # counts for ever
    wait_until(lambda: handle.status()["cycle"] >= 1, "the first run to be going")
    (deadline,) = wait_until(deadlines, "the first run's deadline to reach the timer")

    with pytest.raises(RuntimeError, match="'runs-once-at-a-time' is already running"):
        ray.get(handle.start(3), timeout=RESULT_TIMEOUT_S)

    status = handle.status()
    assert status["phase"] == "running" and status["interrupted"] is False  # the first run goes on, untouched
    assert deadlines() == [deadline]  # its deadline, and only it
    assert handle.request_interrupt("programmatic", "graceful", "enough") is True
    assert ray.get(first, timeout=RESULT_TIMEOUT_S)["status"] == "interrupted"
    # The first run's end cancels its deadline: nothing is left to fire at an idle agent later.
    wait_until(lambda: deadlines() == [], "the first run's deadline to be cancelled")
