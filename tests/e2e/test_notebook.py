"""The quickstart notebook runs as written: its code cells, in order, in a fresh process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests._support.processes import ROOT, clean_env, run

pytestmark = pytest.mark.e2e

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
NOBODY = "127.0.0.1:9"  # no Ray listens on the discard port


def test_the_quickstart_notebook_runs_and_resumes_its_agent_on_a_ray_of_its_own(tmp_path: Path) -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # RAY_ADDRESS points at nothing: the notebook must start its own Ray, not join whatever is there.
    done = run([sys.executable, "-c", source], timeout=120, env=clean_env({"RAY_ADDRESS": NOBODY}), log_dir=tmp_path, name="notebook")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    first = next((line.split() for line in lines if line.startswith("FIRST")), None)
    second = next((line.split() for line in lines if line.startswith("SECOND")), None)
    assert first and second, done.stdout
    assert first[1] == "interrupted" and int(first[2]) >= 3, done.stdout
    assert second[1:] == ["completed", "10", "10"], done.stdout
