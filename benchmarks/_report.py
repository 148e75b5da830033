"""What every benchmark prints and writes: percentiles, a table, and ``benchmarks/results/<name>.json``.

Figures are reported next to a baseline measured in the same run, and as a
ratio to it, so a slow or busy machine slows both sides alike. No threshold
here is asserted by any test: a benchmark's ``main`` judges its own target,
and only outside ``--quick``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def summary(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (any unit), and how many there were."""
    if not samples:
        raise ValueError("summary needs at least one sample, got none")
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {"n": len(ordered), "p50": statistics.median(ordered), "p99": p99, "max": ordered[-1]}


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``, with a floor on the baseline so that a 0 measurement does not divide by zero."""
    return value / max(baseline, 1e-9)


def table(title: str, unit: str, rows: list[dict[str, Any]]) -> str:
    """Rows of ``{"case", "measured": summary, "baseline": summary}`` as an aligned text table."""
    lines = [title, f"{'case':<34} {'p50':>10} {'p99':>10} {'max':>10}   {'baseline p50':>12} {'p99':>10}   ratio p50 / p99"]
    for row in rows:
        m, b = row["measured"], row["baseline"]
        lines.append(
            f"{row['case']:<34} {m['p50']:>10.2f} {m['p99']:>10.2f} {m['max']:>10.2f}   {b['p50']:>12.2f} {b['p99']:>10.2f}"
            f"   {row['ratio_p50']:>5.2f} / {row['ratio_p99']:.2f}"
        )
    lines.append(f"(all figures in {unit}; baseline: {rows[0]['baseline_what'] if rows else ''})")
    return "\n".join(lines)


def row(case: str, measured: list[float], baseline: list[float], baseline_what: str) -> dict[str, Any]:
    """One table row: both summaries and their p50 and p99 ratios."""
    m, b = summary(measured), summary(baseline)
    return {
        "case": case, "measured": m, "baseline": b, "baseline_what": baseline_what,
        "ratio_p50": ratio(m["p50"], b["p50"]), "ratio_p99": ratio(m["p99"], b["p99"]),
    }  # fmt: skip


def row_figures(name: str, r: dict[str, Any], unit: str, *, target: str | None = None, met: bool | None = None,
                about: str | None = None) -> list[dict[str, Any]]:
    """The p50 and p99 figures of a :func:`row`; the target (if any) is judged on p99.

    >>> [f["figure"] for f in row_figures("wake", row("c", [1.0, 2.0], [1.0, 1.0], "b"), "us")]
    ['wake p50', 'wake p99']
    """
    m, b = r["measured"], r["baseline"]
    return [
        figure(f"{name} p50", m["p50"], unit, baseline=b["p50"]),
        figure(f"{name} p99", m["p99"], unit, baseline=b["p99"], target=target, met=met, about=about),
    ]


def figure(
    name: str,
    value: float,
    unit: str = "",
    *,
    baseline: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    about: str | None = None,
    ratio_of: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One row of a benchmark's ``figures``: the schema ``python -m benchmarks`` reads.

    ``ratio`` is ``value / baseline`` unless ``ratio_of=(measured, baseline)``
    says which two numbers it is (e.g. a figure in ms whose ratio compares
    rates). ``target`` is the goal as text (``"≤ 1.2×"``); ``met`` is only
    kept beside a target, and is None in a quick run (not judged). ``about``
    is one sentence on what is measured, shown in the README.

    >>> figure("p99", 8.0, "ms", baseline=4.0, target="≤ 3×", met=True)["ratio"]
    2.0
    >>> "met" in figure("count", 3)
    False
    """
    row: dict[str, Any] = {"figure": name, "value": value, "unit": unit}
    if baseline is not None:
        row["baseline"] = baseline
    if ratio_of is not None:
        row["ratio"] = ratio(*ratio_of)
    elif baseline is not None:
        row["ratio"] = ratio(value, baseline)
    if target is not None:
        row["target"] = target
        row["met"] = met
    if about:
        row["about"] = about
    return row


def write(name: str, payload: dict[str, Any], *, figures: list[dict[str, Any]] | None = None, quick: bool | None = None) -> Path:
    """Write ``payload`` (plus when, the machine, ``quick`` and ``figures``) to ``benchmarks/results/<name>.json``; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        **({"quick": quick} if quick is not None else {}),
        **payload,
        **({"figures": figures} if figures is not None else {}),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


# -- rendering: benchmarks/results/summary.md and the README's table --------------------------------

README_START = "<!-- bench-table:start -->"
README_END = "<!-- bench-table:end -->"


def num(value: Any) -> str:
    """A figure as text: four significant digits, no exponent for everyday sizes.

    >>> num(8.7123), num(1234567.0), num(3), num(None), num(True)
    ('8.712', '1234567', '3', '', 'yes')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10_000 else f"{value:.4g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _with_unit(value: Any, unit: str) -> str:
    text = num(value)
    return f"{text} {unit}".strip() if text and unit else text


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _met(row: dict[str, Any]) -> str:
    if "target" not in row:
        return ""
    met = row.get("met")
    return "not judged" if met is None else ("yes" if met else "NO")


