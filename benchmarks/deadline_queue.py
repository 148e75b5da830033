"""What a pending deadline costs in the DeadlineQueue, against a bare ``heapq``.

The figure tests/unit/test_deadlines.py used to assert (100k deadlines in
under 5 s): schedule ``--count`` keyed deadlines, cancel every other one, pop
the rest in due order. The baseline, in the same run, pushes and pops the
same number of plain ``(due, seq, key)`` tuples with ``heapq`` (no keys, no
cancel, no replacement): the floor any heap-based queue sits on. Each side is
timed ``--rounds`` times; the table shows nanoseconds per deadline.

Target: the whole 100k cycle under 5 s (the old test's bound). ``main``
returns False only when the queue popped the wrong deadlines, or (without
``--quick``) when the target is missed.

    python -m benchmarks.deadline_queue [--count 100000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import time

from benchmarks import _report
from kaizen_ray.core.deadlines import DeadlineQueue

NAME = "deadline_queue"
TARGET_TOTAL_S = 5.0


def _dues(count: int) -> list[float]:
    return [float((i * 7919) % count) for i in range(count)]


def queue_round(count: int) -> tuple[float, bool]:
    """Seconds for schedule-all, cancel-half, pop-all; and whether exactly the uncancelled came out, in order."""
    dues = _dues(count)
    q = DeadlineQueue()
    t0 = time.perf_counter()
    for i, due in enumerate(dues):
        q.schedule(("agent", i), due)
    for i in range(0, count, 2):
        q.cancel(("agent", i))
    popped = q.pop_due(math.inf)
    elapsed = time.perf_counter() - t0
    right = len(popped) == count // 2 and all(a[1] <= b[1] for a, b in itertools.pairwise(popped)) and len(q) == 0
    return elapsed, right


def heapq_round(count: int) -> float:
    """Seconds to push ``count`` tuples and pop them all: plain heap traffic, none of the bookkeeping."""
    dues = _dues(count)
    heap: list[tuple[float, int, int]] = []
    t0 = time.perf_counter()
    for i, due in enumerate(dues):
        heapq.heappush(heap, (due, i, i))
    out = [heapq.heappop(heap) for _ in range(count)]
    elapsed = time.perf_counter() - t0
    assert len(out) == count
    return elapsed


def main(argv: list[str] | None = None) -> bool:
    """Measure, print the table, write ``benchmarks/results/deadline_queue.json``; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a small queue, for a CI smoke run; target not judged")
    args = parser.parse_args(argv)
    count, rounds = (10_000, 2) if args.quick else (args.count, args.rounds)

    measured, baseline, right = [], [], True
    for _ in range(rounds):  # interleaved, so both sides see the same machine
        elapsed, ok = queue_round(count)
        right &= ok
        measured.append(elapsed)
        baseline.append(heapq_round(count))
    def per(xs: list[float]) -> list[float]:  # ns per deadline
        return [x / count * 1e9 for x in xs]

    rows = [_report.row(f"DeadlineQueue, {count} deadlines", per(measured), per(baseline), "bare heapq push/pop, same run")]
    print(_report.table(f"cost per deadline over {rounds} rounds", "ns per deadline", rows))

    worst_total = max(measured) * 100_000 / count  # scaled to the old test's 100k
    met = worst_total < TARGET_TOTAL_S
    figures = [
        _report.figure(f"DeadlineQueue cost per deadline ({count} deadlines), p50", rows[0]["measured"]["p50"], "ns",
                       baseline=rows[0]["baseline"]["p50"]),
        _report.figure("100k deadlines scheduled, half cancelled, the rest popped (worst round)", worst_total, "s",
                       target=f"< {TARGET_TOTAL_S:g} s", met=None if args.quick else met,
                       about="the deadline queue's whole cycle at 100k deadlines (scaled from the run's size)"),
        _report.figure("popped in due order, cancelled ones left out", right),
    ]
    path = _report.write(NAME, {
        "count": count, "rounds": rounds, "unit": "ns per deadline", "rows": rows,
        "popped_right": right, "target": {"total_100k_s": TARGET_TOTAL_S, "worst_100k_s": worst_total, "met": met},
    }, figures=figures, quick=args.quick)  # fmt: skip
    print(f"100k deadlines take {worst_total:.2f} s at worst; target < {TARGET_TOTAL_S:.0f} s: {'met' if met else 'NOT met'}"
          f"{' (not judged with --quick)' if args.quick else ''}; popped right: {right}; written to {path}")
    return right and (met or args.quick)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
