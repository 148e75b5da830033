"""Examples 02 (timeouts) and 03 (a shared budget) run as they are and say what happened."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_timeout_example_stops_an_agent_and_a_swarm_on_time():
    out = run_example("02_timeout_interrupt.py")
    agent = re.search(r"interrupted by system/timeout after ([\d.]+)s \(graceful\)", out)
    assert agent and 2.0 <= float(agent.group(1)) < 4.0, out
    assert "swarm interrupted: timeout after 3.0s" in out
    assert len(re.findall(r"- c\d: interrupted after \d+ pages \(from crawlers\)", out)) == 3, out


def test_the_budget_example_never_spends_more_than_its_budget():
    out = run_example("03_budget_interrupt.py")
    assert "swarm interrupted:" in out and ("refused" in out or "exhausted" in out), out
    total = float(re.search(r"total spent ([\d.]+) of 1.00", out).group(1))
    assert 0.9 <= total <= 1.0, out
    assert len(re.findall(r"- a\d: \d+ answers, spent [\d.]+", out)) == 3, out
