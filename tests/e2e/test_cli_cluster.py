"""``kaizen-ray`` against a real ``ray start --head`` cluster with token auth, every command its own process.

The module starts one cluster in its own session (``RAY_AUTH_MODE=token``, as
Ray >= 2.59 needs for every client) and ends it by process group, never with
``ray stop``. The agents come from ``tests/_support/cli_agents.py``, imported
by the cluster's workers through ``PYTHONPATH`` (this checkout), as a user's
module would be. Each test works in its own namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._support.processes import Completed, clean_env, run
from tests._support.ray_cluster import free_port, ray_head
from tests._support.waiting import wait_until

pytestmark = pytest.mark.e2e

AGENTS = "tests._support.cli_agents"


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    log_dir: Path

    def argv(self, *args: Any, namespace: str = "cli") -> list[str]:
        return [sys.executable, "-m", "kaizen_ray.cli", "--address", self.address, "--namespace", namespace, *map(str, args)]

    def kaizen_ray(self, *args: Any, namespace: str = "cli", env: dict[str, str] | None = None, timeout: float = 90) -> Completed:
        return run(self.argv(*args, namespace=namespace), timeout=timeout, env=env or self.env, log_dir=self.log_dir, name="kaizen-ray")

    def ok_json(self, *args: Any, **kwargs: Any) -> Any:
        done = self.kaizen_ray("--json", *args, **kwargs)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    log_dir = tmp_path_factory.mktemp("cluster")
    with ray_head(log_dir) as head:  # RAY_AUTH_MODE=token; PYTHONPATH: this checkout, for the workers too
        yield Cluster(head.address, head.client_env, log_dir)


def _one_error_line(done: Completed, *needles: str) -> str:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kaizen-ray: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_a_detached_agent_is_listed_inspected_interrupted_and_resumed_from_other_processes(cluster: Cluster, tmp_path: Path) -> None:
    ns, storage = "cli-agent", tmp_path / "ckpts"
    started = cluster.ok_json("run", f"{AGENTS}:Ticker", "--name", "t1", "--storage", storage, "--detach", namespace=ns)
    assert started == {"name": "t1", "kind": "agent", "namespace": ns}

    # The launching process has exited; the run goes on in the cluster.
    def going() -> Any:
        row = cluster.ok_json("status", "t1", namespace=ns)
        return row if row["phase"] == "running" and row["cycle"] >= 1 else None

    row = wait_until(going, "t1 running with a cycle done", timeout=60, poll=0.5)
    assert set(row) == {"name", "kind", "phase", "cycle", "cost", "checkpoint_id"} and row["kind"] == "agent"
    listed = cluster.ok_json("ls", namespace=ns)
    assert [r["name"] for r in listed] == ["t1"] and listed[0]["kind"] == "agent", listed

    result = cluster.ok_json("interrupt", "t1", "--reason", "enough", "--wait", namespace=ns)
    assert result["status"] == "interrupted", result
    assert result["interrupt_reason"]["source"] == "user" and result["interrupt_reason"]["message"] == "enough"
    assert result["cycles"] >= 1 and result["state"]["n"] == result["cycles"], result
    assert result["error"] is None
    saved = cluster.ok_json("checkpoints", "ls", "--storage", storage, "--agent", "t1")
    assert result["checkpoint_id"] in {c["id"] for c in saved}
    assert set(saved[0]) == {"id", "agent", "cycle", "status", "created_at"}

    # The finished actor is reused as it is: another --storage is refused, never silently ignored.
    elsewhere = tmp_path / "elsewhere"
    _one_error_line(
        cluster.kaizen_ray("run", f"{AGENTS}:Ticker", "--name", "t1", "--storage", elsewhere, namespace=ns),
        "'t1'", str(storage), str(elsewhere),
    )
    assert not elsewhere.exists()
    _one_error_line(cluster.kaizen_ray("run", f"{AGENTS}:swarm", "--name", "t1", namespace=ns), "existing agent, not a supervisor")
    _one_error_line(
        cluster.kaizen_ray("run", f"{AGENTS}:OtherTicker", "--name", "t1", namespace=ns),
        "'t1' is an agent of class tests._support.cli_agents.Ticker, not tests._support.cli_agents.OtherTicker",
    )

    # Resumed from yet another process, on the same (finished) actor, until its --budget is spent.
    resumed = cluster.ok_json("run", f"{AGENTS}:Ticker", "--name", "t1", "--resume", "latest", "--budget", "0.05", namespace=ns)
    assert resumed["status"] == "interrupted", resumed
    assert resumed["interrupt_reason"]["source"] == "system"
    assert resumed["interrupt_reason"]["metadata"]["handler"] == "budget"
    assert resumed["cycles"] > result["cycles"] and resumed["state"]["n"] == resumed["cycles"], (result, resumed)
    # The next command's handlers are its own: the spent --budget of the last one is gone, its --timeout stops it.
    again = cluster.ok_json("run", f"{AGENTS}:Ticker", "--name", "t1", "--resume", "latest", "--timeout", "1", namespace=ns)
    assert again["status"] == "interrupted" and again["interrupt_reason"]["metadata"]["handler"] == "timeout", again
    assert again["cycles"] > resumed["cycles"], (resumed, again)

    # A blocking run of a new agent, stopped by its --timeout (the actor goes with the command).
    # With --progress: its bar (its name, its spend against --budget) on stderr, the result alone on stdout.
    done = cluster.kaizen_ray(
        "--json", "run", f"{AGENTS}:Ticker", "--name", "t2", "--storage", storage,
        "--timeout", "1", "--budget", "100", "--progress", namespace=ns,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    timed = json.loads(done.stdout)
    assert re.search(r"t2 \$\d+\.\d\d/\$100\.00: .*\dcycle", done.stderr), done.stderr[-3000:]
    assert timed["status"] == "interrupted" and timed["interrupt_reason"]["metadata"]["handler"] == "timeout", timed
    # Its actor was not detached: Ray removes it once the command's job has ended.
    wait_until(lambda: [r["name"] for r in cluster.ok_json("ls", namespace=ns)] == ["t1"], "t2 gone", timeout=60, poll=0.5)


def test_a_detached_swarm_outlives_its_launcher_is_stopped_from_another_command_and_gc_removes_it(cluster: Cluster, tmp_path: Path) -> None:
    ns, storage = "cli-swarm", tmp_path / "ckpts"
    started = cluster.ok_json("run", f"{AGENTS}:swarm", "--name", "sw", "--storage", storage, "--detach", namespace=ns)
    assert started["name"] == "sw" and started["kind"] == "supervisor"

    def all_running() -> Any:
        rows = {r["name"]: r for r in cluster.ok_json("ls", namespace=ns)}
        return rows if set(rows) == {"sw", "sw/left", "sw/right"} and all(r["phase"] == "running" for r in rows.values()) else None

    rows = wait_until(all_running, "the swarm and both children running", timeout=60, poll=0.5)
    assert rows["sw"]["kind"] == "supervisor" and rows["sw/left"]["kind"] == rows["sw/right"]["kind"] == "agent"

    result = cluster.ok_json("interrupt", "sw", "--wait", namespace=ns)
    assert result["status"] == "interrupted", result
    assert set(result["children"]) == {"left", "right"}
    for child in result["children"].values():
        assert child["status"] == "interrupted" and child["interrupt_reason"]["metadata"]["propagated_from"] == "sw", child

    removed = {r["name"] for r in cluster.ok_json("gc", namespace=ns)}
    assert {"sw", "sw/left", "sw/right", "kaizen-checkpoints"} <= removed, removed
    assert cluster.ok_json("ls", namespace=ns) == []
    assert cluster.ok_json("checkpoints", "ls", "--storage", storage, "--agent", "sw")  # the manifests stay on disk


def test_errors_are_one_line_and_a_non_zero_exit(cluster: Cluster) -> None:
    _one_error_line(cluster.kaizen_ray("status", "nobody"), "'nobody'", "namespace 'cli'")
    _one_error_line(cluster.kaizen_ray("interrupt", "nobody", "--wait"), "'nobody'")
    _one_error_line(cluster.kaizen_ray("run", "tests._support.no_such_module:X"), "no_such_module", "MODULE:OBJ")
    _one_error_line(cluster.kaizen_ray("run", f"{AGENTS}:Nope"), "Nope")
    _one_error_line(cluster.kaizen_ray("run", f"{AGENTS}:not_specs"), "not_specs", "ChildSpec")
    _one_error_line(cluster.kaizen_ray("run", f"{AGENTS}:Ticker", "--timeout", "-1"), "--timeout", "-1")
    _one_error_line(cluster.kaizen_ray("run", f"{AGENTS}:Ticker", "--budget", "lots"), "--budget", "lots")
    nobody_there = f"127.0.0.1:{free_port()}"
    done = run([sys.executable, "-m", "kaizen_ray.cli", "--address", nobody_there, "ls"], env=cluster.env, timeout=60)
    _one_error_line(done, nobody_there, "refused")


def test_a_client_without_token_auth_is_told_to_set_ray_auth_mode(cluster: Cluster) -> None:
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    _one_error_line(cluster.kaizen_ray("ls", env=env), "RAY_AUTH_MODE=token", cluster.address)


def _rows_by_name(line: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(line)  # every refresh is one JSON line: the `ls --json` list
    assert isinstance(rows, list) and all(set(r) == {"name", "kind", "phase", "cycle", "cost", "checkpoint_id"} for r in rows), line
    return {r["name"]: r for r in rows}


def test_ls_watch_json_prints_a_line_per_refresh_as_the_agent_runs_and_ctrl_c_ends_it_with_exit_0(
    cluster: Cluster, spawn: Any, tmp_path: Path
) -> None:
    ns = "cli-watch"
    cluster.ok_json("run", f"{AGENTS}:Ticker", "--name", "w1", "--storage", tmp_path / "ckpts", "--detach", namespace=ns)
    watcher = spawn(cluster.argv("ls", "--watch", "--json", "--interval", "0.2", namespace=ns), env=cluster.env, name="ls-watch")

    def next_cycle(after: float) -> int:
        for _ in range(500):  # bounded by the watcher's own budget too
            cycle = _rows_by_name(watcher.next_line(60)).get("w1", {}).get("cycle")
            if cycle is not None and cycle > after:
                return cycle
        pytest.fail(f"w1's cycle never went past {after}:\n{watcher.output()}")

    first = next_cycle(after=0)
    second = next_cycle(after=first)  # a later refresh shows the run going on
    assert second > first
    os.killpg(watcher.proc.pid, signal.SIGINT)  # Ctrl+C in its terminal: the whole foreground group
    assert watcher.finish(30) == 0, watcher.output()
    stderr = watcher.stderr_path.read_text()
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and "error" not in stderr, stderr
    for line in watcher.lines:
        _rows_by_name(line)

    stopped = cluster.ok_json("interrupt", "w1", "--wait", namespace=ns)
    assert stopped["status"] == "interrupted" and stopped["cycles"] >= second, stopped


@pytest.mark.parametrize("interval", ["0", "-1", "nan"])
def test_ls_watch_refuses_an_interval_that_is_not_a_positive_number_with_one_line_and_exit_2(interval: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "kaizen_ray.cli", "ls", "--watch", "--interval", interval]
    done = run(argv, env=clean_env(), timeout=60, log_dir=tmp_path, name="kaizen-ray")  # refused before any Ray starts
    assert done.returncode == 2, done
    _one_error_line(done, "'--interval'", repr(interval), "seconds > 0")
    assert done.stdout == "", done
