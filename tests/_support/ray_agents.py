"""The agents and Ray look-ups the Ray test modules share.

Ray's workers cannot import ``tests/``: this module (and every test module
that subclasses an agent from it) is shipped to the actors by value.

Every agent that blocks marks the start of the cycle a test cares about by
touching a file (``task["marker"]``; the actors run on this machine), so that
the test awaits that event instead of sleeping and hoping the step has begun.
None blocks for longer than :data:`BLOCK_S`: a test that fails to stop one
still ends, and its actor is killed by the ``cleanup`` fixture.

>>> counting(3)
{'goal': 3, 'seed': 1, 'delay': 0.01}
>>> expected_state(counting(2), "a1")["n"]
2
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray.runtime.timer import GcsDeadlineStore
from tests._support.waiting import wait_until

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

__all__ = [
    "AwaitsForever", "BLOCK_S", "BlocksForever", "BlocksItsLoop", "Counter", "Polite", "RecordsInterrupts",
    "Spender", "SwallowsCancellation", "WaitsForRelease", "child_status", "counting", "expected_state",
    "read_history", "run_driver", "wait_for_checkpointed_cycle",
]  # fmt: skip

BLOCK_S = 120.0  # longer than any wait of a test, shorter than pytest's timeout
_PRIME = 1_000_003


def _touch(path: str | None) -> None:
    if path:
        Path(path).touch()


# -- a deterministic counter ----------------------------------------------------------------------


def counting(goal: int | None = None, *, seed: int = 1, delay: float = 0.01) -> dict[str, Any]:
    """The task of a :class:`Counter`: count to ``goal`` (for ever if None), ``delay`` seconds per cycle."""
    return {"goal": goal, "seed": seed, "delay": delay}


def advance(state: dict[str, Any], agent_name: str, cycle: int) -> dict[str, Any]:
    """The counter's transition: ``acc`` folds in every cycle's ``n`` and ``ctx.cycle``, in order.

    A run that repeated, skipped or renumbered a cycle (a bad resume) ends with another ``acc``.
    """
    n = state["n"] + 1
    return {**state, "n": n, "acc": (state["acc"] * 31 + n * n + cycle) % _PRIME, "agent": agent_name}


def expected_state(task: dict[str, Any], agent_name: str) -> dict[str, Any]:
    """The final state of an undisturbed :class:`Counter` run on ``task`` (a finite goal)."""
    state = Counter.initial_state(None, task)  # type: ignore[arg-type]
    while state["n"] < task["goal"]:
        state = advance(state, agent_name, state["n"] + 1)
    return state


class Counter(kr.BaseAutonomousAgent):
    """Counts to ``task["goal"]`` (or ``task`` itself, an int; None: for ever), one short await per cycle.

    Deterministic: a resumed or restarted run can be checked exactly against
    :func:`expected_state`. The output is the count.
    """

    def initial_state(self, task: Any) -> dict[str, Any]:
        task = counting(task) if task is None or isinstance(task, int) else {**counting(), **task}
        return {"n": 0, "acc": task["seed"], "goal": task["goal"], "delay": task["delay"], "agent": None}

    async def step(self, state: dict[str, Any], ctx: Any) -> kr.StepResult:
        await asyncio.sleep(state["delay"])
        new = advance(state, ctx.agent_name, ctx.cycle)
        goal = new["goal"]
        return kr.StepResult(new, done=goal is not None and new["n"] >= goal, output=new["n"])


def deadlines_of(namespace: str, agent: str) -> dict[str, dict[str, Any]]:
    """``agent``'s deadlines as the namespace's timer keeps them (its saved records, by key); other tests' come and go."""
    return {key: r for key, r in GcsDeadlineStore(namespace).load().items() if r["payload"]["name"] == agent}


