"""The examples as a user runs them: a subprocess each, its own local Ray, real SIGINTs.

Each example starts (and shuts down) its own embedded Ray, so these tests are
slow (~15-40 s each). After each one, every process the example started (Ray's
GCS, raylet, workers, ...) must be gone. Each runs in its own session with
RAY_ADDRESS removed, and is ended by process group if the test fails.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

import kaizen_ray as kr
from tests._support.processes import ROOT, Process

pytestmark = pytest.mark.e2e

START_S = 90.0  # Ray start-up plus the first cycle, on a busy 2-core machine
EXIT_S = 60.0  # from the last signal to the process's exit
# Every wait is also capped by the Process's budget (tests/_support/processes.py), below pytest's timeout.


@pytest.fixture
def run_example(spawn):
    """Start ``examples/<script>`` with RAY_ADDRESS removed; ended by process group after the test."""

    def start(script: str, *args: str) -> Process:
        return spawn([sys.executable, ROOT / "examples" / script, *args], name=Path(script).stem)

    return start


def _result(example: Process) -> dict[str, str]:
    line = next((l for l in example.lines if l.startswith("RESULT ")), None)
    assert line is not None, example.output()
    return dict(part.split("=", 1) for part in line.split()[1:])


def _checkpoint(example: Process) -> tuple[str, Path]:
    for line in example.lines:
        if found := re.match(r"^CHECKPOINT id=(\S+) file=(.+)$", line):
            return found.group(1), Path(found.group(2))
    pytest.fail(f"no CHECKPOINT line:\n{example.output()}")


def test_one_ctrl_c_stops_the_agent_gracefully_with_a_checkpoint_on_disk(run_example, tmp_path):
    storage = tmp_path / "ckpts"
    # 1 s cycles, and RUNNING is said mid-cycle: the Ctrl+C lands while a step is in flight.
    example = run_example("01_ctrl_c_interrupt.py", "--storage", str(storage), "--pause", "1")
    running = example.wait_for(r"^RUNNING: \S+ completed cycle (\d+)", START_S)
    example.note_tree()
    example.send_signal(signal.SIGINT)
    assert example.finish(EXIT_S) == 0, example.output()

    result = _result(example)
    assert (result["status"], result["mode"]) == ("interrupted", "graceful"), example.output()
    # GRACEFUL: the cycle in flight when Ctrl+C came is finished, not cut short.
    assert int(result["cycles"]) > int(running.group(1))
    assert any("first interrupt: user, graceful" in line for line in example.lines), example.output()
    checkpoint_id, path = _checkpoint(example)
    assert path.is_file() and path.parent.parent == storage.resolve()
    saved = kr.load_checkpoint(checkpoint_id, storage_path=storage)
    assert saved.status.value == "interrupted"
    assert saved.cycle == int(result["cycles"]) == len(saved.state["notes"])
    assert saved.interrupt_reason.source is kr.InterruptSource.USER
    assert saved.interrupt_reason.metadata["signal"] == "SIGINT"
    example.assert_tree_gone()


def test_two_ctrl_c_stop_the_agent_immediately_with_a_checkpoint_on_disk(run_example, tmp_path):
    storage = tmp_path / "ckpts"
    # 5 s cycles: a graceful stop cannot finish before the second Ctrl+C arrives.
    example = run_example("01_ctrl_c_interrupt.py", "--storage", str(storage), "--pause", "5")
    running = example.wait_for(r"^RUNNING: \S+ completed cycle (\d+)", START_S)
    example.note_tree()
    example.send_signal(signal.SIGINT)
    example.wait_for(r"^INTERRUPT SEEN: mode=graceful source=user", EXIT_S)  # the actor has the first one
    example.note_tree()
    example.send_signal(signal.SIGINT)
    assert example.finish(EXIT_S) == 0, example.output()

    result = _result(example)
    assert (result["status"], result["mode"]) == ("interrupted", "immediate"), example.output()
    checkpoint_id, path = _checkpoint(example)
    assert path.is_file()
    saved = kr.load_checkpoint(checkpoint_id, storage_path=storage)
    assert saved.status.value == "interrupted"
    # IMMEDIATE: the cycle in flight was cancelled; the checkpoint holds the last completed one.
    # The second Ctrl+C reaches the actor well within the 5 s cycle that was in flight.
    assert saved.cycle == int(result["cycles"]) == len(saved.state["notes"]) == int(running.group(1))
    assert saved.interrupt_reason.source is kr.InterruptSource.USER  # the first reason is kept
    example.assert_tree_gone()


def test_the_supervised_swarm_example_is_interrupted_and_resumed(run_example, tmp_path):
    storage = tmp_path / "ckpts"
    example = run_example("04_supervised_swarm.py", "--storage", str(storage))
    example.wait_for(r"^step 1: supervisor 'swarm'", START_S)
    example.note_tree()
    example.wait_for(r"^\s+first run: interrupted", START_S)
    manifest_line = example.wait_for(r"^\s+second run: completed, manifest checkpoint (\S+)", START_S)
    example.wait_for(r"^SWARM OK$", 5)
    assert example.finish(EXIT_S) == 0, example.output()

    resumed = [l for l in example.lines if re.match(r"^\s+w\d: completed, resumed at cycle \d+", l)]
    assert len(resumed) == 3, example.output()
    manifest = kr.load_checkpoint(manifest_line.group(1), storage_path=storage)
    assert manifest.status.value == "completed"
    assert set(manifest.state["children"]) == {"w0", "w1", "w2"}
    for name, child_id in manifest.state["children"].items():
        child = kr.load_checkpoint(child_id, storage_path=storage)
        assert (child.agent, child.status.value) == (f"swarm/{name}", "completed")
        assert child.state["seen"] == list(range(1, child.cycle + 1))
    example.assert_tree_gone()
