"""The benchmark runner's rendering: summary.md and the README's table, from fixed results (never this machine's numbers)."""

from __future__ import annotations

import doctest
import importlib.util
import json
from pathlib import Path

import pytest

import benchmarks.__main__ as runner
from benchmarks import _report

RESULTS = {
    "timer_lateness": {
        "when": "2026-11-26T16:00:00Z", "quick": False, "machine": {"cpus": 2, "python": "3.11.7"},
        "figures": [
            {"figure": "timer lateness, 1000 pending p99", "value": 8.7, "unit": "ms", "baseline": 6.9, "ratio": 1.26,
             "target": "p99 < 20 ms", "met": True, "about": "a deadline's interrupt after its due time"},
            {"figure": "scheduling cost per deadline", "value": 412.0, "unit": "µs"},
        ],
    },
    "cycle_overhead": {
        "when": "2026-11-26T16:05:00Z", "quick": False, "machine": {"cpus": 2, "python": "3.11.7"},
        "figures": [
            {"figure": "per cycle | empty step", "value": 3.0, "unit": "µs", "baseline": 1.0, "ratio": 3.0,
             "target": "≤ 1.2×", "met": False, "about": "one empty cycle"},
        ],
    },
}  # fmt: skip


def test_summary_has_one_row_per_figure_under_its_benchmark_and_a_crash_row() -> None:
    text = _report.summary_markdown({**RESULTS, "swarm_scaling": "RuntimeError: no Ray"}, quick=True, when="today")
    lines = text.splitlines()
    assert lines[0] == "# Benchmarks (quick run, today)"
    assert "| figure | baseline | goal | value | ratio | met |" in lines
    assert "| timer lateness, 1000 pending p99 | 6.9 ms | p99 < 20 ms | 8.7 ms | 1.26× | yes |" in lines
    assert "| scheduling cost per deadline |  |  | 412 µs |  |  |" in lines
    # A "|" inside a figure's name must not split the table's cells.
    assert "| per cycle \\| empty step | 1 µs | ≤ 1.2× | 3 µs | 3× | NO |" in lines
    assert "| **swarm_scaling** | CRASHED: RuntimeError: no Ray |  |  |  |  |" in lines


def test_a_quick_run_is_said_so_and_its_goals_not_judged() -> None:
    quick = {"t": {**RESULTS["timer_lateness"], "quick": True}}
    quick["t"]["figures"] = [{**quick["t"]["figures"][0], "met": None}]
    block = _report.readme_block(quick)
    assert "a QUICK run" in block
    assert block.splitlines()[-2].endswith("| 1.26× | not judged |")


def test_readme_block_shows_the_headline_figures_and_when_and_where() -> None:
    results = {**RESULTS, "budget": {"when": "2026-11-26T16:01:00Z", "quick": False, "machine": {"cpus": 2}, "figures": [
        {"figure": "charges per second", "value": 31.0, "unit": "/s", "baseline": 358.0, "ratio": 11.5, "about": "settles"},
    ]}}  # fmt: skip
    block = _report.readme_block(results).splitlines()
    assert block[0] == _report.README_START and block[-1] == _report.README_END
    assert block[1] == "Measured 2026-11-26T16:05:00Z on a 2-core machine (Python 3.11.7), a full run of `make bench`."
    rows = [line for line in block if line.startswith("| ") and not line.startswith("| figure")]
    assert rows == [
        "| timer lateness, 1000 pending p99 | a deadline's interrupt after its due time | 6.9 ms | p99 < 20 ms | 8.7 ms | 1.26× | yes |",
        "| per cycle \\| empty step | one empty cycle | 1 µs | ≤ 1.2× | 3 µs | 3× | NO |",
        "| charges per second | settles | 358 /s |  | 31 /s | 11.5× |  |",  # no goal: shown for its sentence
    ]


def test_update_readme_replaces_only_what_lies_between_the_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for name, data in RESULTS.items():
        (results / f"{name}.json").write_text(json.dumps(data))
    monkeypatch.setattr(runner, "RESULTS", results)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Performance\n\n{_report.README_START}\nstale table\n{_report.README_END}\n\nAfter.\n")

    assert runner.update_readme(readme) == readme
    text = readme.read_text()
    assert text.startswith("# Title\n\n## Performance\n\n" + _report.README_START)
    assert text.endswith(_report.README_END + "\n\nAfter.\n")
    assert "stale table" not in text and "| 8.7 ms |" in text
    runner.update_readme(readme)
    assert readme.read_text() == text  # idempotent: a second run changes nothing


def test_a_readme_without_markers_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bench-table:start"):
        _report.replace_block("no markers here", "table")


def test_figure_builder_keeps_met_only_beside_a_target() -> None:
    f = _report.figure("rate", 2000.0, "/s", baseline=4000.0, target="≥ 0.5×", met=True, ratio_of=(2000.0, 4000.0))
    assert f == {"figure": "rate", "value": 2000.0, "unit": "/s", "baseline": 4000.0, "ratio": 0.5,
                 "target": "≥ 0.5×", "met": True}  # fmt: skip
    assert "met" not in _report.figure("count", 3, met=True)


def test_every_registered_benchmark_exists() -> None:
    # Registering is one line in REGISTERED; a name without its module would crash `make bench`.
    missing = [n for n in runner.REGISTERED if importlib.util.find_spec(f"benchmarks.{n}") is None]
    assert missing == []


@pytest.mark.parametrize("module", [_report, runner])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0
