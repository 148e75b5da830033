"""What an idle agent actor costs in memory, against a bare Ray actor, measured in the same run.

Figure: the USS (memory unique to the process: what ending it frees) of an
idle agent actor's worker process, spawned with ``MyAgent.spawn`` and never
run, against the USS of a bare actor's process (``@ray.remote`` class with one
method). RSS is reported beside it. Each side is the median over a few actors
started in turn on the same Ray. Target: ratio of the USS medians ≤ 1.2.

Processes are read with psutil (which Ray ships); a process's pid comes from
Ray's ``__ray_call__``, which runs a function inside the actor.
Results go to ``benchmarks/results/actor_memory.json``.

    python -m benchmarks.actor_memory [--actors 3] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import psutil  # noqa: E402
import ray  # noqa: E402
import ray.cloudpickle  # noqa: E402

import kaizen_ray as kr  # noqa: E402
from benchmarks import _report  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAME = "actor_memory"
TARGET = 1.2


class Idle(kr.BaseAutonomousAgent):
    """An agent that is spawned and never run."""

    async def step(self, state: Any, ctx: Any) -> kr.StepResult:
        return kr.StepResult(state, done=True)


@ray.remote(num_cpus=0)
class Bare:
    """The baseline: a bare actor with one method."""

    def ping(self) -> bool:
        return True


def _settled_pid(actor: Any) -> int:
    """The actor's pid, after a garbage collection inside it (what start-up left behind is not counted)."""
    return ray.get(actor.__ray_call__.remote(lambda self: (gc.collect(), os.getpid())[1]), timeout=120)


def _memory(pid: int) -> tuple[float, float]:
    """(USS, RSS) of ``pid`` in MiB."""
    info = psutil.Process(pid).memory_full_info()
    return info.uss / 2**20, info.rss / 2**20


def measure(actors: int) -> dict[str, list[tuple[float, float]]]:
    """(USS, RSS) per actor, agent and bare in turn, on a fresh local Ray."""
    work = Path(tempfile.mkdtemp(prefix="kaizen-bench-mem-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"bench-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    out: dict[str, list[tuple[float, float]]] = {"agent": [], "bare": []}
    try:
        cfg = kr.AutonomousConfig(storage_path=work / "checkpoints")
        for i in range(actors):
            handle = Idle.spawn(config=cfg, name=f"idle-{i}")
            handle.status()  # a control call, as a watcher or the CLI makes: the control group is up too
            bare = Bare.remote()
            ray.get(bare.ping.remote())
            out["agent"].append(_memory(_settled_pid(handle.actor)))
            out["bare"].append(_memory(_settled_pid(bare)))
            handle.kill()
            ray.kill(bare)
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> bool:
    """Measure, print the table, write the JSON; True if the USS ratio met its target (not judged with --quick).

    >>> main(["--quick"])  # doctest: +SKIP
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=3, help="actors of each kind")
    parser.add_argument("--quick", action="store_true", help="one actor of each kind, for a CI smoke run; target not judged")
    args = parser.parse_args(argv)
    n = 1 if args.quick else args.actors
    if n < 1:
        parser.error(f"--actors must be at least 1, got {n}")
    data = measure(n)
    uss = _report.row("idle agent actor USS", [u for u, _ in data["agent"]], [u for u, _ in data["bare"]], "bare actor")
    rss = _report.row("idle agent actor RSS", [r for _, r in data["agent"]], [r for _, r in data["bare"]], "bare actor")
    print(_report.table(f"memory of an idle actor's process, {n} actors each", "MiB", [uss, rss]))
    ratio = uss["ratio_p50"]
    figures = [
        _report.figure(
            "idle agent actor memory (USS)", round(uss["measured"]["p50"], 2), "MiB",
            baseline=round(uss["baseline"]["p50"], 2), target=f"≤ {TARGET:g}×",
            met=None if args.quick else ratio <= TARGET, ratio_of=(uss["measured"]["p50"], uss["baseline"]["p50"]),
            about="unique memory of an idle agent actor's process (psutil USS); baseline a bare actor's",
        ),
        _report.figure(
            "idle agent actor memory (RSS)", round(rss["measured"]["p50"], 2), "MiB",
            baseline=round(rss["baseline"]["p50"], 2), ratio_of=(rss["measured"]["p50"], rss["baseline"]["p50"]),
        ),
    ]  # fmt: skip
    path = _report.write(NAME, {"quick": args.quick, "actors": n, "figures": figures, "rows": [uss, rss]})
    met = ratio <= TARGET
    print(f"target USS ratio <= {TARGET}: {'met' if met else 'NOT met'} ({ratio:.2f})"
          f"{' (not judged with --quick)' if args.quick else ''}; written to {path}")
    return met or args.quick


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
