"""How long an IMMEDIATE stop takes, from the driver's request to its result, against Ray's own floor.

Two figures, each beside a baseline measured in the same run on the same Ray:

* single: an agent whose async step awaits (an in-flight cycle) is stopped.
  Measured from the driver's ``handle.request_interrupt(IMMEDIATE)`` to
  ``ray.get`` of ``handle.start()``'s ref returning the result dict, whose
  checkpoint is then on disk (the run's last save is durable). Baseline:
  ``ray.cancel`` of a bare async actor task that awaits, to its ref raising
  ``TaskCancelledError``. Target: ratio of the medians ≤ 2.
* swarm: a supervisor of 6 such agents is stopped. Measured from
  ``swarm.request_interrupt(IMMEDIATE)`` to ``ray.get`` of its ``start()``
  ref (every child's checkpoint and the manifest durable). Baseline: a
  parallel ping of 6 bare actors, then 6 small files written and fsynced in
  turn. Target: ratio of the medians ≤ 3.

Beside each, without a goal, the same stop against its *floor*: the same hops
made by bare actors (``benchmarks/_stop_floor.py``: driver → agent → store,
a durable write → agent → watcher task → driver; for the swarm, through a
supervisor and a manifest too). The issue's baselines make two trips and
write nothing durable (the single) or fewer trips (the swarm); the floor
shows how much of a stop is the hops themselves, and how much is what the
runtime does around them.

A sample starts every agent, swarm and floor, waits until each step has
begun (each touches a marker file) and a second more (``SETTLE_S``: the new
workers' start-up is over), then times each stop and its baselines in turn;
nothing is killed until all are timed. Results go to
``benchmarks/results/stop_latency.json``.

    python -m benchmarks.stop_latency [--samples 15] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402
from ray.exceptions import TaskCancelledError  # noqa: E402

import kaizen_ray as kr  # noqa: E402
from benchmarks import _report, _stop_floor  # noqa: E402

# The agent class must reach the workers, which may not have benchmarks/ on their path.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(_stop_floor)

NAME = "stop_latency"
SWARM = 6
TARGET_SINGLE = 2.0
TARGET_SWARM = 3.0
AWAIT_S = 600.0  # the step's await: far longer than any measurement
_BOUND_S = 60.0
SETTLE_S = 1.0  # a sample's actors started, before its first timed interval (see sample)


class AwaitsInStep(kr.BaseAutonomousAgent):
    """An async step that marks its start, then awaits (an in-flight cycle an IMMEDIATE stop cancels)."""

    def initial_state(self, task: dict[str, str]) -> dict[str, Any]:
        return {"n": 0, "marker": task["marker"]}

    async def step(self, state: dict[str, Any], ctx: Any) -> kr.StepResult:
        Path(f"{state['marker']}.{ctx.agent_name.replace('/', '_')}").touch()
        await asyncio.sleep(AWAIT_S)
        return kr.StepResult({**state, "n": state["n"] + 1}, done=True)


@ray.remote(num_cpus=0)
class Bare:
    """The baseline: an async actor task that awaits, and a ping."""

    async def work(self, marker: str) -> None:
        Path(marker).touch()
        await asyncio.sleep(AWAIT_S)

    def ping(self) -> bool:
        return True


def _wait_for(paths: list[Path]) -> None:
    deadline = time.monotonic() + _BOUND_S
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"steps did not begin within {_BOUND_S}s: {[str(p) for p in paths if not p.exists()]}")
        time.sleep(0.001)


def _fsync_file(path: Path) -> None:
    """A small file written, fsynced and renamed into place, as a durable checkpoint is."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"x" * 512)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _cancel_bare(bare: Any, marker: Path) -> float:
    """Seconds from ``ray.cancel`` of a bare async actor task in flight to its ref raising TaskCancelledError."""
    ref = bare.work.remote(str(marker))
    _wait_for([marker])
    t0 = time.perf_counter()
    ray.cancel(ref)
    try:
        ray.get(ref, timeout=_BOUND_S)
    except TaskCancelledError:
        return time.perf_counter() - t0
    raise RuntimeError("the cancelled bare task returned")


