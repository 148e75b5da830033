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


def write(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the machine it ran on) to ``benchmarks/results/<name>.json``; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
