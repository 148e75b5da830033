"""The quickstart notebook runs as written: its code cells, in order, in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs_and_resumes_its_agent():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", source], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    first = next(line.split() for line in lines if line.startswith("FIRST"))
    second = next(line.split() for line in lines if line.startswith("SECOND"))
    assert first[1] == "interrupted" and int(first[2]) >= 3
    assert second[1:] == ["completed", "10", "10"]