def _stopped(handle: Any, ref: Any) -> tuple[float, dict[str, Any]]:
    """Seconds from ``handle``'s IMMEDIATE request to ``ray.get`` of its run's ``ref`` returning; and the result."""
    t0 = time.perf_counter()
    handle.request_interrupt("programmatic", "immediate", "bench")
    result = ray.get(ref, timeout=_BOUND_S)
    return time.perf_counter() - t0, result


def _floor_stopped(actor: Any, ref: Any) -> float:
    """Seconds of the floor's stop (see ``_stop_floor``): from the control call to the watcher's ref resolving."""
    t0 = time.perf_counter()
    if not ray.get(actor.stop.remote(), timeout=_BOUND_S):
        raise RuntimeError("the floor's work was not running when stopped")
    ray.get(ref, timeout=_BOUND_S)
    return time.perf_counter() - t0


def _pings_and_fsyncs(work: Path, bares: list[Any]) -> float:
    """The swarm's baseline: a parallel ping of the bare actors, then one small durable file each, in turn."""
    t0 = time.perf_counter()
    ray.get([b.ping.remote() for b in bares], timeout=_BOUND_S)
    for k in range(len(bares)):
        _fsync_file(work / f"fsync-{k}")
    return time.perf_counter() - t0


def sample(work: Path, cfg: kr.AutonomousConfig, i: int, bares: list[Any], floors: tuple[Any, Any]) -> dict[str, float]:
    """One sample of every figure, in seconds; each stop and its baselines timed while its steps are in flight.

    Everything is started first and left to settle (``SETTLE_S``): the new
    actors' workers start, import and connect, and the pool starts their
    replacements, which would otherwise fall inside whichever interval
    came first. Nothing is killed until every interval of the sample is timed.
    """
    marker = work / f"s{i}"
    names = [f"w{k}" for k in range(SWARM)]
    handle = AwaitsInStep.spawn(config=cfg, name=f"single-{i}")
    swarm = None
    try:
        swarm = kr.Supervisor.spawn(
            f"swarm-{i}", children=[kr.ChildSpec(AwaitsInStep, name=n, config=cfg) for n in names],
            storage_path=cfg.storage_path,
        )  # fmt: skip
        single_ref, swarm_ref = handle.start({"marker": str(marker)}), swarm.start({"marker": str(marker)})
        floor_refs = [_stop_floor.floor_watch.remote(a, f"{marker}.floor{n}", f"s{i}-{n}") for n, a in enumerate(floors)]
        _wait_for([
            Path(f"{marker}.single-{i}"), *(Path(f"{marker}.swarm-{i}_{n}") for n in names),
            Path(f"{marker}.floor0"), *(Path(f"{marker}.floor1.{k}") for k in range(SWARM)),
        ])  # fmt: skip
        time.sleep(SETTLE_S)
        out = {"floor_single": _floor_stopped(floors[0], floor_refs[0]), "cancel": _cancel_bare(bares[0], work / f"bare-{i}")}
        out["single"], result = _stopped(handle, single_ref)
        if result["status"] != "interrupted" or not result["checkpoint_id"]:
            raise RuntimeError(f"unexpected result of the stopped agent: {result['status']}, {result['checkpoint_id']}")
        out["floor_swarm"] = _floor_stopped(floors[1], floor_refs[1])
        out["pings_fsyncs"] = _pings_and_fsyncs(work, bares)
        out["swarm"], result = _stopped(swarm, swarm_ref)
        bad = {n: r["status"] for n, r in result["children"].items() if r["status"] != "interrupted" or not r["checkpoint_id"]}
        if bad or not result["checkpoint_id"]:
            raise RuntimeError(f"unexpected results of the stopped swarm: {bad or result['status']}")
    finally:
        handle.kill()
        if swarm is not None:
            swarm.kill()
    return out


