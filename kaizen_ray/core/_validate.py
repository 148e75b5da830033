"""The one check of a number: finite, and not below a floor.

Every duration, amount and deadline in kaizen_ray goes through here, so the
rule (no bools, no NaN or infinity, no negatives) and the wording of the error
are the same everywhere. The error names the field and the bad value.

>>> finite_non_negative("timeout_seconds", 2)
2.0
>>> finite_non_negative("cost", float("nan"))
Traceback (most recent call last):
kaizen_ray.core.errors.ConfigError: cost must be a finite number >= 0, got nan

The error is a :class:`~kaizen_ray.core.errors.ConfigError`, so also a ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

from kaizen_ray.core.errors import ConfigError

__all__ = ["finite", "finite_non_negative"]


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def finite(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite real number (not a bool), else ValueError naming ``name``.

    >>> finite("due", -1.5)
    -1.5
    """
    if not _is_real(value):
        raise ConfigError(name, value, "a finite number")
    return float(value)


def finite_non_negative(name: str, value: Any, unit: str = "") -> float:
    """``value`` as a float if it is finite and >= 0, else ConfigError naming ``name``, the value and the unit.

    >>> finite_non_negative("delay_s", 0)
    0.0
    >>> finite_non_negative("timeout_seconds", -1, unit="seconds")
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: timeout_seconds must be a finite number of seconds >= 0, got -1
    """
    if not _is_real(value) or value < 0:
        raise ConfigError(name, value, f"a finite number{f' of {unit}' if unit else ''} >= 0")
    return float(value)
