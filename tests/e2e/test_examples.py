"""The examples as a user runs them: a subprocess each, its own local Ray, real SIGINTs.

Each example starts (and shuts down) its own embedded Ray, so these tests are
slow (~15-40 s each). After each one, every process the example started (Ray's
GCS, raylet, workers, ...) must be gone.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kaizen_ray as kr

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
START_S = 90.0  # Ray start-up plus the first cycle, on a busy 2-core machine
EXIT_S = 60.0  # from the last signal to the process's exit
GONE_S = 30.0  # for the example's Ray processes to go after it exits


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join someone else's cluster
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _children_of() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> set[int]:
    if not Path("/proc").is_dir():
        return set()
    tree, found, todo = _children_of(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended; only its parent has not reaped it


class Example:
    """One example in a subprocess: its stdout line by line, its stderr in a file, its Ray processes."""

    def __init__(self, script: str, *args: str, log_dir: Path) -> None:
        self.stderr_path = log_dir / f"{Path(script).stem}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / script), *args],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # only the signals the test sends reach it
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ray_processes: set[int] = set()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def output(self) -> str:
        return "\n".join(self.lines) + f"\n--- stderr ---\n{self.stderr_path.read_text()[-4000:]}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first new stdout line matching ``pattern``; fails if the process ends or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no line matching {pattern!r} within {timeout}s:\n{self.output()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the example exited ({self.proc.wait()}) before a line matched {pattern!r}:\n{self.output()}")
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def note_ray_processes(self) -> None:
        """Remember the processes the example started (its local Ray), to check they end with it."""
        self.ray_processes |= _descendants(self.proc.pid)

    def finish(self, timeout: float) -> int:
        """Wait for the exit and the rest of stdout; the exit code."""
        code = self.proc.wait(timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:  # the reader ends with None
            self.lines.append(line)
        return code

    def assert_no_processes_left(self) -> None:
        if Path("/proc").is_dir():
            assert self.ray_processes, "no Ray processes were seen under the example: nothing was checked"
        deadline = time.monotonic() + GONE_S
        while (left := {p for p in self.ray_processes if _alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"the example left processes behind: {sorted(left)}"

    def cleanup(self) -> None:
        """After a failure: ask the example to exit (Ray shuts down on SIGTERM), then make sure."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self.ray_processes | _descendants(self.proc.pid):
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._stderr.close()


@pytest.fixture
def run_example(tmp_path):
    started: list[Example] = []

    def start(script: str, *args: str) -> Example:
        example = Example(script, *args, log_dir=tmp_path)
        started.append(example)
        return example

    yield start
    for example in started:
        example.cleanup()


def _result(example: Example) -> dict[str, str]:
    line = next((l for l in example.lines if l.startswith("RESULT ")), None)
    assert line is not None, example.output()
    return dict(part.split("=", 1) for part in line.split()[1:])


def _checkpoint(example: Example) -> tuple[str, Path]:
    for line in example.lines:
        if found := re.match(r"^CHECKPOINT id=(\S+) file=(.+)$", line):
            return found.group(1), Path(found.group(2))
    pytest.fail(f"no CHECKPOINT line:\n{example.output()}")


def test_one_ctrl_c_stops_the_agent_gracefully_with_a_checkpoint_on_disk(run_example, tmp_path):
    storage = tmp_path / "ckpts"
    # 1 s cycles, and RUNNING is said mid-cycle: the Ctrl+C lands while a step is in flight.
    example = run_example("01_ctrl_c_interrupt.py", "--storage", str(storage), "--pause", "1")
    running = example.wait_for(r"^RUNNING: \S+ completed cycle (\d+)", START_S)
    example.note_ray_processes()
    os.kill(example.proc.pid, signal.SIGINT)
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
    example.assert_no_processes_left()


def test_two_ctrl_c_stop_the_agent_immediately_with_a_checkpoint_on_disk(run_example, tmp_path):
    storage = tmp_path / "ckpts"
    # 5 s cycles: a graceful stop cannot finish before the second Ctrl+C arrives.
    example = run_example("01_ctrl_c_interrupt.py", "--storage", str(storage), "--pause", "5")
    running = example.wait_for(r"^RUNNING: \S+ completed cycle (\d+)", START_S)
    example.note_ray_processes()
    os.kill(example.proc.pid, signal.SIGINT)
    example.wait_for(r"^INTERRUPT SEEN: mode=graceful source=user", EXIT_S)  # the actor has the first one
    example.note_ray_processes()
    os.kill(example.proc.pid, signal.SIGINT)
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
    example.assert_no_processes_left()


def test_the_supervised_swarm_example_is_interrupted_and_resumed(run_example, tmp_path):
    storage = tmp_path / "ckpts"
    example = run_example("04_supervised_swarm.py", "--storage", str(storage))
    example.wait_for(r"^step 1: supervisor 'swarm'", START_S)
    example.note_ray_processes()
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
    example.assert_no_processes_left()
