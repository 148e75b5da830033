"""What a step sees (``ctx``) and returns (:class:`StepResult`), and the two seams the Ray runtime plugs into.

The agent loop talks to spend through a :class:`BudgetClient` and to storage
through a :class:`CheckpointSink`. In-process they are the local handlers
(:mod:`kaizen_ray.core._local_budget`) and the file storage; on Ray, the
budget actor and the checkpoint store actor. The loop itself is the same code
in both places.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kaizen_ray.core._validate import finite_non_negative
from kaizen_ray.core.checkpoint import Checkpoint, CheckpointNotFoundError, FileCheckpointStorage
from kaizen_ray.core.interrupts import InterruptManager

__all__ = ["StepContext", "StepResult", "BudgetClient", "CheckpointSink", "FileCheckpointSink"]

_T = TypeVar("_T")
# One pool for the process, not the running loop's default executor (asyncio.to_thread): each
# asyncio.run(agent.run_autonomous(...)), as the seed runs an agent, makes a new loop, whose
# executor would start its threads for the run and join them as it ends (about 0.6 ms of a small
# run). As many threads as that executor would have; they start on first use, and at exit
# concurrent.futures lets every write finish.
_IO_POOL = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="kaizen-ray-io")


async def _in_io_thread(fn: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_IO_POOL, fn, *args)


@dataclass(frozen=True)
class StepResult:
    """What one step returns: the new state, whether the task is done, and its output.

    >>> StepResult({"n": 1}).done
    False
    """

    state: Any
    done: bool = False
    output: Any = None


class BudgetClient(Protocol):
    """How an agent's spend reaches its budget scope(s)."""

    def charge(self, amount: float) -> None:
        """Record spend (consuming the cycle's reservation first)."""

    async def reserve(self, amount: float) -> bool:
        """Ask before spending; True if granted."""

    #: True if :meth:`settle` must follow every cycle, even one that neither charged nor reserved
    #: (a budget that other agents spend too); else the loop settles only after cycles that did.
    settles_every_cycle: bool

    async def settle(self) -> None:
        """End of cycle: make the charges known, release what is left of reservations."""

    def snapshot(self) -> dict[str, Any] | None:
        """Spend and remaining budget of the scope, for status(); None without a budget."""

    def take_warning(self) -> dict[str, Any] | None:
        """Once: the budget snapshot if this agent's spend crossed the warning threshold."""


class CheckpointSink(Protocol):
    """Where the loop saves and finds checkpoints."""

    async def save(self, checkpoint: Checkpoint, *, durable: bool) -> str:
        """Save; ``durable`` means on disk before returning. Returns the id."""

    async def load(self, agent: str, checkpoint_id: str) -> Checkpoint:
        """A checkpoint by id, or the agent's newest good one for ``"latest"``."""


class FileCheckpointSink:
    """In-process: writes straight to a :class:`FileCheckpointStorage` (always durable)."""

    def __init__(self, storage: FileCheckpointStorage) -> None:
        self.storage = storage

    async def save(self, checkpoint: Checkpoint, *, durable: bool) -> str:
        await _in_io_thread(self.storage.write, checkpoint)
        return checkpoint.id

    async def load(self, agent: str, checkpoint_id: str) -> Checkpoint:
        if checkpoint_id == "latest":
            found = await _in_io_thread(self.storage.load_latest, agent)
            if found is None:
                raise CheckpointNotFoundError("latest", self.storage.path)
            return found
        return await _in_io_thread(self.storage.load, checkpoint_id)


class StepContext:
    """What ``step(state, ctx)`` sees of the run.

    A run passes the same context to each of its steps, and sets ``cycle``
    (the cycle in flight) and the spend before each one: building a new one
    per cycle would cost an empty cycle more than the cycle itself.

    >>> ctx = StepContext(agent_name="a1", cycle=1, manager=InterruptManager())
    >>> ctx.charge(0.25); ctx.cost, ctx.interrupted
    (0.25, False)
    """

    def __init__(
        self,
        *,
        agent_name: str,
        cycle: int,
        manager: InterruptManager,
        budget: BudgetClient | None = None,
        cost_so_far: float = 0.0,
    ) -> None:
        self.agent_name = agent_name
        self.cycle = cycle
        self._manager = manager
        self._budget = budget
        self._cost_so_far = cost_so_far
        self._cycle_cost = 0.0
        self._touched = False  # charged or reserved this cycle: the budget is settled after it

    @property
    def interrupted(self) -> bool:
        """True once an interrupt was accepted: a long step may choose to return early."""
        return self._manager.is_interrupted()

    @property
    def cost(self) -> float:
        """Total spend of this agent's run so far, this cycle included."""
        return self._cost_so_far + self._cycle_cost

    @property
    def cycle_cost(self) -> float:
        """Spend charged during this cycle."""
        return self._cycle_cost

    def charge(self, cost: float) -> None:
        """Record ``cost`` as spent (settled with the budget before the next cycle)."""
        cost = finite_non_negative("cost", cost)
        self._cycle_cost += cost
        self._touched = True
        if self._budget is not None:
            self._budget.charge(cost)

    async def reserve(self, cost: float) -> bool:
        """Ask the budget for ``cost`` before spending it; True if granted.

        A granted reservation is consumed by the ``charge`` calls that follow
        in this cycle; what is left is released when the cycle ends. Without a
        budget every reservation is granted.
        """
        cost = finite_non_negative("cost", cost)
        if self._budget is None:
            return True
        self._touched = True
        return await self._budget.reserve(cost)