class SlowToStart(Counter):
    """A :class:`Counter` whose actor is up only once ``release-init`` exists in its storage folder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        release = Path(self.config.storage_path) / "release-init"
        wait_until(release.exists, f"{release} (the test's release of this actor's start)", timeout=60, poll=0.01)


# -- agents that block: cycle 1 returns at once, cycle 2 marks its start and blocks ---------------


class _SecondCycleBlocks(kr.BaseAutonomousAgent):
    def initial_state(self, task: Any) -> dict[str, Any]:
        return {"n": 0, **(task or {})}

    def _next(self, state: dict[str, Any]) -> kr.StepResult:
        return kr.StepResult({**state, "n": state["n"] + 1})


class AwaitsForever(_SecondCycleBlocks):
    """Cycle 2 awaits (so it can be cancelled), touching ``task["cancelled"]`` when it sees CancelledError."""

    async def step(self, state, ctx):
        if state["n"] >= 1:
            _touch(state.get("marker"))
            try:
                await asyncio.sleep(BLOCK_S)
            except asyncio.CancelledError:
                _touch(state.get("cancelled"))
                raise
        return self._next(state)


class BlocksForever(_SecondCycleBlocks):
    """A sync step: cycle 2 blocks its thread, which nothing can cancel."""

    def step(self, state, ctx):
        if state["n"] >= 1:
            _touch(state.get("marker"))
            time.sleep(BLOCK_S)
        return self._next(state)


class BlocksItsLoop(_SecondCycleBlocks):
    """An ``async def`` whose cycle 2 blocks its own event loop: no await to cancel at, nothing runs beside it."""

    async def step(self, state, ctx):
        if state["n"] >= 1:
            _touch(state.get("marker"))
            time.sleep(BLOCK_S)  # noqa: ASYNC251 - the point: it blocks its own event loop
        return self._next(state)


class SwallowsCancellation(_SecondCycleBlocks):
    """Cycle 2 awaits, swallowing every CancelledError (touching ``task["swallowed"]``)."""

    async def step(self, state, ctx):
        if state["n"] >= 1:
            _touch(state.get("marker"))
            give_up = time.monotonic() + BLOCK_S
            while time.monotonic() < give_up:
                try:
                    await asyncio.sleep(BLOCK_S)
                except asyncio.CancelledError:
                    _touch(state.get("swallowed"))  # and on it goes
        return self._next(state)


class WaitsForRelease(kr.BaseAutonomousAgent):
    """A sync step that marks its start, then blocks until the file ``task["release"]`` exists.

    While it waits, the test knows the step is in flight: no stopwatch needed.
    Each committed cycle records ``(start, end)`` in ``state["spans"]``.
    """

    def initial_state(self, task):
        return {"n": 0, "spans": [], **task}

    def step(self, state, ctx):
        _touch(state["marker"])
        start = time.time()
        give_up = time.monotonic() + BLOCK_S
        while not Path(state["release"]).exists() and time.monotonic() < give_up:
            time.sleep(0.005)
        spans = [*state["spans"], (start, time.time())]
        return kr.StepResult({**state, "n": state["n"] + 1, "spans": spans}, done=state.get("once", False))


class Polite(kr.BaseAutonomousAgent):
    """A sync step that marks its start, watches ``ctx.interrupted`` and returns once it is set.

    Touches ``task["saw"]`` when it saw the interrupt. With ``task["linger"]``
    it then waits for the runtime to be stopping, so that its return cannot
    race the IMMEDIATE's arrival on the event loop: the runtime has decided
    about the cycle in flight before the step's result exists.
    """

    def initial_state(self, task):
        return {"n": 0, "saw_interrupt": False, "saw": None, "linger": False, **task}

    def step(self, state, ctx):
        _touch(state["marker"])
        give_up = time.monotonic() + BLOCK_S
        while not ctx.interrupted and time.monotonic() < give_up:
            time.sleep(0.005)
        if ctx.interrupted:
            _touch(state["saw"])
        while state["linger"] and self.phase != kr.AgentPhase.STOPPING and time.monotonic() < give_up:
            time.sleep(0.005)
        return kr.StepResult({**state, "n": state["n"] + 1, "saw_interrupt": ctx.interrupted})


# -- interrupts, written down -----------------------------------------------------------------------


def history_file(storage: Path | str, name: str) -> Path:
    """Where :class:`RecordsInterrupts` writes ``name``'s interrupts: beside its storage folder."""
    return Path(storage).parent / f"history-{name.replace('/', '%2F')}.jsonl"


