"""How fast an interrupt request wakes a waiter, against the stdlib primitive it is built on.

Figures (moved here from tests/unit/test_interrupts.py, which asserted them):

* thread: ``request_interrupt()`` → ``InterruptManager.wait()`` returns in a
  blocked thread; baseline ``threading.Event.set()`` → ``Event.wait()`` returns.
* async: ``request_interrupt()`` from another thread → ``await wait_async()``
  resumes on an event loop; baseline ``loop.call_soon_threadsafe(event.set)``
  → ``await asyncio.Event.wait()`` resumes.
* flag: the cost of one ``is_interrupted()`` call (what ``ctx.interrupted``
  reads), against one ``threading.Event.is_set()``.

Target (the figure the tests used to assert): thread and async wake-up p50
under 1 ms, max under 50 ms. ``main`` returns False only when the run could
not measure everything, or (without ``--quick``) when a target is missed.

    python -m benchmarks.wakeup_latency [--samples 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import _report
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource

NAME = "wakeup_latency"
TARGET_P50_US = 1000.0
TARGET_MAX_US = 50_000.0
_REGISTER_BOUND_S = 10.0  # how long to wait for a waiter to block; never reached when all is well


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _REGISTER_BOUND_S
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {_REGISTER_BOUND_S}s")
        time.sleep(0.0002)


def _thread_wake(block: Callable[[], Any], blocked: Callable[[], bool], wake: Callable[[], Any]) -> float:
    """Seconds from ``wake()`` to ``block()`` returning in another thread that was already blocked."""
    woke: list[float] = []
    t = threading.Thread(target=lambda: (block(), woke.append(time.perf_counter())), daemon=True)
    t.start()
    _until(blocked, "the waiter blocking")
    t0 = time.perf_counter()
    wake()
    t.join(_REGISTER_BOUND_S)
    if not woke:
        raise RuntimeError("the waiter never woke")
    return woke[0] - t0


def thread_samples(n: int) -> tuple[list[float], list[float]]:
    """(manager, baseline) wake-up latencies in µs, interleaved so both see the same machine."""
    measured, baseline = [], []
    for _ in range(n):
        m = InterruptManager()
        measured.append(1e6 * _thread_wake(
            lambda m=m: m.wait(_REGISTER_BOUND_S), lambda m=m: len(m._cond._waiters) == 1,
            lambda m=m: m.request_interrupt(InterruptSource.PROGRAMMATIC, InterruptMode.GRACEFUL, "go"),
        ))  # fmt: skip
        e = threading.Event()
        baseline.append(1e6 * _thread_wake(
            lambda e=e: e.wait(_REGISTER_BOUND_S), lambda e=e: len(e._cond._waiters) == 1, e.set
        ))  # fmt: skip
    return measured, baseline


def async_samples(n: int) -> tuple[list[float], list[float]]:
    """(manager, baseline) latencies in µs from a request in this thread to a task resuming on a loop in another."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    async def resumes_after(awaitable: Any) -> float:
        await awaitable
        return time.perf_counter()

    def one(waiter: Any, registered: Callable[[], bool], wake: Callable[[], Any]) -> float:
        fut = asyncio.run_coroutine_threadsafe(resumes_after(waiter), loop)
        _until(registered, "the task waiting")
        t0 = time.perf_counter()
        wake()
        return fut.result(_REGISTER_BOUND_S) - t0

    measured, baseline = [], []
    try:
        for _ in range(n):
            m = InterruptManager()
            measured.append(1e6 * one(
                m.wait_async(), lambda m=m: len(m._async_waiters) == 1,
                lambda m=m: m.request_interrupt(InterruptSource.PROGRAMMATIC, InterruptMode.GRACEFUL, "go"),
            ))  # fmt: skip
            event = asyncio.Event()
            baseline.append(1e6 * one(
                event.wait(), lambda ev=event: len(ev._waiters) == 1, lambda ev=event: loop.call_soon_threadsafe(ev.set)
            ))  # fmt: skip
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(_REGISTER_BOUND_S)
        loop.close()
    return measured, baseline


