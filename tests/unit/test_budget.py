"""BudgetLedger: spend, reservations, tolerance, the one-shot warning, snapshots, threads."""

from __future__ import annotations

import math
import pickle
import random
import threading

import pytest

from kaizen_ray.core.budget import MONEY_TOLERANCE, BudgetDecision, BudgetLedger, Reservation


def test_charges_accumulate_and_the_crossing_charge_says_so() -> None:
    ledger = BudgetLedger(1.0, warning_threshold=None)
    first = ledger.charge(0.5)
    assert first == BudgetDecision(spent=0.5, remaining=0.5, exhausted=False, newly_exhausted=False, warning=False)
    crossing = ledger.charge(0.7)
    assert (crossing.spent, crossing.remaining, crossing.exhausted, crossing.newly_exhausted) == (1.2, 0.0, True, True)
    after = ledger.charge(0.1)
    assert after.exhausted and not after.newly_exhausted
    assert ledger.exhausted and ledger.remaining == 0.0 and ledger.spent == pytest.approx(1.3)


def test_float_sums_within_tolerance_count_as_the_budget() -> None:
    ledger = BudgetLedger(0.3)
    ledger.charge(0.1)
    decision = ledger.charge(0.2)  # 0.1 + 0.2 == 0.30000000000000004
    assert decision.exhausted and decision.newly_exhausted
    fits = BudgetLedger(0.3)
    fits.charge(0.1)
    assert fits.reserve(0.2) is not None  # 0.1 + 0.2 <= 0.3 + tolerance


def test_just_under_the_budget_is_not_exhausted() -> None:
    ledger = BudgetLedger(1.0)
    assert not ledger.charge(1.0 - 10 * MONEY_TOLERANCE).exhausted
    assert ledger.charge(10 * MONEY_TOLERANCE).exhausted


def test_zero_budget_is_exhausted_by_any_charge_and_refuses_reservations() -> None:
    ledger = BudgetLedger(0.0)
    assert ledger.exhausted  # spent 0 >= max 0
    assert ledger.reserve(0.0) is not None  # nothing asked, nothing refused
    assert ledger.reserve(0.01) is None


def test_reservations_are_granted_only_while_they_fit() -> None:
    ledger = BudgetLedger(1.0)
    a = ledger.reserve(0.6)
    assert isinstance(a, Reservation) and a.amount == 0.6
    assert ledger.reserved == pytest.approx(0.6) and ledger.remaining == pytest.approx(0.4)
    assert not ledger.exhausted
    assert ledger.reserve(0.5) is None
    assert ledger.exhausted
    assert ledger.exhausted_reason is not None and "reservation of 0.5 refused" in ledger.exhausted_reason


def test_a_charge_consumes_its_reservation_first_then_counts_fresh() -> None:
    ledger = BudgetLedger(10.0)
    r = ledger.reserve(2.0)
    assert r is not None
    ledger.charge(1.5, reservation_id=r.id)
    assert (ledger.spent, ledger.reserved) == (1.5, 0.5)
    ledger.charge(1.0, reservation_id=r.id)  # 0.5 from the reservation, 0.5 fresh
    assert (ledger.spent, ledger.reserved) == (2.5, 0.0)
    assert ledger.release(r.id) == 0.0
    assert ledger.release(r.id) == 0.0  # releasing twice is harmless


def test_release_returns_the_unused_part() -> None:
    ledger = BudgetLedger(10.0)
    r = ledger.reserve(3.0)
    assert r is not None
    ledger.charge(1.0, reservation_id=r.id)
    assert ledger.release(r.id) == 2.0
    assert ledger.reserved == 0.0 and ledger.remaining == 9.0


def test_a_charge_on_an_unknown_reservation_is_never_dropped() -> None:
    ledger = BudgetLedger(10.0)
    assert ledger.charge(2.0, reservation_id="res-gone").spent == 2.0


def test_the_warning_fires_exactly_once() -> None:
    ledger = BudgetLedger(10.0, warning_threshold=0.8)
    assert [ledger.charge(x).warning for x in (5.0, 2.9, 0.1, 1.0, 5.0)] == [False, False, True, False, False]
    assert ledger.warning_due() is False
    assert ledger.snapshot()["warning_fired"] is True
    assert BudgetLedger(10.0).warning_due() is False  # nothing spent: not due
    assert BudgetLedger(10.0, warning_threshold=None).charge(10.0).warning is False  # disabled


