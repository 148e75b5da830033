"""The subprocess helper itself: a hung child fails the test with its output, and leaves nothing behind."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from tests._support.processes import Process, alive, run

pytestmark = pytest.mark.e2e

# A leader that starts a grandchild deaf to SIGTERM (as a Ray raylet might be slow to go), says both pids, hangs.
HANGS = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    deaf = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('DEAF', flush=True); time.sleep(600)"
    grandchild = subprocess.Popen([sys.executable, "-c", deaf], stdout=subprocess.PIPE, text=True)
    grandchild.stdout.readline()  # its SIGTERM is ignored from here on
    print(f"PIDS {os.getpid()} {grandchild.pid}", flush=True)
    time.sleep(600)
    """
)


def test_a_child_that_outlives_its_timeout_fails_the_test_with_its_output_and_its_whole_group_is_killed(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        run([sys.executable, "-c", HANGS], timeout=5, log_dir=tmp_path, name="hangs")
    message = str(failed.value)
    assert "hangs did not exit within 5s" in message and "PIDS " in message, message
    pids = re.search(r"^PIDS (\d+) (\d+)$", message, re.M)
    assert pids, message
    leader, grandchild = int(pids.group(1)), int(pids.group(2))
    assert not alive(leader) and not alive(grandchild), message  # killpg reached the grandchild that ignored SIGTERM


def test_every_wait_is_capped_by_the_budget_so_the_failure_is_ours_not_pytests(tmp_path: Path) -> None:
    child = Process([sys.executable, "-c", HANGS], name="quiet", log_dir=tmp_path, budget_s=5)
    try:
        child.wait_for(r"^PIDS ", 30)
        with pytest.raises(pytest.fail.Exception, match="no line matching 'NEVER'"):
            child.wait_for("NEVER", timeout=10_000)  # capped at what is left of 5 s, not 10 000 s
    finally:
        child.close()
    assert child.proc.returncode is not None
    assert child.tree and not any(alive(p) for p in child.tree)  # the grandchild deaf to SIGTERM too


def test_the_helpers_doctests_pass() -> None:
    import doctest

    import tests._support.processes as processes

    failures, tried = doctest.testmod(processes)
    assert tried > 0 and failures == 0
