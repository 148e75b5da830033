"""The one check of a number: finite, and not below a floor.

Every duration, amount and deadline in kaizen_ray goes through here, so the
rule (no bools, no NaN or infinity, no negatives) and the wording of the error
are the same everywhere. The error names the field and the bad value.

>>> finite_non_negative("timeout_seconds", 2)
2.0
>>> finite_non_negative("cost", float("nan"))
Traceback (most recent call last):
ValueError: cost must be a finite number >= 0, got nan
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["finite", "finite_non_negative"]


def finite(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number (not a bool), else ValueError naming ``name``.

    >>> finite("due", -1.5)
    -1.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def finite_non_negative(name: str, value: Any) -> float:
    """``value`` as a float if it is finite and >= 0, else ValueError naming ``name`` and the value.

    >>> finite_non_negative("delay_s", 0)
    0.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
