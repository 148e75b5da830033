"""The one check of a number (finite, and not below a floor), and of a timestamp (aware, in UTC).

Every duration, amount and deadline in kaizen_ray goes through here, so the
rule (no bools, no NaN or infinity, no negatives) and the wording of the error
are the same everywhere. The error names the field and the bad value. So does
every timestamp a model keeps (:func:`aware_utc`).

>>> finite_non_negative("timeout_seconds", 2)
2.0
>>> finite_non_negative("cost", float("nan"))
Traceback (most recent call last):
kaizen_ray.core.errors.ConfigError: cost must be a finite number >= 0, got nan

The error is a :class:`~kaizen_ray.core.errors.ConfigError`, so also a ``ValueError``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from kaizen_ray.core.errors import ConfigError

__all__ = ["aware_utc", "finite", "finite_non_negative"]


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


def aware_utc(name: str, value: datetime) -> datetime:
    """``value`` in UTC if it has a time zone, else ValueError naming ``name`` (a pydantic validator's check).

    >>> aware_utc("created_at", datetime(2026, 1, 1, tzinfo=UTC)).isoformat()
    '2026-01-01T00:00:00+00:00'
    """
    if value.tzinfo is None:
        raise ValueError(f"{name} {value!r} has no time zone; expected an aware UTC datetime")
    return value.astimezone(UTC)
