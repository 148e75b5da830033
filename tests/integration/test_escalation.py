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

import functools

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr

import _waiting  # noqa: E402 - shared helper beside this file (pytest puts this folder on sys.path)

pytestmark = pytest.mark.ray

# pytest imports this file as a top-level module Ray's workers cannot import:
# ship its agent classes by value, not by reference.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 60.0  # generous: other Ray tests share these two cores
GRACEFUL_S = 0.5
IMMEDIATE_S = 0.5


wait_until = functools.partial(_waiting.wait_until, timeout=WAIT_S, poll=0.02)




def history_file(storage: Path, name: str) -> Path:
    return Path(storage).parent / f"history-{name}.jsonl"


def read_history(storage: Path, name: str) -> list[dict[str, Any]]:
    path = history_file(storage, name)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- agents (module level: cloudpickle ships them to the actors by value) ----------


class Recorded(kr.BaseAutonomousAgent):
    """Appends every interrupt its manager accepts to ``history-<name>.jsonl`` beside its storage."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._history = history_file(self.config.storage_path, self.name)
        self.interrupt_manager.add_listener(self._record)

    def _record(self, reason: kr.InterruptReason, mode: kr.InterruptMode) -> None:
        line = {
            "source": reason.source.value,
            "mode": mode.value,
            "message": reason.message,
            "metadata": {k: v for k, v in reason.metadata.items() if isinstance(v, (str, int, float, bool))},
            "at": reason.timestamp.timestamp(),
        }
        with open(self._history, "a") as f:
            f.write(json.dumps(line) + "\n")

    def initial_state(self, task):
        return {"n": 0, **task}


class BlockingSync(Recorded):
    """Cycle 1 returns at once; cycle 2 marks its start and blocks its thread (a sync sleep ignores cancellation)."""

    def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            time.sleep(120)
        return kr.StepResult({**state, "n": state["n"] + 1})


class Swallower(Recorded):
    """Cycle 1 returns at once; cycle 2 marks its start and awaits, swallowing every CancelledError."""

    async def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            give_up = time.monotonic() + 120
            while time.monotonic() < give_up:
                try:
                    await asyncio.sleep(120)
                except asyncio.CancelledError:
                    Path(state["swallowed"]).touch()  # and on it goes
        return kr.StepResult({**state, "n": state["n"] + 1})


class BlockingLoop(Recorded):
    """Like BlockingSync, but an ``async def`` that blocks its own event loop: nothing can run beside it."""

    async def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            time.sleep(120)  # noqa: ASYNC251 - the point: it blocks its own event loop
        return kr.StepResult({**state, "n": state["n"] + 1})


class Quick(Recorded):
    """Each cycle awaits 0.2 s: a GRACEFUL stop finishes well within its timeout."""

    async def step(self, state, ctx):
        Path(state["marker"]).touch()
        await asyncio.sleep(0.2)
        return kr.StepResult({**state, "n": state["n"] + 1})


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
    assert escalation["at"] - history[0]["at"] >= GRACEFUL_S - 0.05  # not before its timeout

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

    # The actor is gone, and control calls say so promptly.
    t0 = time.monotonic()
    with pytest.raises(kr.AgentGoneError, match=name):
        handle.request_interrupt("programmatic", "graceful", "anyone there?")
    assert time.monotonic() - t0 < 5.0


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
    # An absence needs a wait: past the graceful timeout, the finished run's
    # escalation deadline must have been cancelled, not fired.
    time.sleep(graceful_s + 0.5)
    assert [h["mode"] for h in read_history(storage, "finishes-in-time")] == ["graceful"]
    status = handle.status()
    assert status["phase"] == "finished" and status["mode"] == "graceful"
