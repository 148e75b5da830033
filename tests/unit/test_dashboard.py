"""The Grafana dashboard shipped in the package: valid dashboard JSON over the metrics we export, and in the wheel."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from importlib import resources
from pathlib import Path

from kaizen_ray.runtime._metrics import METRICS, exported_names

ROOT = Path(__file__).resolve().parents[2]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def dashboard() -> dict:
    return json.loads((resources.files("kaizen_ray") / "dashboards" / "kaizen.json").read_text())


def exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_every_expression_names_only_metrics_we_export_and_every_metric_is_shown():
    named = {m for e in exprs(dashboard()) for m in re.findall(r"\bray_[a-z_]+", e)}
    assert named, "no ray_ metric in any panel"
    assert named <= exported_names(), f"not exported by kaizen_ray: {sorted(named - exported_names())}"
    shown = {m.removeprefix("ray_").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for m in named}
    assert shown == set(METRICS)


def test_it_is_a_grafana_dashboard_on_a_datasource_variable():
    dash = dashboard()
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"} and panel["title"], panel
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip()
            # Every $variable a query uses is defined (Grafana's own $__ variables aside).
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range", "__interval"}
            assert used <= variables.keys(), (panel["title"], used)
    # Balanced brackets: a cheap syntax check of the PromQL.
    for expr in exprs(dash):
        for open_, close in ("()", "[]", "{}"):
            assert expr.count(open_) == expr.count(close), expr


def test_the_wheel_ships_it_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["kaizen_ray"]
    assert any(fnmatch.fnmatch("dashboards/kaizen.json", g) for g in globs), globs
