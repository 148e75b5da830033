"""In-process spend: the :class:`BudgetInterruptHandler` s attached to the agent's manager.

The in-process :class:`~kaizen_ray.core.context.BudgetClient`; on Ray the
agent's actor wraps it in the budget actor's client, so a handler the agent
attached to its own manager still counts there.
"""

from __future__ import annotations

from typing import Any

from kaizen_ray.core.handlers import BudgetInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager

__all__ = ["LocalBudgetClient"]


class LocalBudgetClient:
    """In-process: the :class:`~kaizen_ray.core.handlers.BudgetInterruptHandler` s on a manager."""

    # Charges reach the handlers as they are made: only a cycle that charged or reserved needs settling.
    settles_every_cycle = False

    def __init__(self, manager: InterruptManager) -> None:
        self._manager = manager
        self._reservations: list[tuple[Any, Any]] = []  # (handler, reservation) of this cycle
        self._warning: dict[str, Any] | None = None

    def _handlers(self) -> list[Any]:
        return [h for h in self._manager.handlers if isinstance(h, BudgetInterruptHandler)]

    def charge(self, amount: float) -> None:
        for handler in self._handlers():
            # The reservation made last before this charge: a charge is what that reservation was for.
            rid = next((r.id for h, r in reversed(self._reservations) if h is handler), None)
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
