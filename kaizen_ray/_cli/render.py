"""What ``kaizen-ray`` prints: JSON-safe values, the ``ls`` row, tables and result summaries (no Ray)."""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel

__all__ = ["ROW_KEYS", "dumps", "json_safe", "result_lines", "status_row", "table"]

ROW_KEYS = ("name", "kind", "phase", "cycle", "cost", "checkpoint_id")  # DESIGN: `ls --json` objects


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON: models as objects, errors as ``{"type", "message"}``, anything else as its repr.

    >>> from kaizen_ray.core.interrupts import InterruptReason
    >>> r = json_safe({"error": ValueError("bad"), "reason": InterruptReason(source="user", mode="graceful")})
    >>> r["error"], r["reason"]["source"], r["reason"]["mode"]
    ({'type': 'ValueError', 'message': 'bad'}, 'user', 'graceful')
    >>> json_safe({"n": float("nan"), 1: {3, 1}})
    {'n': None, '1': [1, 3]}
    """
    if _depth > 50:  # a self-referencing state: a repr, not a RecursionError
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN or infinity
    if isinstance(value, enum.Enum):
        return json_safe(value.value, _depth + 1)
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json")
        except Exception:  # noqa: BLE001 - a model holding something pydantic cannot dump: field by field
            return {k: json_safe(v, _depth + 1) for k, v in dict(value).items()}
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [json_safe(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, (list, tuple)):
        return [json_safe(v, _depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return repr(value)


def dumps(value: Any) -> str:
    """One JSON document, of :func:`json_safe` of ``value``.

    >>> dumps({"a": (1, 2)})
    '{"a": [1, 2]}'
    """
    return json.dumps(json_safe(value))


def status_row(name: str, kind: str, status: dict[str, Any], checkpoint_id: str | None = None) -> dict[str, Any]:
    """The ``ls`` / ``status`` object of one actor, from its ``status()`` dict.

    A supervisor's cycle and cost are its live children's, summed (down the
    tree), and its checkpoint_id the last manifest its actor saved; before
    its first, ``checkpoint_id`` falls back to the one given (the last on disk).

    >>> status_row("a1", "agent", {"phase": "running", "cycle": 3, "cost": 0.5, "checkpoint_id": "ck-1"})
    {'name': 'a1', 'kind': 'agent', 'phase': 'running', 'cycle': 3, 'cost': 0.5, 'checkpoint_id': 'ck-1'}
    >>> status_row("swarm", "supervisor", {"phase": "running", "cycle": 7, "cost": 1.5, "checkpoint_id": None}, "ck-m")["checkpoint_id"]
    'ck-m'
    """
    return {
        "name": name,
        "kind": kind,
        "phase": json_safe(status.get("phase")),
        "cycle": status.get("cycle"),
        "cost": status.get("cost"),
        "checkpoint_id": status.get("checkpoint_id") or checkpoint_id,
    }


def table(rows: list[dict[str, Any]], keys: tuple[str, ...] = ROW_KEYS) -> str:
    """Rows as aligned columns under upper-case headers ("-" for None; floats without their rounding noise).

    >>> print(table([{"name": "a1", "kind": "agent", "phase": "idle", "cycle": 0, "cost": 0.0, "checkpoint_id": None},
    ...              {"name": "a2", "kind": "agent", "phase": "running", "cycle": 163, "cost": 1.6300000000000012}]))
    NAME  KIND   PHASE    CYCLE  COST  CHECKPOINT_ID
    a1    agent  idle     0      0.0   -
    a2    agent  running  163    1.63  -
    """
    cells = [[k.upper() for k in keys]] + [[_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value):
        return str(round(value, 9))  # 0.1 + 0.2 shows as 0.3: a sum of charges is noisy in its last digits
    return str(value)


def result_lines(result: dict[str, Any], indent: str = "") -> list[str]:
    """A run's result dict as short lines: status, cycles, cost, checkpoint, why it stopped; children below.

    >>> result_lines({"agent": "a1", "status": "completed", "cycles": 3, "cost": 0.03, "checkpoint_id": "ck-1"})
    ['a1: completed after 3 cycles, cost 0.03, checkpoint ck-1']
    """
    name = result.get("agent", "?")
    status = result.get("status")
    if "children" in result:
        line = f"{indent}{name}: {status}, restarts {result.get('restarts', 0)}, manifest {result.get('checkpoint_id')}"
    else:
        line = (
            f"{indent}{name}: {status} after {result.get('cycles', 0)} cycles, cost {result.get('cost', 0.0):g}, "
            f"checkpoint {result.get('checkpoint_id')}"
        )
    reason = result.get("interrupt_reason")
    if reason is not None:
        reason = json_safe(reason)
        line += f" ({reason.get('source')}/{reason.get('mode')}: {reason.get('message')})"
    error = result.get("error")
    if error is not None:
        line += f"; error: {error if isinstance(error, str) else f'{type(error).__name__}: {error}'}"
    lines = [line]
    for child in (result.get("children") or {}).values():
        lines.extend(result_lines(child, indent + "  "))
    return lines