def flag_samples(n: int, calls: int = 10_000) -> tuple[list[float], list[float]]:
    """(is_interrupted, Event.is_set) cost per call in ns, ``n`` batches of ``calls`` calls each."""
    m, e = InterruptManager(), threading.Event()
    measured, baseline = [], []
    for _ in range(n):
        for fn, out in ((m.is_interrupted, measured), (e.is_set, baseline)):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append(1e9 * (time.perf_counter() - t0) / calls)
    return measured, baseline


def main(argv: list[str] | None = None) -> bool:
    """Measure, print the table, write ``benchmarks/results/wakeup_latency.json``; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="wake-ups per case")
    parser.add_argument("--quick", action="store_true", help="a few samples, for a CI smoke run; targets not judged")
    args = parser.parse_args(argv)
    n = 10 if args.quick else args.samples

    t_m, t_b = thread_samples(n)
    a_m, a_b = async_samples(n)
    f_m, f_b = flag_samples(n)
    wake_rows = [
        _report.row("thread: wait() wakes", t_m, t_b, "threading.Event / asyncio.Event, same run"),
        _report.row("async: wait_async() resumes", a_m, a_b, "threading.Event / asyncio.Event, same run"),
    ]
    flag_row = _report.row("flag: is_interrupted() per call", f_m, f_b, "threading.Event.is_set(), same run")
    print(_report.table(f"wake-up latency over {n} samples per case", "µs", wake_rows))
    print(_report.table(f"cost of the cheap flag, {n} batches of 10k calls", "ns", [flag_row]))

    met = all(r["measured"]["p50"] < TARGET_P50_US and r["measured"]["max"] < TARGET_MAX_US for r in wake_rows)
    complete = all(r["measured"]["n"] == n and r["baseline"]["n"] == n for r in [*wake_rows, flag_row])
    judged = None if args.quick else met
    target = f"p50 < {TARGET_P50_US / 1000:g} ms, max < {TARGET_MAX_US / 1000:g} ms"
    figures = [
        _report.figure("request → wait() wakes in another thread, p50", wake_rows[0]["measured"]["p50"], "µs",
                       baseline=wake_rows[0]["baseline"]["p50"], target=target, met=judged,
                       about="request_interrupt() until a thread blocked in InterruptManager.wait() runs; baseline threading.Event.set() → wait()"),
        _report.figure("request → wait() wakes in another thread, max", wake_rows[0]["measured"]["max"], "µs",
                       baseline=wake_rows[0]["baseline"]["max"]),
        _report.figure("request → wait_async() resumes on a loop, p50", wake_rows[1]["measured"]["p50"], "µs",
                       baseline=wake_rows[1]["baseline"]["p50"], target=target, met=judged,
                       about="request_interrupt() from a thread until a task awaiting wait_async() resumes; baseline asyncio.Event via call_soon_threadsafe"),
        _report.figure("request → wait_async() resumes on a loop, max", wake_rows[1]["measured"]["max"], "µs",
                       baseline=wake_rows[1]["baseline"]["max"]),
        _report.figure("is_interrupted() per call, p50", flag_row["measured"]["p50"], "ns", baseline=flag_row["baseline"]["p50"]),
    ]
    path = _report.write(NAME, {
        "samples": n, "unit": {"wake": "us", "flag": "ns"},
        "rows": [*wake_rows, flag_row],
        "target": {"p50_us": TARGET_P50_US, "max_us": TARGET_MAX_US, "met": met},
    }, figures=figures, quick=args.quick)  # fmt: skip
    print(f"target: wake-up p50 < {TARGET_P50_US:.0f} µs and max < {TARGET_MAX_US:.0f} µs: "
          f"{'met' if met else 'NOT met'}{' (not judged with --quick)' if args.quick else ''}; written to {path}")
    return complete and (met or args.quick)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
