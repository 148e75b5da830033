"""Swarm start and stop for 2, 4, 8 and 16 agents under one supervisor, against as many bare actors.

For each size N, in the same run:

* start: from ``Supervisor.spawn`` until every child ran its first step
  (each child notes the wall clock as its first step begins: a file per
  child); baseline: creating N bare actors until each answered a ping;
* stop: from an IMMEDIATE ``request_interrupt`` on the supervisor until its
  run's result is back, every child's final checkpoint durable and named in
  it; baseline: ``ray.kill`` of the N bare actors until each is seen dead.

Reported per N, and as the slope per agent (least squares over the sizes):
what one more agent adds to a swarm's start and stop, beside what one more
bare actor adds. No goal is set on these figures (issue 11 asks for the
slope); the ratio is the slope over the bare actors' slope.

    python -m benchmarks.swarm_scaling [--quick] [--sizes 2 4 8 16] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import ray.cloudpickle
from ray.exceptions import RayActorError

import kaizen_ray as kr
from benchmarks import _report

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAME = "swarm_scaling"
_BOUND_S = 120.0  # longest wait for a swarm to start or a bare actor to die; never reached when all is well


class Idles(kr.BaseAutonomousAgent):
    """A child that notes when its first step began, then idles in short async steps until stopped."""

    def initial_state(self, task: dict[str, str]) -> dict[str, Any]:
        return {"n": 0, **task}

    async def step(self, state: dict[str, Any], ctx: kr.StepContext) -> kr.StepResult:
        if state["n"] == 0:
            mark = Path(state["marks"]) / ctx.agent_name.replace("/", "_")
            mark.with_suffix(".tmp").write_text(repr(time.time()))
            mark.with_suffix(".tmp").rename(mark)  # whole, or not there
        await asyncio.sleep(0.05)
        return kr.StepResult({**state, "n": state["n"] + 1})


@ray.remote(num_cpus=0)
class Bare:
    """The baseline actor: answers a ping."""

    def ping(self) -> bool:
        return True


def _wait_for_marks(marks: Path, n: int) -> list[float]:
    deadline = time.monotonic() + _BOUND_S
    while True:
        found = [p for p in marks.iterdir() if not p.name.endswith(".tmp")]
        if len(found) >= n:
            return [float(p.read_text()) for p in found]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(found)} of {n} children ran a step within {_BOUND_S}s")
        time.sleep(0.005)


def swarm_round(n: int, storage: Path, tag: str) -> tuple[float, float]:
    """(start, stop) seconds for a supervisor of ``n`` idling children."""
    marks = Path(tempfile.mkdtemp(prefix="marks-", dir=storage))
    config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=0)
    children = [kr.ChildSpec(Idles, name=f"c{i}", config=config, task={"marks": str(marks)}) for i in range(n)]
    t0 = time.time()
    swarm = kr.Supervisor.spawn(f"swarm-{tag}", children=children, config=kr.SupervisorConfig(storage_path=storage))
    try:
        ref = swarm.start()
        start = max(_wait_for_marks(marks, n)) - t0
        t1 = time.perf_counter()
        swarm.request_interrupt("programmatic", "immediate", "benchmark stop")
        result = ray.get(ref, timeout=_BOUND_S)
        stop = time.perf_counter() - t1
        statuses = {name: child["status"] for name, child in result["children"].items()}
        if len(statuses) != n or set(statuses.values()) != {"interrupted"} or any(
            not child.get("checkpoint_id") for child in result["children"].values()
        ):
            raise RuntimeError(f"swarm of {n}: expected every child interrupted with a checkpoint, got {statuses}")
    finally:
        swarm.kill()  # its children die with it
    return start, stop


def bare_round(n: int) -> tuple[float, float]:
    """(start, stop) seconds for ``n`` bare actors: create and ping; kill and see each dead."""
    t0 = time.perf_counter()
    actors = [Bare.remote() for _ in range(n)]
    ray.get([a.ping.remote() for a in actors], timeout=_BOUND_S)
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    for a in actors:
        ray.kill(a, no_restart=True)
    deadline = time.monotonic() + _BOUND_S
    for a in actors:
        while True:  # ray.kill is asynchronous: a call sent just after it may still be answered
            try:
                ray.get(a.ping.remote(), timeout=_BOUND_S)
            except RayActorError:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"a killed bare actor still answered after {_BOUND_S}s")
    return start, time.perf_counter() - t1


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs``.

    >>> slope([2, 4, 8], [1.0, 2.0, 4.0])
    0.5
    """
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def measure(sizes: list[int], rounds: int) -> dict[int, dict[str, float]]:
    """Per size: median start and stop seconds of the swarm and of the bare actors."""
    storage = Path(tempfile.mkdtemp(prefix="kaizen-bench-"))
    out: dict[int, dict[str, float]] = {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"bench-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        swarm_round(1, storage, "warm")  # the store, the first worker processes: not measured
        bare_round(1)
        for n in sizes:
            runs = [(swarm_round(n, storage, f"{n}-{r}"), bare_round(n)) for r in range(rounds)]
            out[n] = {
                "start_s": statistics.median(s[0] for s, _ in runs), "stop_s": statistics.median(s[1] for s, _ in runs),
                "bare_start_s": statistics.median(b[0] for _, b in runs), "bare_stop_s": statistics.median(b[1] for _, b in runs),
            }  # fmt: skip
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> bool:
    """Measure, print, write ``benchmarks/results/swarm_scaling.json``; True (no goal is set for these figures)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 2 and 4 only: a smoke test")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=1, help="rounds per size (the median counts)")
    args = parser.parse_args(argv)
    sizes = [2, 4] if args.quick else sorted(set(args.sizes))
    if len(sizes) < 2 or min(sizes) < 1 or args.rounds < 1:
        parser.error(f"need at least two sizes >= 1 and one round, got --sizes {sizes} --rounds {args.rounds}")

    r = measure(sizes, args.rounds)
    print(f"{'agents':>6} {'start s':>9} {'bare':>7} {'stop s':>8} {'bare':>7}")
    for n, row in r.items():
        print(f"{n:>6} {row['start_s']:>9.3f} {row['bare_start_s']:>7.3f} {row['stop_s']:>8.3f} {row['bare_stop_s']:>7.3f}")
    figures = []
    for what in ("start", "stop"):
        s, b = (slope(sizes, [r[n][key] for n in sizes]) for key in (f"{what}_s", f"bare_{what}_s"))
        print(f"{what}: {s * 1000:.1f} ms per agent (bare actors {b * 1000:.1f} ms per actor, {_report.ratio(s, b):.2f}×)")
        figures.append(_report.figure(
            f"swarm {what}, slope per agent ({', '.join(map(str, sizes))} agents)", s * 1000, "ms", baseline=b * 1000,
            about={"start": "what one more child adds to a supervisor's start (spawn until every child ran a step); "
                            "baseline one more bare actor created and pinged",
                   "stop": "what one more child adds to an IMMEDIATE stop of the swarm until every final checkpoint is "
                           "durable; baseline one more bare actor killed"}[what],
        ))  # fmt: skip
        for n in sizes:
            figures.append(_report.figure(f"swarm of {n}: {what}", r[n][f"{what}_s"] * 1000, "ms", baseline=r[n][f"bare_{what}_s"] * 1000))
    path = _report.write(NAME, {"sizes": sizes, "rounds": args.rounds, "seconds": {str(n): v for n, v in r.items()}},
                         figures=figures, quick=args.quick)
    print(f"written to {path}")
    return True


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
