"""Budget charges per second through the budget actor, against a bare actor method doing the same arithmetic.

Each charge is one ``settle`` call on the scope's actor (``runtime/budget.py``:
the ledger updated, written atomically to disk before the call answers, the
warning and the stop checked), the call an agent makes at the end of a cycle
that charged. The baseline, in the same run, is a bare actor whose ``settle``
only adds the charges up and answers. Both are driven from 1 caller (the
driver, one call after the other) and from 4 concurrent callers (4 actors,
each one call after the other). The figure is charges per second; its ratio
is the bare rate over the budget actor's, i.e. how many times slower a
durable charge is (no goal: the durability is the point).

    python -m benchmarks.budget_throughput [--quick] [--charges 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import ray.cloudpickle

import kaizen_ray as kr
from benchmarks import _report
from kaizen_ray.runtime.budget import create_budget_scope

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAME = "budget_throughput"
CALLERS = 4
CHARGE = 0.001


@ray.remote(num_cpus=0)
class BareLedger:
    """The baseline: ``settle`` with the budget actor's signature, adding the charges up and answering."""

    def __init__(self) -> None:
        self.spent = 0.0

    def settle(self, agent: str, charges: list[tuple[float, str | None]], release: list[str], call_id: str | None = None) -> dict[str, Any]:
        self.spent += sum(c for c, _ in charges)
        return {"spent": self.spent, "warning": False, "stop": None}

    def total(self) -> float:
        return self.spent


@ray.remote(num_cpus=0)
class Caller:
    """One of the concurrent callers: ``n`` charges, one after the other, as an agent would settle them."""

    async def charge(self, target: Any, agent: str, n: int) -> int:
        for _ in range(n):
            await target.settle.remote(agent, [(CHARGE, None)], [], uuid.uuid4().hex)
        return n


def _one_caller(target: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        ray.get(target.settle.remote("driver", [(CHARGE, None)], [], uuid.uuid4().hex))
    return n / (time.perf_counter() - t0)


def _many_callers(target: Any, callers: list[Any], n: int) -> float:
    per = n // len(callers)
    t0 = time.perf_counter()
    done = sum(ray.get([c.charge.remote(target, f"agent-{i}", per) for i, c in enumerate(callers)]))
    return done / (time.perf_counter() - t0)


def measure(n: int) -> dict[str, float]:
    """Charges per second: budget actor and bare ledger, from one caller and from ``CALLERS``."""
    storage = tempfile.mkdtemp(prefix="kaizen-bench-")
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"bench-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        scope = create_budget_scope("bench", kr.BudgetInterruptHandler(max_cost=1e12), storage, "bench")
        bare = BareLedger.remote()
        callers = [Caller.remote() for _ in range(CALLERS)]
        warm = max(10, n // 20)  # connections, imports, the ledger's first write: not measured
        for target in (scope, bare):
            _one_caller(target, warm)
            _many_callers(target, callers, warm * CALLERS)
        rates = {
            "budget_1": _one_caller(scope, n), "bare_1": _one_caller(bare, n),
            "budget_many": _many_callers(scope, callers, n), "bare_many": _many_callers(bare, callers, n),
        }  # fmt: skip
        spent = ray.get(scope.snapshot.remote())["spent"]
        expected = CHARGE * (warm + warm * CALLERS + n + n // CALLERS * CALLERS)
        if abs(spent - expected) > 1e-6 * max(1.0, expected):
            raise RuntimeError(f"the budget actor counted {spent} spent; expected {expected} (a charge lost or counted twice)")
    finally:
        ray.shutdown()
    return rates


def main(argv: list[str] | None = None) -> bool:
    """Measure, print, write ``benchmarks/results/budget_throughput.json``; True (no goal is set for this figure)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 charges per case: a smoke test")
    parser.add_argument("--charges", type=int, default=600, help="charges per case")
    args = parser.parse_args(argv)
    n = 60 if args.quick else args.charges
    if n < CALLERS:
        parser.error(f"--charges must be at least {CALLERS}, got {n}")

    r = measure(n)
    figures = []
    for key, label in (("1", "from 1 caller"), ("many", f"from {CALLERS} concurrent callers")):
        budget, bare = r[f"budget_{key}"], r[f"bare_{key}"]
        print(f"charges per second {label}: budget actor {budget:.0f}, bare actor {bare:.0f} ({bare / budget:.2f}× slower)")
        figures.append(_report.figure(
            f"budget charges per second, {label}", budget, "/s", baseline=bare, ratio_of=(bare, budget),
            about=f"settle calls on the budget actor (ledger durable on disk before each answer), {label}; "
                  "baseline a bare actor adding the charges up; ratio = how many times slower",
        ))  # fmt: skip
    path = _report.write(NAME, {"charges": n, "callers": CALLERS, "rates_per_s": r}, figures=figures, quick=args.quick)
    print(f"written to {path}")
    return True


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