def test_warning_due_shares_the_one_shot_with_charge() -> None:
    ledger = BudgetLedger(10.0)
    ledger.restore({"max_cost": 10.0, "spent": 9.0})
    assert ledger.warning_due() is True
    assert ledger.charge(0.5).warning is False


@pytest.mark.parametrize("bad", [-0.01, math.nan, math.inf, "1", None, True])
def test_amounts_must_be_finite_and_non_negative(bad: object) -> None:
    ledger = BudgetLedger(1.0)
    for call in (ledger.charge, ledger.reserve):
        with pytest.raises(ValueError, match="amount") as info:
            call(bad)  # type: ignore[arg-type]
        assert repr(bad) in str(info.value)
    with pytest.raises(ValueError, match="max_cost"):
        BudgetLedger(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1, math.nan])
def test_warning_threshold_is_a_fraction(bad: float) -> None:
    with pytest.raises(ValueError, match="warning_threshold"):
        BudgetLedger(1.0, warning_threshold=bad)


def test_snapshot_and_restore_reload_the_state_after_a_crash() -> None:
    ledger = BudgetLedger(5.0)
    r = ledger.reserve(1.0)
    assert r is not None
    ledger.charge(4.2)
    snap = ledger.snapshot()
    assert snap["max_cost"] == 5.0 and snap["spent"] == 4.2 and snap["reserved"] == 1.0
    assert snap["remaining"] == 0.0 and snap["exhausted"] is False and snap["warning_fired"] is True
    reloaded = pickle.loads(pickle.dumps(snap))  # plain data
    again = BudgetLedger.from_snapshot(reloaded)
    assert again.snapshot() == snap
    assert again.charge(0.5, reservation_id=r.id).spent == pytest.approx(4.7)  # the reservation survived
    other = BudgetLedger(99.0)
    other.restore(snap)
    assert other.snapshot() == snap


def test_restore_keeps_a_refusal_and_a_fired_warning() -> None:
    ledger = BudgetLedger(1.0)
    ledger.charge(0.9)
    assert ledger.reserve(0.5) is None
    again = BudgetLedger.from_snapshot(ledger.snapshot())
    assert again.exhausted and again.snapshot()["warning_fired"] is True
    assert again.charge(0.01).warning is False


def test_restore_rejects_a_bad_snapshot() -> None:
    with pytest.raises(ValueError, match="spent"):
        BudgetLedger(1.0).restore({"max_cost": 1.0})
    with pytest.raises(ValueError, match="spent"):
        BudgetLedger(1.0).restore({"max_cost": 1.0, "spent": -3})


def test_a_ledger_pickles_without_its_lock() -> None:
    ledger = BudgetLedger(2.0)
    ledger.charge(1.0)
    copy = pickle.loads(pickle.dumps(ledger))
    assert copy.snapshot() == ledger.snapshot()
    copy.charge(1.0)  # its new lock works
    assert copy.exhausted and not ledger.exhausted


def test_eight_threads_never_oversubscribe_reservations() -> None:
    max_cost = 50.0
    ledger = BudgetLedger(max_cost)
    violations: list[str] = []
    charged: list[list[float]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        rng = random.Random(1000 + n)
        start.wait(30)
        for _ in range(400):
            r = ledger.reserve(rng.choice([0.1, 0.25, 0.5, 1.0, 2.0]))
            snap = ledger.snapshot()
            if snap["spent"] + snap["reserved"] > max_cost + MONEY_TOLERANCE:
                violations.append(f"oversubscribed: {snap}")
            if r is None:
                continue
            cost = round(r.amount * rng.random(), 6)  # spend within the reservation
            ledger.charge(cost, reservation_id=r.id)
            charged[n].append(cost)
            if rng.random() < 0.5:
                ledger.release(r.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not violations, violations[:3]
    total = math.fsum(c for per in charged for c in per)
    assert ledger.spent == pytest.approx(total, abs=1e-6)
    assert ledger.spent <= max_cost + MONEY_TOLERANCE  # zero overshoot with reservations
    assert ledger.spent + ledger.reserved <= max_cost + MONEY_TOLERANCE
