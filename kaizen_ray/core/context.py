"""What a step sees (``ctx``), and the two seams the Ray runtime plugs into.

The agent loop talks to spend through a :class:`BudgetClient` and to storage
through a :class:`CheckpointSink`. In-process they are the local handlers and
the file storage; on Ray, the budget actor and the checkpoint store actor. The
loop itself is the same code in both places.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Protocol

from kaizen_ray.core.checkpoint import Checkpoint, FileCheckpointStorage
from kaizen_ray.core.interrupts import InterruptManager

__all__ = ["StepContext", "BudgetClient", "LocalBudgetClient", "CheckpointSink", "FileCheckpointSink"]


def check_amount(amount: Any, what: str = "cost") -> float:
    """Validate a money amount: a finite number >= 0."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {amount!r}")
    return float(amount)


class BudgetClient(Protocol):
    """How an agent's spend reaches its budget scope(s)."""

    def charge(self, amount: float) -> None:
        """Record spend (consuming the cycle's reservation first)."""

    async def reserve(self, amount: float) -> bool:
        """Ask before spending; True if granted."""

    async def settle(self) -> None:
        """End of cycle: make the charges known, release what is left of reservations."""

    def snapshot(self) -> dict[str, Any] | None:
        """Spend and remaining budget of the scope, for status(); None without a budget."""

    def take_warning(self) -> dict[str, Any] | None:
        """Once: the budget snapshot if this agent's spend crossed the warning threshold."""


class LocalBudgetClient:
    """In-process: the :class:`~kaizen_ray.core.handlers.BudgetInterruptHandler` s on a manager."""

    def __init__(self, manager: InterruptManager) -> None:
        self._manager = manager
        self._reservations: list[tuple[Any, Any]] = []  # (handler, reservation) of this cycle
        self._warning: dict[str, Any] | None = None

    def _handlers(self) -> list[Any]:
        from kaizen_ray.core.handlers import BudgetInterruptHandler

        return [h for h in self._manager.handlers if isinstance(h, BudgetInterruptHandler)]

    def charge(self, amount: float) -> None:
        for handler in self._handlers():
            rid = next((r.id for h, r in self._reservations if h is handler), None)
            if handler.charge(amount, manager=self._manager, reservation_id=rid).warning:
                self._warning = handler.snapshot()

    async def reserve(self, amount: float) -> bool:
        granted: list[tuple[Any, Any]] = []
        for handler in self._handlers():
            reservation = handler.reserve(amount, manager=self._manager)
            if reservation is None:
                for h, r in granted:
                    h.release(r.id)
                return False
            granted.append((handler, reservation))
        self._reservations.extend(granted)
        return True

    async def settle(self) -> None:
        reservations, self._reservations = self._reservations, []
        for handler, reservation in reservations:
            handler.release(reservation.id)

    def snapshot(self) -> dict[str, Any] | None:
        handlers = self._handlers()
        return handlers[0].snapshot() if handlers else None

    def take_warning(self) -> dict[str, Any] | None:
        warning, self._warning = self._warning, None
        return warning


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
        await asyncio.to_thread(self.storage.write, checkpoint)
        return checkpoint.id

    async def load(self, agent: str, checkpoint_id: str) -> Checkpoint:
        from kaizen_ray.core.checkpoint import CheckpointNotFoundError

        if checkpoint_id == "latest":
            found = await asyncio.to_thread(self.storage.load_latest, agent)
            if found is None:
                raise CheckpointNotFoundError("latest", self.storage.path)
            return found
        return await asyncio.to_thread(self.storage.load, checkpoint_id)


class StepContext:
    """What ``step(state, ctx)`` sees of the run.

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
        cost = check_amount(cost)
        self._cycle_cost += cost
        if self._budget is not None:
            self._budget.charge(cost)

    async def reserve(self, cost: float) -> bool:
        """Ask the budget for ``cost`` before spending it; True if granted.

        A granted reservation is consumed by the ``charge`` calls that follow
        in this cycle; what is left is released when the cycle ends. Without a
        budget every reservation is granted.
        """
        cost = check_amount(cost)
        if self._budget is None:
            return True
        return await self._budget.reserve(cost)
