"""Run every registered benchmark: ``python -m benchmarks [--quick] [--only NAME ...]`` (``make bench``).

Each benchmark is a module of this package with ``main(argv) -> bool``: it
measures figures against a baseline taken in the same run, prints a table,
writes ``benchmarks/results/<name>.json`` and returns whether its targets
were met. This runner runs each in turn, each in a fresh interpreter
(``--quick``: a few iterations, the CI smoke test), then writes
``benchmarks/results/summary.md``, one table (figure | baseline | goal |
value | ratio | met).

``python -m benchmarks --readme`` (``make bench-readme``) runs nothing: it
rewrites the README's table, between ``<!-- bench-table:start -->`` and
``<!-- bench-table:end -->``, from the last results on disk.

No target is asserted: a missed target is reported, not fatal (the machine may
be busy). A benchmark that *crashes* (raises, or writes no results) makes the
exit code 1, so CI notices a benchmark that no longer runs. ``--strict`` also
fails on a missed target.

JSON a benchmark writes: any object; the runner reads ``figures``, a list of
``{"figure", "value", "unit", "baseline", "ratio", "target", "met", "about"}``
(all but ``figure`` and ``value`` optional; build them with
``_report.figure``). Without ``figures`` every numeric leaf becomes a row,
named by its path.

    >>> _rows_from({"figures": [{"figure": "p99", "value": 8.7, "unit": "ms", "ratio": 1.3}]})[0]["value"]
    8.7
    >>> [r["figure"] for r in _rows_from({"timer": {"p50": 1.0, "p99": 2.0}, "n": 5, "name": "x"})]
    ['timer.p50', 'timer.p99', 'n']
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import _report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

README = ROOT / "README.md"

# One line per benchmark module (``benchmarks/<name>.py``), cheapest first:
# registering a new benchmark is adding its name here.
REGISTERED: tuple[str, ...] = (
    "deadline_queue",
    "wakeup_latency",
    "deadline_lateness",
    "cycle_overhead",
    "timer_lateness",
    "control_latency",
    "metrics_overhead",
    "budget_throughput",
    "llm_cancel",
    "swarm_scaling",
    "interrupt_visibility",
    "actor_memory",
    "stop_latency",
    "checkpoint_cost",
)


@dataclass
class Outcome:
    """What one benchmark did: its figures, whether it met its target, or how it crashed."""

    name: str
    met: bool | None = None
    crashed: str | None = None
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _rows_from(data: Any) -> list[dict[str, Any]]:
    """Table rows from a benchmark's JSON: its ``figures``, else every numeric leaf by path."""
    if isinstance(data, dict) and isinstance(data.get("figures"), list):
        return [dict(f) for f in data["figures"] if isinstance(f, dict) and "figure" in f]
    rows: list[dict[str, Any]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            rows.append({"figure": path, "value": value})
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))

    walk(data, "")
    return rows


def run_one(name: str, quick: bool) -> Outcome:
    """Run ``benchmarks.<name>`` in a fresh interpreter and collect its figures; a crash is caught and described.

    A process per benchmark, as pyperf runs its workers: what one benchmark
    leaves behind (threads, a heap to collect, a Ray still winding down) must
    not weigh on the next one's measured side, which does more of its work in
    threads and on the heap than its baseline does.
    """
    outcome = Outcome(name)
    result_file = RESULTS / f"{name}.json"
    result_file.unlink(missing_ok=True)  # a stale file must not pass for this run's figures
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-") as scratch:
        told = Path(scratch) / "outcome.json"
        command = [sys.executable, "-m", "benchmarks", "--one", name, "--outcome", str(told), *(["--quick"] if quick else [])]
        code = subprocess.call(command, cwd=ROOT)  # noqa: S603 - our own interpreter and module
        said = json.loads(told.read_text()) if told.is_file() else {"crashed": f"exited with code {code} before saying how it went"}
    outcome.seconds = time.perf_counter() - started
    outcome.met, outcome.crashed = said.get("met"), said.get("crashed")
    if outcome.crashed is None:
        if not result_file.is_file():
            outcome.crashed = f"FileNotFoundError: benchmarks.{name} wrote no {result_file}"
        else:
            outcome.rows = _rows_from(json.loads(result_file.read_text()))
    return outcome


def _run_here(name: str, quick: bool, told: Path) -> int:
    """In the child of :func:`run_one`: call ``benchmarks.<name>.main`` and write how it went to ``told``."""
    said: dict[str, Any]
    try:
        module = importlib.import_module(f"benchmarks.{name}")
        met = module.main(["--quick"] if quick else [])
        if not isinstance(met, bool):
            raise TypeError(f"benchmarks.{name}.main returned {met!r}; expected a bool (target met)")
        said = {"met": met}
    except BaseException as exc:  # noqa: BLE001 - SystemExit from argparse is a crash too; Ctrl+C is not
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc()
        said = {"crashed": f"{type(exc).__name__}: {exc}"}
    told.write_text(json.dumps(said))
    return 0


def summary(outcomes: list[Outcome], quick: bool) -> str:
    """The Markdown summary: one table row per figure, and one per crashed benchmark."""
    results: dict[str, dict[str, Any] | str] = {
        o.name: o.crashed if o.crashed else {"figures": o.rows} for o in outcomes
    }
    return _report.summary_markdown(results, quick=quick, when=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def last_results(names: tuple[str, ...] = REGISTERED) -> dict[str, dict[str, Any]]:
    """The results on disk of ``names`` (those that have a file), as their JSON, with ``figures`` normalised."""
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        path = RESULTS / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            found[name] = {**data, "figures": _rows_from(data)} if isinstance(data, dict) else {"figures": _rows_from(data)}
    return found


def update_readme(readme: Path = README) -> Path:
    """Rewrite the table between the README's bench-table markers from the last results; return the README's path."""
    results = last_results()
    if not results:
        raise FileNotFoundError(f"no results in {RESULTS}: run `make bench` (or `python -m benchmarks`) first")
    readme.write_text(_report.replace_block(readme.read_text(), _report.readme_block(results)))
    return readme


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit code 1 if one crashed (or, with ``--strict``, missed its target)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations each: a smoke test")
    parser.add_argument("--only", nargs="+", choices=REGISTERED, metavar="NAME", help=f"only these: {', '.join(REGISTERED)}")
    parser.add_argument("--strict", action="store_true", help="also fail when a target is missed")
    parser.add_argument("--readme", action="store_true", help="run nothing: rewrite the README's table from the last results")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the runner's child: run this one benchmark here
    parser.add_argument("--outcome", type=Path, help=argparse.SUPPRESS)  # where the child says how it went
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.one is not None:
        if args.outcome is None:
            parser.error("--one needs --outcome")
        return _run_here(args.one, args.quick, args.outcome)
    if args.readme:
        print(f"written: {update_readme()}")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)

    outcomes = []
    for name in args.only or REGISTERED:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        outcomes.append(run_one(name, args.quick))
        o = outcomes[-1]
        has_goal = any("target" in r for r in o.rows)
        verdict = ("CRASHED " + o.crashed if o.crashed else "no goal set" if not has_goal
                   else "ran; goals not judged (--quick)" if args.quick
                   else "target met" if o.met else "target NOT met")  # fmt: skip
        print(f"== {name}: {verdict} ({o.seconds:.1f} s)\n", flush=True)
    text = summary(outcomes, args.quick)
    (RESULTS / "summary.md").write_text(text)
    print(text)
    print(f"written: {RESULTS / 'summary.md'}")
    crashed = [o.name for o in outcomes if o.crashed]
    missed = [o.name for o in outcomes if o.met is False]
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
