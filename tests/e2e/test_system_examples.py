"""Examples 02 (timeouts) and 03 (a shared budget) run as they are and say what happened.

How late a deadline fires is a speed figure: it lives in ``benchmarks/``
(``timer_lateness``), not here. These tests keep what is semantic: the timeout
fired, not before its deadline, and reached every child.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests._support.processes import ROOT, clean_env, run

pytestmark = pytest.mark.e2e

NOBODY = "127.0.0.1:9"  # the discard port: no Ray listens there; an example that joined RAY_ADDRESS would fail


def run_example(name: str, log_dir: Path, env: dict[str, str] | None = None) -> str:
    done = run([sys.executable, ROOT / "examples" / name], timeout=120, env=env, log_dir=log_dir)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_timeout_example_stops_an_agent_and_a_swarm_when_their_deadlines_pass(tmp_path: Path) -> None:
    out = run_example("02_timeout_interrupt.py", tmp_path)
    agent = re.search(r"interrupted by system/timeout after ([\d.]+)s \(graceful\)", out)
    assert agent, out
    assert float(agent.group(1)) >= 2.0, f"the 2 s timeout fired early:\n{out}"
    assert "swarm interrupted: timeout after 3.0s" in out, out
    assert len(re.findall(r"- c\d: interrupted after \d+ pages \(from crawlers\)", out)) == 3, out


def test_the_budget_example_never_spends_more_than_its_budget_and_ignores_RAY_ADDRESS(tmp_path: Path) -> None:
    # RAY_ADDRESS points at nothing: the example must start a Ray of its own, not join (or fail to join) that.
    out = run_example("03_budget_interrupt.py", tmp_path, env=clean_env({"RAY_ADDRESS": NOBODY}))
    assert "swarm interrupted:" in out and ("refused" in out or "exhausted" in out), out
    total = float(re.search(r"total spent ([\d.]+) of 1.00", out).group(1))
    assert 0.9 <= total <= 1.0, out
    assert len(re.findall(r"- a\d: \d+ answers, spent [\d.]+", out)) == 3, out
