"""SYSTEM actors on a real local Ray: where they live, and what the timer keeps across its own restart.

DESIGN "SYSTEM actors": the timer keeps its pending deadlines across a restart
(a run whose timer crashed still times out), and no system actor is ever left
detached in an anonymous namespace.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import ray

import kaizen_ray as kr

from _agents import Counter  # noqa: E402 - shared agents beside this file (pytest puts this folder on sys.path)
from kaizen_ray.runtime.timer import GcsDeadlineStore, get_or_create_timer

import _waiting  # noqa: E402 - shared helper beside this file (pytest puts this folder on sys.path)

pytestmark = pytest.mark.ray

WAIT_S = 60.0  # generous: other Ray tests share these two cores
SUBPROCESS_S = 240.0  # a whole driver: Ray start-up, a run, shutdown
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

wait_until = functools.partial(_waiting.wait_until, timeout=WAIT_S, poll=0.02)

LONG_RUN = {"seed": 1, "goal": 10**9, "delay": 0.02}  # a Counter that would count for years


def timer_pid(timer: Any) -> int:
    return ray.get(timer.__ray_call__.remote(lambda actor: os.getpid()), timeout=WAIT_S)


def timeout_reason(result: dict[str, Any]) -> kr.InterruptReason:
    reason = result["interrupt_reason"]
    assert reason is not None, result
    assert reason.source == kr.InterruptSource.SYSTEM and reason.metadata["handler"] == "timeout", reason
    return reason


# -- no system actor in an anonymous namespace (runs first: its driver starts a Ray of its own) ---

PLAIN_DRIVER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    import ray
    import kaizen_ray as kr
    from _agents import Counter
    from kaizen_ray.runtime._namespaces import is_anonymous_namespace

    ray.init(address="local", num_cpus=2, include_dashboard=False)  # no namespace: an anonymous one
    try:
        handle = Counter.spawn(config=kr.AutonomousConfig(storage_path={storage!r}), name="plain-driver")
        handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))  # the timer actor, too
        handle.add_handler(kr.BudgetInterruptHandler(max_cost=100.0))  # and a budget scope
        result = handle.run({{"seed": 1, "goal": 3, "delay": 0.0}})
        store = ray.get_actor("kaizen-checkpoints", namespace="kaizen")
        timer = ray.get_actor("kaizen-timer", namespace="kaizen")
        report = {{
            "status": result["status"],
            "checkpoint_id": result["checkpoint_id"],
            "driver_namespace_anonymous": is_anonymous_namespace(ray.get_runtime_context().namespace),
            "store_answers": ray.get(store.ping.remote(), timeout=60),
            "timer_answers": "pending" in ray.get(timer.stats.remote(), timeout=60),
            "kaizen_actors": sorted(
                (a["namespace"], a["name"].split("/")[0])
                for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("kaizen-")
            ),
            "session_dir": ray._private.worker.global_worker.node.get_session_dir_path(),
        }}
        print("REPORT " + json.dumps(report), flush=True)
    finally:
        ray.shutdown()
    """
)


def run_driver(code: str) -> tuple[int, str]:
    """Run ``code`` as a driver process of its own session; its exit code and stdout+stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=SUBPROCESS_S)
        return proc.returncode, out
    finally:
        if proc.poll() is None:  # timed out (or the test was interrupted): end its whole group, Ray included
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_plain_ray_init_driver_leaves_no_system_actor_in_its_anonymous_namespace(tmp_path):
    storage = tmp_path / "checkpoints"
    code, out = run_driver(PLAIN_DRIVER.format(here=str(HERE), storage=str(storage)))

    assert code == 0, out
    report = json.loads(next(line for line in out.splitlines() if line.startswith("REPORT "))[len("REPORT "):])
    assert report["driver_namespace_anonymous"] is True  # the case under test
    assert report["status"] == "completed" and kr.load_checkpoint(report["checkpoint_id"], storage).cycle == 3
    # Found by name in the default namespace, from the very driver that made them.
    assert report["store_answers"] is True and report["timer_answers"] is True
    assert report["kaizen_actors"] == [
        ["kaizen", "kaizen-budget"], ["kaizen", "kaizen-checkpoints"], ["kaizen", "kaizen-timer"]
    ]  # fmt: skip
    assert "anonymous namespace" not in out, out
    # The GCS logs the warning as it registers such an actor, whether or not the driver printed it in time.
    gcs_log = Path(report["session_dir"]) / "logs" / "gcs_server.out"
    assert gcs_log.exists(), sorted(p.name for p in gcs_log.parent.iterdir())
    assert "detached_actor_anonymous_namespace" not in gcs_log.read_text(errors="replace")


# -- the timer keeps its deadlines across its own restart --------------------------------------------


def test_a_run_whose_timer_actor_crashed_still_times_out(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    assert ray.get(timer.pending.remote(), timeout=WAIT_S) == 0
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="outlives-its-timer")
    cleanup(handle)
    # Long enough that the timer is surely killed before it falls due.
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=5.0))

    ref = handle.start(LONG_RUN)
    wait_until(lambda: ray.get(timer.pending.remote(), timeout=WAIT_S) > 0, "the deadline to be scheduled")
    saved = GcsDeadlineStore(ray_cluster).load()
    assert [record["payload"]["name"] for record in saved.values()] == ["outlives-its-timer"]
    ray.kill(timer, no_restart=False)  # Ray restarts it, re-running __init__

    result = ray.get(ref, timeout=WAIT_S)

    assert result["status"] == "interrupted", result
    reason = timeout_reason(result)
    assert reason.metadata["timeout_seconds"] == 5.0 and reason.metadata["deadline"] in saved
    # It was the restarted incarnation that fired it, from what it reloaded.
    stats = ray.get(timer.stats.remote(), timeout=WAIT_S)
    assert stats["restored"] == 1 and stats["fired"] == 1, stats
    wait_until(lambda: ray.get(timer.pending.remote(), timeout=WAIT_S) == 0, "nothing left pending")
    assert GcsDeadlineStore(ray_cluster).load() == {}


def test_a_cancelled_deadline_is_not_reloaded_by_a_restarted_timer(ray_cluster, storage, cleanup):
    timer = get_or_create_timer(ray_cluster)
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="cancels-before-a-crash")
    cleanup(handle)
    handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=600.0))

    ref = handle.start(LONG_RUN)
    wait_until(lambda: GcsDeadlineStore(ray_cluster).load(), "the deadline to be saved")
    assert handle.request_interrupt("programmatic", "graceful", "done early") is True
    assert ray.get(ref, timeout=WAIT_S)["status"] == "interrupted"
    # The cancel is fire-and-forget: it lands shortly after the run returned.
    wait_until(lambda: not GcsDeadlineStore(ray_cluster).load(), "the saved deadline to be deleted")

    before = timer_pid(timer)
    ray.kill(timer, no_restart=False)
    wait_until(lambda: timer_pid(timer) != before, "the timer actor to be restarted")
    assert ray.get(timer.stats.remote(), timeout=WAIT_S) == {"pending": 0, "fired": 0, "restored": 0}