def read_history(storage: Path | str, name: str) -> list[dict[str, Any]]:
    """Every interrupt ``name``'s manager accepted, oldest first (readable after its actor is gone)."""
    path = history_file(storage, name)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class RecordsInterrupts(kr.BaseAutonomousAgent):
    """A mixin: appends every interrupt the agent's manager accepts to :func:`history_file`."""

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


# -- spending ------------------------------------------------------------------------------------------


class Spender(kr.BaseAutonomousAgent):
    """Pays ``task["cost"]`` per cycle, for ever; with ``reserve`` it asks the budget first and skips if refused.

    With ``warn_dir``, its BUDGET_WARNING hook leaves one file per firing there.
    With ``hold_at``, once it has paid that many cycles it touches ``held`` (a
    path prefix, plus its name) and waits for the file ``go`` before paying on.
    """

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.hooks.register(kr.HookEvent.BUDGET_WARNING, self._warned)

    def _warned(self, ctx: kr.HookContext) -> None:
        if ctx.state.get("warn_dir"):
            record = {"agent": ctx.agent_name, "spent": ctx.data["budget"]["spent"]}
            (Path(ctx.state["warn_dir"]) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(record))

    def initial_state(self, task):
        defaults = {"cost": 0.1, "reserve": False, "delay": 0.05, "warn_dir": None, "hold_at": None, "held": None, "go": None}
        return {"paid": 0, "refused": 0, **defaults, **(task or {})}

    async def step(self, state, ctx):
        if state["hold_at"] is not None and state["paid"] >= state["hold_at"] and not Path(state["go"]).exists():
            _touch(f"{state['held']}{ctx.agent_name.replace('/', '%2F')}")
            give_up = time.monotonic() + BLOCK_S
            while not Path(state["go"]).exists() and time.monotonic() < give_up:
                await asyncio.sleep(0.01)
        if state["reserve"] and not await ctx.reserve(state["cost"]):
            return kr.StepResult({**state, "refused": state["refused"] + 1})
        # The "call": long enough for the other agents' reservations and charges to interleave.
        await asyncio.sleep(state["delay"])
        ctx.charge(state["cost"])
        return kr.StepResult({**state, "paid": state["paid"] + 1})


# -- looking at supervised children ----------------------------------------------------------------


def child_status(namespace: str, full_name: str, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """The status of the actor named ``full_name``, or None while it is not (or no longer) there."""
    try:
        return ray.get(ray.get_actor(full_name, namespace=namespace).status.remote(), timeout=timeout_s)
    except (ValueError, ray.exceptions.RayActorError):  # not spawned yet, or being replaced
        return None


def wait_for_checkpointed_cycle(namespace: str, full_name: str, at_least: int, timeout: float = 90.0) -> tuple[Any, dict[str, Any]]:
    """The actor of ``full_name`` and its status once it has checkpointed ``at_least`` cycles (bounded)."""
    def reached() -> tuple[Any, dict[str, Any]] | None:
        status = child_status(namespace, full_name)
        if status is not None and status["cycle"] >= at_least and status["checkpoint_id"] is not None:
            return ray.get_actor(full_name, namespace=namespace), status
        return None

    return wait_until(reached, f"{full_name} to checkpoint cycle {at_least}", timeout=timeout, poll=0.05)


# -- other drivers -------------------------------------------------------------------------------------

DRIVER_TIMEOUT_S = 100.0  # a whole driver (maybe its own Ray start-up), well inside pytest's 180 s


def run_driver(args: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
               timeout: float = DRIVER_TIMEOUT_S) -> tuple[int, str]:
    """Run ``python *args`` as a driver in a session of its own; its exit code and stdout+stderr.

    On a timeout (or an interrupted test) its whole process group is killed,
    with any Ray it started, and the test fails naming the command.
    """
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"driver {args[:2]} did not exit within {timeout}s; its output:\n{out[-3000:]}")
    finally:
        if proc.poll() is None:  # the test itself was interrupted
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out