def measure(samples: int, warmup: int) -> dict[str, list[float]]:
    """Every figure on a fresh local Ray, in milliseconds; each sample takes them all (see :func:`sample`)."""
    work = Path(tempfile.mkdtemp(prefix="kaizen-bench-stop-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"bench-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        cfg = kr.AutonomousConfig(storage_path=work / "checkpoints")
        bares = [Bare.remote() for _ in range(SWARM)]
        store = _stop_floor.FloorStore.remote()
        floors = (
            _stop_floor.FloorAgent.remote(store),
            _stop_floor.FloorSupervisor.remote(store, [_stop_floor.FloorAgent.remote(store) for _ in range(SWARM)]),
        )
        ray.get([b.ping.remote() for b in bares] + [a.__ray_ready__.remote() for a in (store, *floors)])
        data: dict[str, list[float]] = {}
        for i in range(warmup + samples):
            taken = sample(work, cfg, i, bares, floors)
            if i >= warmup:  # the first runs pay for worker start-up and imports
                for key, seconds in taken.items():
                    data.setdefault(key, []).append(seconds * 1000)
    finally:
        ray.shutdown()
    return data


def _figure(name: str, row: dict[str, Any], target: float, about: str, quick: bool) -> dict[str, Any]:
    ratio = row["ratio_p50"]
    return _report.figure(
        name, round(row["measured"]["p50"], 3), "ms", baseline=round(row["baseline"]["p50"], 3),
        target=f"≤ {target:g}×", met=None if quick else ratio <= target, about=about,
        ratio_of=(row["measured"]["p50"], row["baseline"]["p50"]),
    )  # fmt: skip


def _floor_figure(name: str, row: dict[str, Any], about: str) -> dict[str, Any]:
    return _report.figure(
        name, round(row["measured"]["p50"], 3), "ms", baseline=round(row["baseline"]["p50"], 3), about=about,
        ratio_of=(row["measured"]["p50"], row["baseline"]["p50"]),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> bool:
    """Measure, print the table, write the JSON; True if both ratios met their targets (not judged with --quick).

    >>> main(["--quick"])  # doctest: +SKIP
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=15, help="stops of each kind")
    parser.add_argument("--quick", action="store_true", help="one sample, no warm-up, for a CI smoke run; targets not judged")
    args = parser.parse_args(argv)
    samples = 1 if args.quick else args.samples
    if samples < 1:
        parser.error(f"--samples must be at least 1, got {samples}")
    data = measure(samples, warmup=0 if args.quick else 2)
    rows = [
        _report.row("single: IMMEDIATE stop, durable", data["single"], data["cancel"], "ray.cancel of a bare async actor task"),
        _report.row(f"swarm of {SWARM}: IMMEDIATE stop, durable", data["swarm"], data["pings_fsyncs"],
                    f"parallel ping of {SWARM} bare actors + {SWARM} fsyncs"),
        _report.row("single, against its floor", data["single"], data["floor_single"], "the same hops by bare actors"),
        _report.row(f"swarm of {SWARM}, against its floor", data["swarm"], data["floor_swarm"], "the same hops by bare actors"),
    ]
    print(_report.table(f"IMMEDIATE stop, request to result, {samples} samples each", "ms", rows))
    figures = [
        _figure("IMMEDIATE stop of an in-flight async step, checkpoint durable, p50", rows[0], TARGET_SINGLE,
                "handle.request_interrupt(IMMEDIATE) until ray.get of start()'s ref returns the result, its checkpoint "
                "on disk; baseline ray.cancel of a bare async actor task until its ref raises", args.quick),
        _figure(f"a swarm of {SWARM} stopped (IMMEDIATE), every checkpoint durable, p50", rows[1], TARGET_SWARM,
                f"a supervisor's IMMEDIATE stop until its result, every child's checkpoint and the manifest on disk; "
                f"baseline a parallel ping of {SWARM} bare actors, then {SWARM} small files written and fsynced", args.quick),
        _floor_figure("the same single stop, against its floor (the same hops by bare actors), p50", rows[2],
                      "the single stop above; baseline bare actors making its hops (driver → agent → store, a durable "
                      "write → agent → watcher task → driver), nothing else"),
        _floor_figure("the same swarm stop, against its floor (the same hops by bare actors), p50", rows[3],
                      "the swarm stop above; baseline a bare supervisor and agents making its hops (each agent's "
                      "durable write, then the manifest's), nothing else"),
    ]  # fmt: skip
    met = all(r["ratio_p50"] <= t for r, t in zip(rows, (TARGET_SINGLE, TARGET_SWARM)))
    path = _report.write(NAME, {"quick": args.quick, "samples": samples, "figures": figures, "rows": rows})
    print(f"targets (single <= {TARGET_SINGLE}x, swarm <= {TARGET_SWARM}x): {'met' if met else 'NOT met'}"
          f"{' (not judged with --quick)' if args.quick else ''}; written to {path}")
    return met or args.quick


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
