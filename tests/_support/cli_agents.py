"""Agents the ``kaizen-ray`` cluster tests run by ``MODULE:OBJ``.

The cluster's workers import this module by reference (``ray start`` and
every command get ``PYTHONPATH`` with this checkout), as a user's own module
would be imported: nothing here is shipped by value.

>>> Ticker(name="t").initial_state("3")
{'n': 0, 'goal': 3}
>>> [c.name for c in swarm()]
['left', 'right']
"""

from __future__ import annotations

import asyncio
from typing import Any

import kaizen_ray as kr

__all__ = ["OtherTicker", "Ticker", "not_specs", "swarm"]

TICK_S = 0.05  # per cycle: long enough for a test to catch a run going, short enough to finish soon


class Ticker(kr.BaseAutonomousAgent):
    """Counts one per cycle, charging 0.01 each, until ``task`` (an int, as text) cycles; for ever without one."""

    def initial_state(self, task: Any) -> dict[str, Any]:
        return {"n": 0, "goal": int(task) if task else None}

    async def step(self, state: dict[str, Any], ctx: Any) -> kr.StepResult:
        await asyncio.sleep(TICK_S)
        ctx.charge(0.01)
        n = state["n"] + 1
        done = state["goal"] is not None and n >= state["goal"]
        return kr.StepResult({**state, "n": n}, done=done, output=n if done else None)


class OtherTicker(Ticker):
    """Another agent class: ``run`` must not reuse a Ticker's actor for it."""


def swarm() -> list[kr.ChildSpec]:
    """Two tickers under one supervisor (a function returning ChildSpecs, as ``run`` accepts)."""
    return [kr.ChildSpec(Ticker, name="left"), kr.ChildSpec(Ticker, name="right")]


not_specs = [1, 2]  # a list that is not ChildSpecs: `run` must refuse it
