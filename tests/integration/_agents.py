"""Agents several Ray test modules share. Shipped to the actors by value (workers cannot import tests/)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import ray.cloudpickle

import kaizen_ray as kr

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def advance(state: dict[str, Any], agent_name: str) -> dict[str, Any]:
    """The counter's transition: ``acc`` depends on every cycle, in order."""
    n = state["n"] + 1
    return {**state, "n": n, "acc": (state["acc"] * 31 + n * n) % 1_000_003, "agent": agent_name}


def expected_state(task: dict[str, Any], agent_name: str) -> dict[str, Any]:
    """The final state of an undisturbed :class:`Counter` run on ``task``."""
    state = Counter.initial_state(None, task)  # type: ignore[arg-type]
    while state["n"] < task["goal"]:
        state = advance(state, agent_name)
    return state


class Counter(kr.BaseAutonomousAgent):
    """Counts to ``goal``, one short sleep per cycle; deterministic, so a resumed run can be checked exactly."""

    def initial_state(self, task: dict[str, Any]) -> dict[str, Any]:
        return {"n": 0, "acc": task["seed"], "goal": task["goal"], "delay": task["delay"], "agent": None}

    async def step(self, state: dict[str, Any], ctx: Any) -> kr.StepResult:
        await asyncio.sleep(state["delay"])
        new = advance(state, ctx.agent_name)
        return kr.StepResult(new, done=new["n"] >= new["goal"], output=new["acc"])


class AwaitsForever(kr.BaseAutonomousAgent):
    """Cycle 1 returns at once; cycle 2 marks its start and awaits for an hour, noting a cancellation."""

    def initial_state(self, task):
        return {"n": 0, **task}

    async def step(self, state, ctx):
        if state["n"] >= 1:
            Path(state["marker"]).touch()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                Path(state["cancelled"]).touch()
                raise
        return kr.StepResult({**state, "n": state["n"] + 1})
