"""Money: a thread-safe ledger of spend and reservations for one budget scope.

Pure bookkeeping, no clock and no interrupts: the in-process
:class:`~kaizen_ray.core.handlers.BudgetInterruptHandler` and the Ray budget
actor both decide *when* to stop from the :class:`BudgetDecision` a charge
returns. Reservations make overshoot zero: a reservation is granted only if it
fits in what is neither spent nor already reserved. Money comparisons allow
:data:`MONEY_TOLERANCE`, so ``0.1 + 0.2`` fits a budget of ``0.3``.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from kaizen_ray.core._validate import finite_non_negative

logger = logging.getLogger("kaizen_ray.budget")

__all__ = ["MONEY_TOLERANCE", "BudgetDecision", "Reservation", "BudgetLedger"]

MONEY_TOLERANCE = 1e-9
"""Absolute slack on every money comparison (float sums are not exact)."""


_amount = finite_non_negative


@dataclass(frozen=True, slots=True)
class Reservation:
    """Money set aside before spending it; charges naming ``id`` consume it first.

    >>> BudgetLedger(1.0).reserve(0.4).amount
    0.4
    """

    id: str
    amount: float


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """What one charge did to the ledger.

    ``newly_exhausted`` is True only on the charge that made the ledger
    exhausted; ``warning`` only on the first charge at or past the warning
    threshold.

    >>> ledger = BudgetLedger(1.0)
    >>> ledger.charge(1.0)
    BudgetDecision(spent=1.0, remaining=0.0, exhausted=True, newly_exhausted=True, warning=True)
    """

    spent: float
    remaining: float
    exhausted: bool
    newly_exhausted: bool
    warning: bool


class BudgetLedger:
    """Spend and reservations of one budget scope. Thread-safe; picklable.

    ``remaining = max_cost - spent - reserved`` (shown as 0 when negative).
    Exhausted once ``spent >= max_cost`` (within tolerance) or after a refused
    reservation.

    >>> ledger = BudgetLedger(1.0)
    >>> r = ledger.reserve(0.6)
    >>> ledger.reserve(0.5) is None, ledger.exhausted  # 0.6 + 0.5 > 1.0: refused
    (True, True)
    >>> ledger.charge(0.25, reservation_id=r.id).spent, ledger.release(r.id)
    (0.25, 0.35)
    >>> BudgetLedger.from_snapshot(ledger.snapshot()).spent
    0.25
    """

    def __init__(self, max_cost: float, warning_threshold: float | None = 0.8) -> None:
        self._lock = threading.Lock()
        self._set_config(max_cost, warning_threshold)
        self._spent = 0.0
        self._reservations: dict[str, float] = {}  # id -> unused amount
        self._refusal: str | None = None  # why a reservation was refused, if one was
        self._warning_fired = False

    def _set_config(self, max_cost: Any, warning_threshold: Any) -> None:
        self._max_cost = _amount("max_cost", max_cost)
        if warning_threshold is not None:
            if isinstance(warning_threshold, bool) or not isinstance(warning_threshold, (int, float)) or not (
                0.0 < warning_threshold <= 1.0
            ):
                raise ValueError(
                    f"warning_threshold must be a fraction in (0, 1] or None, got {warning_threshold!r}"
                )
            warning_threshold = float(warning_threshold)
        self._warning_threshold: float | None = warning_threshold

    def __repr__(self) -> str:
        return f"BudgetLedger(max_cost={self._max_cost}, spent={self._spent}, reserved={self.reserved})"

    # -- reading -------------------------------------------------------------

    @property
    def max_cost(self) -> float:
        """The budget."""
        return self._max_cost

    @property
    def warning_threshold(self) -> float | None:
        """Fraction of ``max_cost`` at which the one-shot warning is due (None: never)."""
        return self._warning_threshold

    @property
    def spent(self) -> float:
        """Money charged so far."""
        return self._spent

    @property
    def reserved(self) -> float:
        """Money set aside by outstanding reservations and not yet charged."""
        with self._lock:
            return self._reserved_locked()

    @property
    def remaining(self) -> float:
        """``max_cost - spent - reserved``, never below 0."""
        with self._lock:
            return self._remaining_locked()

    @property
    def exhausted(self) -> bool:
        """True once ``spent >= max_cost`` (within tolerance) or a reservation was refused."""
        with self._lock:
            return self._exhausted_locked()

    @property
    def exhausted_reason(self) -> str | None:
        """Why the ledger is exhausted (None while it is not)."""
        with self._lock:
            if self._spent >= self._max_cost - MONEY_TOLERANCE:
                return f"spent {self._spent:g} of {self._max_cost:g}"
            return self._refusal

    def _reserved_locked(self) -> float:
        return math.fsum(self._reservations.values())

    def _remaining_locked(self) -> float:
        return max(0.0, self._max_cost - self._spent - self._reserved_locked())

    def _exhausted_locked(self) -> bool:
        return self._refusal is not None or self._spent >= self._max_cost - MONEY_TOLERANCE

    def _warning_due_locked(self) -> bool:
        if self._warning_fired or self._warning_threshold is None:
            return False
        if self._spent >= self._warning_threshold * self._max_cost - MONEY_TOLERANCE:
            self._warning_fired = True
            return True
        return False

    # -- spending ------------------------------------------------------------

    def charge(self, amount: float, *, reservation_id: str | None = None) -> BudgetDecision:
        """Record ``amount`` as spent, out of ``reservation_id`` first if given.

        What the reservation does not cover counts as fresh spend. A charge
        naming an unknown (e.g. already released) reservation is recorded all
        the same, as fresh spend: spend is never dropped.
        """
        amount = _amount("amount", amount)
        with self._lock:
            was_exhausted = self._exhausted_locked()
            if reservation_id is not None:
                unused = self._reservations.get(reservation_id)
                if unused is None:
                    logger.warning(
                        "charge of %g names reservation %r, which is not outstanding; counted as fresh spend",
                        amount,
                        reservation_id,
                    )
                else:
                    self._reservations[reservation_id] = max(0.0, unused - amount)
            self._spent += amount
            exhausted = self._exhausted_locked()
            return BudgetDecision(
                spent=self._spent,
                remaining=self._remaining_locked(),
                exhausted=exhausted,
                newly_exhausted=exhausted and not was_exhausted,
                warning=self._warning_due_locked(),
            )

    def reserve(self, amount: float) -> Reservation | None:
        """Set ``amount`` aside if ``spent + reserved + amount <= max_cost`` (within tolerance).

        Returns the :class:`Reservation`, or None: the refusal makes the ledger exhausted.
        """
        amount = _amount("amount", amount)
        with self._lock:
            reserved = self._reserved_locked()
            if self._spent + reserved + amount <= self._max_cost + MONEY_TOLERANCE:
                reservation = Reservation(id=f"res-{uuid.uuid4().hex}", amount=amount)
                self._reservations[reservation.id] = amount
                return reservation
            if self._refusal is None:
                self._refusal = (
                    f"reservation of {amount:g} refused: spent {self._spent:g} + reserved {reserved:g} "
                    f"+ {amount:g} exceeds max_cost {self._max_cost:g}"
                )
            return None

    def release(self, reservation_id: str) -> float:
        """Return what is left of a reservation to the budget; the amount released (0.0 if unknown)."""
        with self._lock:
            return self._reservations.pop(reservation_id, 0.0)

    def warning_due(self) -> bool:
        """True exactly once: the first time it is asked with ``spent >= threshold * max_cost``.

        Shares its one shot with :attr:`BudgetDecision.warning`.
        """
        with self._lock:
            return self._warning_due_locked()

    # -- persistence -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (for status() and for reloading after a crash)."""
        with self._lock:
            return {
                "max_cost": self._max_cost,
                "spent": self._spent,
                "reserved": self._reserved_locked(),
                "remaining": self._remaining_locked(),
                "exhausted": self._exhausted_locked(),
                "warning_fired": self._warning_fired,
                "warning_threshold": self._warning_threshold,
                "refusal": self._refusal,
                "reservations": dict(self._reservations),
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace this ledger's state with a :meth:`snapshot` (derived keys are recomputed)."""
        if not isinstance(snapshot, dict):
            raise TypeError(f"snapshot must be a dict from BudgetLedger.snapshot(), got {type(snapshot).__name__}")
        missing = {"max_cost", "spent"} - snapshot.keys()
        if missing:
            raise ValueError(f"snapshot lacks {sorted(missing)}; expected a dict from BudgetLedger.snapshot()")
        spent = _amount("snapshot['spent']", snapshot["spent"])
        reservations = {
            str(rid): _amount(f"snapshot['reservations'][{rid!r}]", value)
            for rid, value in dict(snapshot.get("reservations") or {}).items()
        }
        refusal = snapshot.get("refusal")
        with self._lock:
            self._set_config(snapshot["max_cost"], snapshot.get("warning_threshold", self._warning_threshold))
            self._spent = spent
            self._reservations = reservations
            self._refusal = None if refusal is None else str(refusal)
            self._warning_fired = bool(snapshot.get("warning_fired", False))

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> BudgetLedger:
        """A new ledger in the state of ``snapshot``."""
        ledger = cls.__new__(cls)
        ledger.__setstate__(snapshot)
        return ledger

    def __getstate__(self) -> dict[str, Any]:
        return self.snapshot()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._max_cost = 0.0
        self._warning_threshold = None
        self._warning_fired = False
        self.restore(state)
