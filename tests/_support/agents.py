"""The in-process test agents the unit tier shares: pure Python, no Ray.

Each is small and deterministic, and says in its docstring what a test can
rely on. An agent that blocks exposes ``threading.Event`` s, so a test waits
on an event instead of sleeping. Import them as
``from tests._support.agents import Counter`` (the repository root is on
``sys.path`` under ``python -m pytest``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kaizen_ray as kr

__all__ = ["WAIT_S", "AwaitsAtCycle", "BlocksAtCycle", "Counter"]

#: The longest any helper here blocks: well below pytest's 180 s, so a broken
#: test fails with its own message and leaves no thread behind for long.
WAIT_S = 10.0


class Counter(kr.BaseAutonomousAgent):
    """Counts to ``task`` (an int), one async cycle at a time.

    State ``{"n", "goal", "trail"}``: ``trail`` holds ``n * n`` of every cycle,
    so a resumed run that skipped or repeated a cycle ends in another state.
    Output: ``n``; done at ``n >= goal``.
    """

    def initial_state(self, task: Any) -> dict[str, Any]:
        return {"n": 0, "goal": task, "trail": []}

    async def step(self, state: dict[str, Any], ctx: kr.StepContext) -> kr.StepResult:
        n = state["n"] + 1
        return kr.StepResult({**state, "n": n, "trail": [*state["trail"], n * n]}, done=n >= state["goal"], output=n)


class AwaitsAtCycle(kr.BaseAutonomousAgent):
    """Async: counts ``{"n"}`` up, but cycle ``block_at`` awaits forever (only a cancellation ends it).

    ``entered`` is set when that cycle starts awaiting, ``cancelled`` when it
    sees its ``CancelledError``. It never finishes on its own.
    """

    def __init__(self, *args: Any, block_at: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_at = block_at
        self.entered = threading.Event()
        self.cancelled = threading.Event()

    def initial_state(self, task: Any) -> dict[str, int]:
        return {"n": 0}

    async def step(self, state: dict[str, int], ctx: kr.StepContext) -> kr.StepResult:
        if ctx.cycle == self.block_at:
            self.entered.set()
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return kr.StepResult({"n": state["n"] + 1})


class BlocksAtCycle(kr.BaseAutonomousAgent):
    """A plain ``def`` step (runs in a thread): cycle ``block_at`` blocks until ``release`` is set.

    ``entered`` is set when that cycle starts blocking, ``unblocked`` when it
    stops blocking. Once released it commits like any cycle (``{"n": n + 1}``). The block is bounded by
    :data:`WAIT_S`, so a test that forgets to release leaves no thread for long.
    """

    def __init__(self, *args: Any, block_at: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.block_at = block_at
        self.entered = threading.Event()
        self.release = threading.Event()
        self.unblocked = threading.Event()

    def initial_state(self, task: Any) -> dict[str, int]:
        return {"n": 0}

    def step(self, state: dict[str, int], ctx: kr.StepContext) -> kr.StepResult:
        if ctx.cycle == self.block_at:
            self.entered.set()
            self.release.wait(WAIT_S)
            self.unblocked.set()
        return kr.StepResult({"n": state["n"] + 1})
