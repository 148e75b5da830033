"""What recording the Ray metrics costs a cycle: an empty step's cycle with and without them.

Target (issue 10): recording metrics must not slow a cycle measurably; we
call that a per-cycle time within 10 % of the baseline. On a shared, loaded
machine single runs vary several-fold, so the target compares the *fastest*
run of each side (the least disturbed one); medians are reported beside it.

Both sides run in the same Ray actor, one after the other, round by round
(baseline, metrics, baseline, metrics, ...), so load on the machine falls on
both alike: an agent whose ``step`` returns at once runs ``--cycles`` cycles
(checkpointing only at the end), once with the run's default observer (does
nothing: the baseline) and once with
:class:`kaizen_ray.runtime._metrics.RayMetricsObserver`, which records
``kaizen_cycles_total``, ``kaizen_cost_total`` (the step charges a tiny cost
each cycle) and ``kaizen_agents{phase}`` through :mod:`ray.util.metrics`.
The figure is the run's time divided by its cycles. A third figure times
the observer's per-cycle calls alone (``on_cycle`` + ``on_cost``, a tight
loop, fastest of five) as a share of the baseline cycle: the same question,
asked without the loop's noise.

    python -m benchmarks.metrics_overhead [--quick] [--cycles 1000] [--rounds 15]

Writes ``benchmarks/results/metrics_overhead.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402

import kaizen_ray as kr  # noqa: E402
from benchmarks import _report  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TARGET_RATIO = 1.10


class Empty(kr.BaseAutonomousAgent):
    """A step that does nothing but charge a tiny cost: what is left is the loop's own cost."""

    def initial_state(self, task: Any) -> int:
        return 0

    async def step(self, state: int, ctx: kr.StepContext) -> kr.StepResult:
        ctx.charge(1e-6)
        return kr.StepResult(state)


@ray.remote(num_cpus=0)
class Bench:
    """Runs the empty agent in its own process, with or without the metrics observer."""

    def __init__(self) -> None:
        self.storage = tempfile.mkdtemp(prefix="kaizen-metrics-bench-")

    async def run(self, cycles: int, with_metrics: bool) -> float:
        from kaizen_ray.core._local_budget import LocalBudgetClient
        from kaizen_ray.core.context import FileCheckpointSink
        from kaizen_ray.runtime._metrics import RayMetricsObserver

        name = f"bench-{'m' if with_metrics else 'b'}-{uuid.uuid4().hex[:6]}"
        config = kr.AutonomousConfig(storage_path=self.storage, max_cycles=cycles, checkpoint_frequency=0)
        agent = Empty(config=config, name=name)
        run = agent.new_run(sink=FileCheckpointSink(agent.storage), budget=LocalBudgetClient(agent.interrupt_manager))
        if with_metrics:
            run.observer = RayMetricsObserver(name)
        started = time.perf_counter()
        result = await run.execute(None)
        elapsed = time.perf_counter() - started
        if result["cycles"] != cycles:
            raise RuntimeError(f"{name} ran {result['cycles']} cycles, expected {cycles}")
        return elapsed / cycles * 1e6  # microseconds per cycle (the one final checkpoint included)

    async def observer_calls(self, calls: int) -> float:
        """Microseconds of one cycle's observer calls (on_cycle + on_cost), fastest of five tight loops."""
        from kaizen_ray.runtime._metrics import RayMetricsObserver

        obs = RayMetricsObserver(f"bench-o-{uuid.uuid4().hex[:6]}")
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for i in range(calls):
                obs.on_cost(1e-6)
                obs.on_cycle(i)
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        return best


def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 cycles, 3 rounds: a smoke test")
    parser.add_argument("--cycles", type=int, default=None, help="cycles per run (default 1000)")
    parser.add_argument("--rounds", type=int, default=None, help="runs per side (default 15)")
    args = parser.parse_args(argv)
    cycles = args.cycles or (300 if args.quick else 1000)
    rounds = args.rounds or (3 if args.quick else 15)

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"bench-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        bench = Bench.remote()
        ray.get(bench.run.remote(min(cycles, 100), True))  # warm-up: imports, metric objects made
        base, metered = [], []
        for _ in range(rounds):
            base.append(ray.get(bench.run.remote(cycles, False)))
            metered.append(ray.get(bench.run.remote(cycles, True)))
        calls_us = ray.get(bench.observer_calls.remote(cycles))
    finally:
        ray.shutdown()

    b, m = min(base), min(metered)
    ratio = _report.ratio(m, b)
    ok = ratio <= TARGET_RATIO
    mb, mm = statistics.median(base), statistics.median(metered)
    print(f"empty-step cycle, {cycles} cycles x {rounds} rounds: fastest baseline {b:.1f} us, with metrics {m:.1f} us "
          f"(ratio {ratio:.3f}); medians {mb:.1f} / {mm:.1f} us (ratio {_report.ratio(mm, mb):.3f})")
    print(f"observer calls alone: {calls_us:.2f} us per cycle, {100 * calls_us / b:.1f} % of the fastest baseline cycle")
    print(f"target ratio <= {TARGET_RATIO}: {'met' if ok else 'NOT met'}")
    figures = [
        _report.figure(
            "cycle time with metrics (fastest run)", round(m, 2), "µs", baseline=round(b, 2), ratio_of=(m, b),
            target=f"≤ {TARGET_RATIO:g}×", met=None if args.quick else ok,
            about="an empty step's cycle in an agent actor recording the Ray metrics; baseline the same actor "
            "without the metrics observer, rounds alternating",
        ),
        {"figure": "cycle time with metrics (median run)", "value": mm, "unit": "us", "baseline": mb,
         "ratio": _report.ratio(mm, mb)},
        {"figure": "observer calls per cycle (on_cycle + on_cost)", "value": calls_us, "unit": "us", "baseline": b,
         "ratio": _report.ratio(calls_us, b)},
    ]  # fmt: skip
    _report.write("metrics_overhead", {"quick": args.quick, "cycles": cycles, "rounds": rounds,
                                       "baseline_us": base, "metrics_us": metered, "figures": figures})
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
