"""AgentActor on a real local Ray: control latency, IMMEDIATE, the kill, handles, detached agents, bad input.

Every agent here marks the start of the cycle a test cares about by creating a
file (the actor runs on this machine), so the test waits for that event instead
of sleeping and hoping the step has begun.
"""

from __future__ import annotations

import functools

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray import AgentGoneError

from _agents import AwaitsForever  # noqa: E402 - shared agents beside this file (pytest puts this folder on sys.path)

import _waiting  # noqa: E402 - shared helper beside this file (pytest puts this folder on sys.path)

pytestmark = pytest.mark.ray

# pytest imports this file as a top-level module that Ray's workers cannot
# import: ship its agent classes by value, not by reference.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

EVENT_TIMEOUT_S = 60.0  # generous: other Ray tests share these two cores
RESULT_TIMEOUT_S = 60.0


wait_until = functools.partial(_waiting.wait_until, timeout=EVENT_TIMEOUT_S, poll=0.02)


def config(storage: Path, **overrides) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=storage, **overrides)


# -- agents (module level: cloudpickle ships them to the actors by value) ----------


class Blocker(kr.BaseAutonomousAgent):
    """Sync step: marks its start, then blocks ``block_s`` seconds; records when it ran (wall clock)."""

    def initial_state(self, task):
        return {"n": 0, "spans": [], **task}

    def step(self, state, ctx):
        Path(state["marker"]).touch()
        start = time.time()
        time.sleep(state["block_s"])
        spans = [*state["spans"], (start, time.time())]
        return kr.StepResult({**state, "n": state["n"] + 1, "spans": spans})


class Polite(kr.BaseAutonomousAgent):
    """Sync step that watches ``ctx.interrupted`` and returns once it is set.

    With ``linger`` it first waits for the runtime to be stopping, so its return
    cannot race the IMMEDIATE's arrival on the event loop: the runtime has
    decided about the cycle in flight before the step's result exists.
    """

    def initial_state(self, task):
        return {"n": 0, "saw_interrupt": False, **task}

    def step(self, state, ctx):
        Path(state["marker"]).touch()
        give_up = time.monotonic() + 60
        while not ctx.interrupted and time.monotonic() < give_up:
            time.sleep(0.005)
        if ctx.interrupted:
            Path(state["saw"]).touch()
        while state["linger"] and self.phase != kr.AgentPhase.STOPPING and time.monotonic() < give_up:
            time.sleep(0.005)
        return kr.StepResult({**state, "n": state["n"] + 1, "saw_interrupt": ctx.interrupted})


class Stubborn(kr.BaseAutonomousAgent):
    """Cycle 1 returns at once; cycle 2 marks its start and blocks for a minute, ignoring interrupts."""

    def initial_state(self, task):
        return {"n": 0, **task}

    def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            time.sleep(60)
        return kr.StepResult({**state, "n": state["n"] + 1})


class StubbornLoop(kr.BaseAutonomousAgent):
    """Like Stubborn, but an ``async def`` that blocks its own event loop (no await to cancel at)."""

    def initial_state(self, task):
        return {"n": 0, **task}

    async def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            time.sleep(60)
        return kr.StepResult({**state, "n": state["n"] + 1})


class Crasher(kr.BaseAutonomousAgent):
    """Cycle 1 returns at once; cycle 2 takes its whole process down."""

    def initial_state(self, task):
        return {"n": 0}

    async def step(self, state, ctx):
        if state["n"] >= 1:
            os._exit(1)
        return kr.StepResult({"n": state["n"] + 1})


class Counter(kr.BaseAutonomousAgent):
    """Counts to ``task`` (an int), one per cycle, a short await each."""

    def initial_state(self, task):
        return {"n": 0, "goal": task}

    async def step(self, state, ctx):
        await asyncio.sleep(0.01)
        n = state["n"] + 1
        goal = state["goal"]
        return kr.StepResult({**state, "n": n}, done=goal is not None and n >= goal, output=n)


class Holder(kr.BaseAutonomousAgent):
    """Keeps a lock in its state: cloudpickle cannot serialise it."""

    def initial_state(self, task):
        return {"lock": threading.Lock()}

    async def step(self, state, ctx):
        return kr.StepResult(state)


# -- control latency ------------------------------------------------------------------------


def test_control_calls_reach_an_agent_whose_sync_step_blocks_within_100ms(ray_cluster, storage, tmp_path):
    marker = tmp_path / "step-started"
    handle = Blocker.spawn(config=config(storage), name="blocker-latency")
    handle.status()  # warm the control path: the first call after start can take ~200 ms
    ref = handle.start({"marker": str(marker), "block_s": 2.0})
    wait_until(marker.exists, "the 2 s step to start")

    t0 = time.monotonic()
    status = handle.status()
    status_s = time.monotonic() - t0
    wall_before = time.time()
    t1 = time.monotonic()
    accepted = handle.request_interrupt(kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "latency probe")
    interrupt_s = time.monotonic() - t1
    wall_after = time.time()

    assert status["phase"] == "running" and status["cycle"] == 0  # the first step had not returned
    assert accepted is True
    assert status_s < 0.1, f"status() took {status_s * 1000:.1f} ms while the step blocked"
    assert interrupt_s < 0.1, f"request_interrupt() took {interrupt_s * 1000:.1f} ms while the step blocked"

    result = ray.get(ref, timeout=RESULT_TIMEOUT_S)
    # GRACEFUL: the blocked cycle finished and was committed, then the run stopped at the boundary.
    assert result["status"] == "interrupted" and result["mode"] == "graceful"
    assert result["cycles"] == 1
    (step_start, step_end), = result["state"]["spans"]
    assert step_start < wall_before and wall_after < step_end, "the control calls did not happen while the step blocked"


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


@pytest.mark.parametrize("agent_cls", [Stubborn, StubbornLoop], ids=["sync-step", "async-step-blocking-its-loop"])
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

    # The actor is gone: control calls say so promptly instead of hanging.
    t0 = time.monotonic()
    with pytest.raises(AgentGoneError, match=name):
        handle.request_interrupt("user", "graceful", "anyone there?")
    assert time.monotonic() - t0 < 5.0
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

    assert result["status"] == "interrupted" and result["cycles"] >= 1
    reason = result["interrupt_reason"]
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "timeout"


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
    deadline = __import__("time").monotonic() + 60
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
    driver = subprocess.run(
        [sys.executable, str(script), address, ray_cluster, "ticker", str(storage)],
        env=env, timeout=120, capture_output=True, text=True,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]  # the driver has exited here

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
