"""The shape of a run: tiers fast to slow, CI's exit code, the benchmark runner's reporting."""

from __future__ import annotations

import doctest
import os
import stat
import sys
from pathlib import Path

import pytest

import benchmarks.__main__ as bench
from tests._support.processes import ROOT, clean_env, run

pytestmark = pytest.mark.e2e


def test_the_tiers_are_collected_fast_to_slow_whatever_order_the_paths_are_given_in(tmp_path: Path) -> None:
    done = run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/e2e", "tests/integration", "tests/unit"],
        timeout=90, log_dir=tmp_path, name="collect",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tiers = [line.split("/")[1] for line in done.stdout.splitlines() if line.startswith("tests/") and "::" in line]
    assert set(tiers) == {"unit", "integration", "e2e"}, done.stdout[-3000:]
    order = [t for i, t in enumerate(tiers) if i == 0 or tiers[i - 1] != t]  # each tier once, in run order
    assert order == ["unit", "integration", "e2e"], order


def _fake_make(tmp_path: Path, failing_target: str | None) -> tuple[dict[str, str], Path]:
    """A ``make`` on PATH that records its targets and fails on ``failing_target``: CI's control flow, not the suite."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = "{failing_target}" ] && exit 2\nexit 0\n')
    make.chmod(make.stat().st_mode | stat.S_IXUSR)
    return clean_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}), calls


@pytest.mark.parametrize(
    ("failing", "code", "targets"),
    [(None, 0, ["test", "bench-quick"]), ("test", 2, ["test"]), ("bench-quick", 2, ["test", "bench-quick"])],
)
def test_ci_runs_the_tests_then_the_quick_benchmarks_and_fails_when_either_fails(
    tmp_path: Path, failing: str | None, code: int, targets: list[str]
) -> None:
    env, calls = _fake_make(tmp_path, failing)
    done = run([ROOT / ".ci" / "run"], timeout=30, env=env, log_dir=tmp_path, name="ci")
    assert done.returncode == code, done
    assert calls.read_text().split() == targets


def test_the_benchmark_runner_reports_a_crash_as_a_row_and_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "RESULTS", tmp_path)  # a real run of the runner's code; only its output folder moves
    crashed = bench.run_one("no_such_benchmark", quick=True)
    assert crashed.crashed is not None and crashed.crashed.startswith("ModuleNotFoundError"), crashed
    fine = bench.Outcome("fine", met=False, rows=[
        {"figure": "p99", "value": 2.5, "unit": "ms", "baseline": 2.0, "ratio": 1.25, "target": "< 2 ms"},
        {"figure": "cost", "value": 3, "unit": "us"},
    ])
    table = bench.summary([fine, crashed], quick=True).splitlines()
    assert "| **fine** |  |  |  |  |  |" in table, table
    assert "| p99 | 2 ms | < 2 ms | 2.5 ms | 1.25× | not judged |" in table, table  # a quick run judges no goal
    assert "| cost |  |  | 3 us |  |  |" in table, table  # no baseline, no goal: nothing to meet
    assert any(line.startswith("| **no_such_benchmark** | CRASHED: ModuleNotFoundError") for line in table), table


def test_the_benchmark_runner_doctests_pass() -> None:
    failures, tried = doctest.testmod(bench, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
