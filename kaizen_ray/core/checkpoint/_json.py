"""The one check that checkpoint metadata is JSON: only what comes back equal from JSON.

A leaf of the checkpoint package: the model (``_model``) checks metadata
with it when a checkpoint is made, and the file format (``_format``) again
when it is written, since a checkpoint's metadata dict can be changed in
between.

Private to the package (``runtime`` names types with :func:`_type_name` too).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["_JSON_RULE", "_json_clean", "_json_problem", "_type_name"]


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _json_problem(value: Any, where: str, depth: int = 0) -> tuple[str, str] | None:
    """(where, type) of the first value that would not come back equal from JSON, or None."""
    return None if _json_clean(value, depth) else _first_json_problem(value, where, depth)


_JSON_LEAVES = frozenset({str, int, bool, type(None)})
_isfinite = math.isfinite


def _json_clean(value: Any, depth: int = 0) -> bool:
    """Whether :func:`_first_json_problem` would find nothing: the same walk, without naming each place.

    Naming places (a string per item) was most of the cost of checking
    metadata that is fine, which is nearly always; only a value that fails
    is walked again to say where. A child of an exact leaf type (or a finite
    float) is judged here without a call, as that walk would judge it.
    """
    if depth > 64:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return _isfinite(value)
    if depth >= 64:  # a container this deep: rare, left to the walk that names places
        return _first_json_problem(value, "", depth) is None
    if isinstance(value, list):
        for item in value:
            kind = type(item)
            if not (kind in _JSON_LEAVES or (kind is float and _isfinite(item)) or _json_clean(item, depth + 1)):
                return False
        return True
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            kind = type(item)
            if not (kind in _JSON_LEAVES or (kind is float and _isfinite(item)) or _json_clean(item, depth + 1)):
                return False
        return True
    return False


def _first_json_problem(value: Any, where: str, depth: int = 0) -> tuple[str, str] | None:
    if depth > 64:
        return where, f"{_type_name(value)} nested deeper than 64 levels"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"non-finite float ({value})")
    if isinstance(value, list):
        for i, item in enumerate(value):
            if found := _first_json_problem(item, f"{where}[{i}]", depth + 1):
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r}", _type_name(key)
            if found := _first_json_problem(item, f"{where}[{key!r}]", depth + 1):
                return found
        return None
    return where, _type_name(value)


_JSON_RULE = (
    "metadata must be small and JSON-only: dict with str keys, list, str, int, finite float, bool, None"
)
