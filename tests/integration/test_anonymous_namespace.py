"""No SYSTEM actor is ever left detached in an anonymous namespace (DESIGN "SYSTEM actors").

A driver that calls a plain ``ray.init()`` (no namespace: an anonymous one)
runs in a process of its own, with a Ray of its own: ``own_ray``, so the
shared head is stopped first rather than competing with it for the two cores.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

import kaizen_ray as kr

from tests._support.ray_agents import run_driver

pytestmark = [pytest.mark.ray, pytest.mark.own_ray, pytest.mark.usefixtures("own_ray")]

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent

PLAIN_DRIVER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import ray
    import kaizen_ray as kr
    from tests._support.ray_agents import Counter
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


def test_a_plain_ray_init_driver_leaves_no_system_actor_in_its_anonymous_namespace(tmp_path):
    storage = tmp_path / "checkpoints"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    code, out = run_driver(["-c", PLAIN_DRIVER.format(tests=str(TESTS), storage=str(storage))], env=env, cwd=str(REPO))

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
