"""Escalation on a real local Ray: GRACEFUL -> IMMEDIATE -> ray.kill, the last checkpoint intact.

A GRACEFUL stop not finished within ``graceful_shutdown_timeout`` becomes an
IMMEDIATE one (SYSTEM, ``handler="escalation"``); an IMMEDIATE stop not
finished within ``immediate_shutdown_timeout`` ends with the actor killed and
the result ``"killed"``, naming the last flushed checkpoint. The agents here
ignore cancellation in the ways real steps do. Each records every interrupt
its manager accepts in a file (a listener), so the chain can be read after the
actor is gone.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr

from tests._support.ray_agents import BlocksForever, BlocksItsLoop, RecordsInterrupts, SwallowsCancellation, read_history
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

# pytest imports this file as a top-level module Ray's workers cannot import:
# ship its agent classes by value, not by reference.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 60.0  # generous: other Ray tests share these two cores
GRACEFUL_S = 0.5
IMMEDIATE_S = 0.5
# The escalation is timed on the monotonic clock, the reasons are stamped with
# the wall clock: allow for the wall clock's slew, nothing more.
SLEW = 1e-3


# -- agents: the shared blocking ones, each writing down the interrupts it accepts -----------------


class BlockingSync(RecordsInterrupts, BlocksForever):
    """A sync step blocking its thread (a sync sleep ignores cancellation)."""


class Swallower(RecordsInterrupts, SwallowsCancellation):
    """An async step that swallows every CancelledError."""


class BlockingLoop(RecordsInterrupts, BlocksItsLoop):
    """An ``async def`` that blocks its own event loop: nothing can run beside it."""


class Quick(RecordsInterrupts):
    """Each cycle awaits 0.2 s: a GRACEFUL stop finishes well within its timeout."""

    def initial_state(self, task):
        return {"n": 0, **task}

    async def step(self, state, ctx):
        Path(state["marker"]).touch()
        await asyncio.sleep(0.2)
        return kr.StepResult({**state, "n": state["n"] + 1})


def touch_later(path: str, delay_s: float) -> None:
    """In the actor: touch ``path`` from its shared deadline thread in ``delay_s`` seconds."""
    from kaizen_ray.core.deadlines import shared_scheduler

    shared_scheduler().call_later(("test-marker", path), delay_s, lambda: Path(path).touch())


def escalating_config(storage: Path, **overrides: Any) -> kr.AutonomousConfig:
    settings = {
        "checkpoint_frequency": 1,
        "graceful_shutdown_timeout": GRACEFUL_S,
        "immediate_shutdown_timeout": IMMEDIATE_S,
        **overrides,
    }
    return kr.AutonomousConfig(storage_path=storage, **settings)


# -- the chain ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "agent_cls",
    [BlockingSync, Swallower, BlockingLoop],
    ids=["sync-step-blocking", "async-step-swallowing-cancellation", "async-step-blocking-its-loop"],
)
def test_a_stuck_graceful_stop_escalates_to_immediate_then_to_a_kill(ray_cluster, storage, tmp_path, cleanup, agent_cls):
    marker, swallowed = tmp_path / "cycle2-started", tmp_path / "cancellation-swallowed"
    name = f"stuck-{agent_cls.__name__.lower()}"
    handle = agent_cls.spawn(config=escalating_config(storage), name=name)
    cleanup(handle)
    ref = handle.start({"marker": str(marker), "swallowed": str(swallowed)})
    wait_until(marker.exists, "cycle 2 to start (and get stuck)")

    assert handle.request_interrupt("programmatic", "graceful", "please stop") is True
    result = ray.get(ref, timeout=WAIT_S)  # start()'s ObjectRef resolves to the result dict, not ActorDiedError

    # The chain, as the agent's manager accepted it: graceful, then the SYSTEM escalation.
    history = read_history(storage, name)
    assert [(h["source"], h["mode"]) for h in history] == [("programmatic", "graceful"), ("system", "immediate")], history
    assert history[0]["message"] == "please stop"
    escalation = history[1]
    assert escalation["metadata"]["handler"] == "escalation"
    assert escalation["metadata"]["graceful_shutdown_timeout"] == GRACEFUL_S
    assert escalation["at"] - history[0]["at"] >= GRACEFUL_S * (1 - SLEW)  # not before its timeout

    # Then the kill: the result comes from the last flushed checkpoint.
    assert result["status"] == "killed" and result["mode"] == "immediate"
    reason = result["interrupt_reason"]  # the first accepted reason
    assert reason.message == "please stop" and reason.mode == kr.InterruptMode.GRACEFUL
    assert result["cycles"] == 1 and result["state"]["n"] == 1
    assert result["checkpoint_id"] is not None and reason.metadata["checkpoint_id"] == result["checkpoint_id"]
    saved = kr.load_checkpoint(result["checkpoint_id"], storage)  # checksum verified: whole, not torn
    assert saved.agent == name and saved.cycle == 1 and saved.state["n"] == 1
    if agent_cls is BlockingLoop:
        # Its loop never ran again after cycle 2 began: the periodic checkpoint of cycle 1 is the last one.
        assert saved.status == kr.CheckpointStatus.RUNNING
    else:
        # The loop was free: IMMEDIATE checkpointed the committed state before waiting for the stuck step.
        assert saved.status == kr.CheckpointStatus.INTERRUPTED
        assert saved.interrupt_reason is not None and saved.interrupt_reason.message == "please stop"
    if agent_cls is Swallower:
        assert swallowed.exists(), "the step never saw (and swallowed) a CancelledError"

    # The actor is gone, and control calls say so (AgentGoneError), rather than time out (TimeoutError).
    with pytest.raises(kr.AgentGoneError, match=name):
        handle.request_interrupt("programmatic", "graceful", "anyone there?")


def test_a_graceful_stop_that_finishes_in_time_is_not_escalated(ray_cluster, storage, tmp_path, cleanup):
    marker = tmp_path / "cycle-started"
    graceful_s = 1.0  # well above one 0.2 s cycle
    handle = Quick.spawn(config=escalating_config(storage, graceful_shutdown_timeout=graceful_s), name="finishes-in-time")
    cleanup(handle)
    ref = handle.start({"marker": str(marker)})
    wait_until(marker.exists, "a cycle to start")

    assert handle.request_interrupt("programmatic", "graceful", "please stop") is True
    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "interrupted" and result["mode"] == "graceful"
    assert kr.load_checkpoint(result["checkpoint_id"], storage).cycle == result["cycles"] >= 1
    # An absence needs a point past the deadline that matters. The actor's one
    # deadline thread fires in due order: a marker due later than the escalation
    # would have been fires after it, so once the marker is there, an escalation
    # that was not cancelled has fired, and its listener has written it down.
    marker_after = tmp_path / "past-the-escalation-deadline"
    ray.get(handle.actor.__ray_call__.remote(lambda actor: touch_later(str(marker_after), graceful_s)), timeout=WAIT_S)
    wait_until(marker_after.exists, "a deadline due after the escalation's to fire in the actor")
    assert [h["mode"] for h in read_history(storage, "finishes-in-time")] == ["graceful"]
    status = handle.status()
    assert status["phase"] == "finished" and status["mode"] == "graceful"


def test_run_watches_in_the_driver_and_reports_a_kill_also_inside_a_running_event_loop(ray_cluster, storage, tmp_path, cleanup):
    # handle.run() watches its run in the driver (no watcher task): past the
    # IMMEDIATE deadline it kills the actor and builds the "killed" result
    # itself, here from a coroutine's synchronous call, as in a Jupyter cell
    # (its kernel's thread runs an event loop, where asyncio.run would refuse).
    marker = tmp_path / "cycle2-started"
    handle = BlockingSync.spawn(config=escalating_config(storage), name="killed-under-run")
    cleanup(handle)

    def stop_when_stuck() -> None:
        wait_until(marker.exists, "cycle 2 to start (and get stuck)")
        handle.request_interrupt("programmatic", "immediate", "now")

    stopper = threading.Thread(target=stop_when_stuck)
    stopper.start()

    async def cell() -> dict[str, Any]:
        return handle.run({"marker": str(marker)})

    result = asyncio.run(cell())
    stopper.join(timeout=WAIT_S)
    assert result["status"] == "killed" and result["mode"] == "immediate", result
    assert result["interrupt_reason"].message == "now"
    assert result["cycles"] == 1 and result["state"]["n"] == 1
    assert kr.load_checkpoint(result["checkpoint_id"], storage).cycle == 1
    with pytest.raises(kr.AgentGoneError, match="killed-under-run"):
        handle.status()
