"""kaizen_ray's Ray metrics, scraped from the node's metrics port; a supervisor's live status and repr.

The shared head reports metrics every second (tests/integration/conftest.py),
so a recorded value reaches the node's Prometheus export within ~2 s: every
check polls the export (wait_until), none sleeps.
"""

from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import ray

import kaizen_ray as kr
from kaizen_ray.runtime._metrics import exported_names
from tests._support.ray_agents import Spender
from tests._support.waiting import wait_until

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.ray

WAIT_S = 90.0
_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape() -> list[tuple[str, dict[str, str], float]]:
    """Every kaizen series on this node's metrics port: (name, labels, value)."""
    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    series = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match["name"].startswith("ray_kaizen_"):
            series.append((match["name"], dict(_LABEL.findall(match["labels"] or "")), float(match["value"])))
    return series


def value(series: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
    """The sum of ``name``'s series whose labels include ``labels`` (None if there is none)."""
    found = [v for n, ls, v in series if n == name and all(ls.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None


def config(storage: Path, **overrides: Any) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=2, **overrides)


def test_a_timed_out_swarm_shows_in_the_metrics_and_names_its_stops_provenance(ray_cluster, storage, cleanup):
    child = kr.ChildSpec(Spender, name="w", config=config(storage), task={"cost": 0.25, "delay": 0.02})
    sup = kr.Supervisor.spawn("mswarm", children=[child], config=kr.SupervisorConfig(storage_path=storage))
    cleanup(sup)
    sup.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=1.0))

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted" and result["forwarded_by"] == ["timer"]
    w = result["children"]["w"]
    assert w["status"] == "interrupted" and w["forwarded_by"] == ["timer", "mswarm"]
    agent = "mswarm/w"

    def exported() -> Any:
        s = scrape()
        got = {
            "interrupts": value(s, "ray_kaizen_interrupts_total", agent=agent, source="system", mode="graceful"),
            "ckpt_count": value(s, "ray_kaizen_checkpoint_seconds_count", agent=agent),
            "ckpt_bytes": value(s, "ray_kaizen_checkpoint_bytes_total", agent=agent),
            "lateness_count": value(s, "ray_kaizen_timer_lateness_seconds_count"),
        }
        return (s, got) if None not in got.values() else None

    series, got = wait_until(exported, f"{agent}'s metrics on the node's metrics port", timeout=WAIT_S, poll=0.25)
    # The one accepted request (the timer's, forwarded by the supervisor); the
    # final checkpoint at least (how many cycles fit in 1 s depends on the load).
    assert got["interrupts"] == 1 and got["ckpt_count"] >= 1 and got["ckpt_bytes"] > 0
    assert got["lateness_count"] >= 1
    # The child's own process counts one agent, finished by now (its last report may lag: poll).
    worker = next(ls["WorkerId"] for n, ls, _ in series if n == "ray_kaizen_interrupts_total" and ls.get("agent") == agent)
    phases = wait_until(lambda: (p := _phases(worker)).get("finished") == 1 and p, f"{agent} counted finished", timeout=WAIT_S, poll=0.25)
    assert sum(phases.values()) == 1, phases
    assert {n for n, _, _ in series} <= exported_names()


def _phases(worker: str) -> dict[str, float]:
    return {ls["phase"]: v for n, ls, v in scrape() if n == "ray_kaizen_agents" and ls.get("WorkerId") == worker}


def test_a_running_agent_is_counted_running_and_its_cycles_and_cost_are_exported(ray_cluster, storage, cleanup):
    handle = Spender.spawn(config=config(storage), name="m-live")
    cleanup(handle)
    ref = handle.start({"cost": 0.25, "delay": 0.02})
    wait_until(lambda: handle.status()["cycle"] >= 2, "m-live to run two cycles", timeout=WAIT_S)

    def worker() -> str | None:
        found = {ls["WorkerId"] for n, ls, _ in scrape() if n == "ray_kaizen_cycles_total" and ls.get("agent") == "m-live"}
        return next(iter(found), None)

    wid = wait_until(worker, "m-live's cycles exported", timeout=WAIT_S, poll=0.25)
    phases = wait_until(lambda: (p := _phases(wid)).get("running") == 1 and p, "m-live counted running", timeout=WAIT_S, poll=0.25)
    assert sum(phases.values()) == 1, phases  # idle went back to 0 when the run started
    handle.request_interrupt("programmatic", "graceful", "enough")
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "interrupted" and result["forwarded_by"] == ["programmatic"]

    def final() -> Any:
        s = scrape()
        cycles, cost = value(s, "ray_kaizen_cycles_total", agent="m-live"), value(s, "ray_kaizen_cost_total", agent="m-live")
        return cycles == result["cycles"] and (cycles, cost)

    _, cost = wait_until(final, "m-live's final cycle count exported", timeout=WAIT_S, poll=0.25)
    assert cost == pytest.approx(result["cost"]) and result["cost"] == pytest.approx(0.25 * result["cycles"])


def test_a_supervisors_status_sums_its_childrens_live_cycles_and_cost_and_names_its_manifest(ray_cluster, storage, cleanup):
    children = [
        kr.ChildSpec(Spender, name=f"s{i}", config=config(storage), task={"cost": 0.5, "delay": 0.02}) for i in range(2)
    ]
    sup = kr.Supervisor.spawn("agg", children=children, config=kr.SupervisorConfig(storage_path=storage))
    cleanup(sup)
    assert (sup.status()["cycle"], sup.status()["cost"], sup.status()["checkpoint_id"]) == (0, 0.0, None)
    ref = sup.start()
    live = wait_until(lambda: (s := sup.status())["cycle"] >= 4 and s, "the swarm to run 4 cycles", timeout=WAIT_S)
    assert live["cost"] == pytest.approx(0.5 * live["cycle"])
    sup.request_interrupt("programmatic", "graceful", "enough")
    result = ray.get(ref, timeout=WAIT_S)

    done = sup.status()
    kids = result["children"].values()
    assert done["cycle"] == sum(c["cycles"] for c in kids) and done["cost"] == pytest.approx(sum(c["cost"] for c in kids))
    assert done["checkpoint_id"] == result["checkpoint_id"] is not None
    assert all(c["forwarded_by"] == ["programmatic", "agg"] for c in kids)
    # Name and class only: Ray takes the repr once, right after __init__.
    assert ray.get(sup.actor.__ray_call__.remote(lambda actor: repr(actor)), timeout=30) == "SupervisorActor(agg, Supervisor)"