def figure_cells(row: dict[str, Any]) -> list[str]:
    """A figure row as the cells figure | baseline | goal | value | ratio | met.

    >>> figure_cells({"figure": "p99", "value": 8.7, "unit": "ms", "baseline": 6.9, "ratio": 1.26, "target": "< 20 ms", "met": True})
    ['p99', '6.9 ms', '< 20 ms', '8.7 ms', '1.26×', 'yes']
    """
    unit = str(row.get("unit") or "")
    ratio_text = f"{row['ratio']:.3g}×" if isinstance(row.get("ratio"), (int, float)) else ""
    cells = [str(row["figure"]), _with_unit(row.get("baseline"), unit), str(row.get("target") or ""),
             _with_unit(row.get("value"), unit), ratio_text, _met(row)]
    return [_cell(c) for c in cells]


def summary_markdown(results: dict[str, dict[str, Any] | str], *, quick: bool, when: str) -> str:
    """``summary.md``: one table of every figure, grouped by benchmark; a crashed benchmark (a str) gets one row.

    >>> print(summary_markdown({"t": {"figures": [{"figure": "f", "value": 2.0, "unit": "ms", "baseline": 1.0,
    ...     "ratio": 2.0, "target": "≤ 3×", "met": True}]}, "x": "ValueError: boom"}, quick=False, when="then"))
    # Benchmarks (full run, then)
    <BLANKLINE>
    | figure | baseline | goal | value | ratio | met |
    |---|---|---|---|---|---|
    | **t** |  |  |  |  |  |
    | f | 1 ms | ≤ 3× | 2 ms | 2× | yes |
    | **x** | CRASHED: ValueError: boom |  |  |  |  |
    <BLANKLINE>
    Ratios are value / baseline, the baseline measured in the same run; no goal is asserted by any test.
    <BLANKLINE>
    """
    lines = [f"# Benchmarks ({'quick' if quick else 'full'} run, {when})", "",
             "| figure | baseline | goal | value | ratio | met |", "|---|---|---|---|---|---|"]
    for name, data in results.items():
        if isinstance(data, str):
            lines.append(_line([f"**{name}**", f"CRASHED: {_cell(data)}", "", "", "", ""]))
            continue
        lines.append(_line([f"**{name}**", "", "", "", "", ""]))
        for r in data.get("figures") or [{"figure": "(no figures)"}]:
            lines.append(_line(figure_cells(r)))
    lines += ["", "Ratios are value / baseline, the baseline measured in the same run; no goal is asserted by any test.", ""]
    return "\n".join(lines)


def readme_block(results: dict[str, dict[str, Any]]) -> str:
    """The README's performance table (between the markers): the headline figures, and when and where they were measured.

    Headline figures are those with a ``target`` or an ``about`` sentence;
    ``benchmarks/results/summary.md`` has them all.

    >>> block = readme_block({"t": {"when": "2026-01-02T03:04:05Z", "quick": False, "machine": {"cpus": 2, "python": "3.11.7"},
    ...     "figures": [{"figure": "f", "value": 2.0, "unit": "ms", "baseline": 1.0, "ratio": 2.0, "target": "≤ 3×",
    ...                  "met": True, "about": "what f is"}, {"figure": "n", "value": 3}]}})
    >>> print(block)
    <!-- bench-table:start -->
    Measured 2026-01-02T03:04:05Z on a 2-core machine (Python 3.11.7), a full run of `make bench`.
    <BLANKLINE>
    | figure | what it measures | baseline (same run) | goal | value | ratio | met |
    |---|---|---|---|---|---|---|
    | f | what f is | 1 ms | ≤ 3× | 2 ms | 2× | yes |
    <!-- bench-table:end -->
    """
    good = {n: d for n, d in results.items() if isinstance(d, dict)}
    whens = sorted(str(d["when"]) for d in good.values() if d.get("when"))
    cpus = sorted({d.get("machine", {}).get("cpus") for d in good.values()} - {None})
    pythons = sorted({d.get("machine", {}).get("python") for d in good.values()} - {None})
    quick = any(d.get("quick") for d in good.values())
    when = whens[-1] if whens else "at an unknown time"
    machine = f"a {'/'.join(map(str, cpus))}-core machine" if cpus else "an unknown machine"
    if pythons:
        machine += f" (Python {', '.join(pythons)})"
    kind = ("a QUICK run (`make bench-quick`: a smoke test, few iterations, goals not judged)" if quick
            else "a full run of `make bench`")
    lines = [README_START, f"Measured {when} on {machine}, {kind}.", "",
             "| figure | what it measures | baseline (same run) | goal | value | ratio | met |",
             "|---|---|---|---|---|---|---|"]
    for data in good.values():
        for r in data.get("figures") or []:
            if "target" in r or r.get("about"):
                c = figure_cells(r)
                lines.append(_line([c[0], _cell(str(r.get("about") or "")), *c[1:]]))
    lines.append(README_END)
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the bench-table markers (markers included) replaced by ``block``.

    >>> replace_block(f"a\\n{README_START}\\nold\\n{README_END}\\nb", "NEW")
    'a\\nNEW\\nb'
    """
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"expected the markers {README_START!r} and then {README_END!r} in the README; found "
                         f"{'neither' if start < 0 and end < 0 else 'them out of order or only one'}")
    return text[:start] + block + text[end + len(README_END):]
