"""Subprocesses for tests: their own session, bounded waits, ended by process group.

Every process a test starts goes through :class:`Process` (or :func:`run`,
which wraps it): it runs in a session of its own, so only the signals the test
sends reach it and everything it starts (an embedded Ray's GCS, raylet and
workers) shares its process group; a test that fails or times out ends the
whole group with ``os.killpg``. Every wait is bounded by the process's own
``budget_s`` as well as its own timeout, so that a hung child fails the test
with its own message and output, well before pytest's 180 s timeout.

    >>> done = run([sys.executable, "-c", "print('hi')"], timeout=30)
    >>> done.returncode, done.stdout
    (0, 'hi\\n')
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys  # noqa: F401 - the module's doctests use it
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["BUDGET_S", "ROOT", "Completed", "Process", "alive", "clean_env", "descendants", "group_members", "run"]

ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = 140.0  # all of one process's waits together; pytest's own timeout is 180 s per test
_TERM_GRACE_S = 10.0  # after SIGTERM to the group (Ray shuts down on it) before SIGKILL


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment for a child: this checkout first on PYTHONPATH, no RAY_ADDRESS, no usage stats.

    RAY_ADDRESS is removed so that a child never joins a cluster someone else
    started; pass it in ``extra`` to test exactly that.

    >>> "RAY_ADDRESS" in clean_env()
    False
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
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


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (empty where there is no /proc)."""
    if not Path("/proc").is_dir():
        return set()
    tree, found, todo = _children_of(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie has ended (only its parent has not reaped it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Process:
    """One child in its own session: stdout line by line, stderr in a file, its process tree tracked.

    >>> child = Process([sys.executable, "-c", "print('READY')"], name="hello")
    >>> child.wait_for(r"^READY$", 30).group(0), child.finish(30)
    ('READY', 0)
    >>> child.close()
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "child",
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        stdin: bool = False,
        budget_s: float = BUDGET_S,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self._deadline = time.monotonic() + budget_s
        self.budget_s = budget_s
        log_dir = Path(log_dir or tempfile.mkdtemp(prefix="kaizen-test-"))
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # its own process group: only our signals reach it, killpg ends all it started
        )
        self.lines: list[str] = []  # every stdout line consumed so far
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()
        self._eof = False
        self.tree: set[int] = set()  # processes seen under it (its embedded Ray)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _bound(self, timeout: float) -> float:
        """``timeout``, cut to what is left of the budget."""
        return max(0.0, min(timeout, self._deadline - time.monotonic()))

    def output(self) -> str:
        """Its stdout so far (read or not) and the tail of its stderr, for failure messages."""
        while True:  # lines printed but not awaited belong in the message too
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
            else:
                self.lines.append(line)
        self._stderr.flush()
        return (
            f"--- {self.name}: {' '.join(self.argv)}\n--- stdout ---\n" + "\n".join(self.lines)
            + f"\n--- stderr (tail) ---\n{self.stderr_path.read_text()[-4000:]}"
        )

    def _fail_if_ended(self, awaited: str) -> None:
        if self._eof:
            code = self.proc.wait(self._bound(30))
            pytest.fail(f"{self.name} exited ({code}) while {awaited} was awaited:\n{self.output()}")

    def next_line(self, timeout: float) -> str:
        """The next stdout line; fails the test if the child exits first or says nothing in time."""
        self._fail_if_ended("a line")
        bound = self._bound(timeout)
        try:
            line = self._queue.get(timeout=bound)
        except queue.Empty:
            pytest.fail(f"{self.name} printed nothing within {bound:.0f}s:\n{self.output()}")
        if line is None:
            self._eof = True
            code = self.proc.wait(self._bound(30))
            pytest.fail(f"{self.name} exited ({code}) while a line was awaited:\n{self.output()}")
        self.lines.append(line)
        return line

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first new stdout line matching ``pattern`` (lines before it are kept in ``lines``)."""
        self._fail_if_ended(repr(pattern))
        deadline = time.monotonic() + self._bound(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{self.name}: no line matching {pattern!r} within {timeout:.0f}s:\n{self.output()}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._eof = True
                code = self.proc.wait(self._bound(30))
                pytest.fail(f"{self.name} exited ({code}) before a line matched {pattern!r}:\n{self.output()}")
            self.lines.append(line)
            if found := re.search(pattern, line):
                return found

    def send(self, text: str) -> None:
        """One line to its stdin (started with ``stdin=True``)."""
        assert self.proc.stdin is not None, "started without stdin=True"
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child itself (not its group), as a terminal's Ctrl+C reaches a foreground driver."""
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float) -> int:
        """Wait for the exit and the rest of stdout; the exit code. Fails the test when the time is up."""
        try:
            code = self.proc.wait(self._bound(timeout))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout:.0f}s:\n{self.output()}")
        while not self._eof:
            try:
                line = self._queue.get(timeout=self._bound(30) or 0.1)
            except queue.Empty:  # a grandchild still holds the pipe: what was read is enough
                break
            if line is None:
                self._eof = True
            else:
                self.lines.append(line)
        return code

    def note_tree(self) -> set[int]:
        """Remember the processes now under the child (its local Ray), to check later that they end with it."""
        self.tree |= descendants(self.proc.pid)
        return self.tree

    def assert_tree_gone(self, timeout: float = 30.0) -> None:
        """Every process noted under the child has ended (polled, bounded: they exit on their own)."""
        if Path("/proc").is_dir():
            assert self.tree, f"no processes were seen under {self.name}: nothing was checked"
        deadline = time.monotonic() + self._bound(timeout)
        while (left := {p for p in self.tree if alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"{self.name} left processes behind: {sorted(left)}\n{self.output()}"

    def close(self, term_grace_s: float = _TERM_GRACE_S) -> None:
        """End the child's whole process group (SIGTERM, then SIGKILL) and anything noted under it; close files.

        ``term_grace_s=0`` goes straight to SIGKILL: for a child with nothing
        left to save (a test's ``ray start --head --block`` takes 10 s or more
        to end on SIGTERM).
        """
        self.note_tree()
        if self.proc.poll() is None and term_grace_s > 0:  # a failed or timed-out test: ask first (Ray shuts down on SIGTERM)
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(term_grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc.pid, signal.SIGKILL)  # whatever is left of the group, leader or not
        self.proc.wait(_TERM_GRACE_S)
        for pid in self.tree:  # in case something under it started a session of its own
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # SIGKILL is delivered asynchronously: return once the group is really gone (bounded).
        deadline = time.monotonic() + _TERM_GRACE_S
        while (group_members(self.proc.pid) or any(alive(p) for p in self.tree)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):  # the group has ended
        pass


def group_members(pgid: int) -> set[int]:
    """The live processes of process group ``pgid`` (empty where there is no /proc)."""
    members = set()
    if not Path("/proc").is_dir():
        return members
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.add(int(entry.name))
    return members


@dataclass
class Completed:
    """What :func:`run` returns: the exit code and the whole output."""

    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    log_dir: Path | None = None,
    name: str | None = None,
) -> Completed:
    """Run ``argv`` to its end in its own session; on timeout end its process group and fail with its output.

    ``timeout`` is capped at 120 s so the failure is ours, not pytest's.

    >>> run([sys.executable, "-c", "import sys; sys.exit(3)"], timeout=30).returncode
    3
    """
    timeout = min(timeout, 120.0)
    child = Process(argv, name=name or Path(str(argv[-1])).name, log_dir=log_dir, env=env, cwd=cwd, budget_s=timeout + 5)
    try:
        code = child.finish(timeout)
        stderr = child.stderr_path.read_text()
        return Completed(code, "".join(line + "\n" for line in child.lines), stderr)
    finally:
        child.close()
