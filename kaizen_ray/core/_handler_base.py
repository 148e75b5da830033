"""The base class and shared helpers of the interrupt handlers.

Its own module so that :mod:`kaizen_ray.core.handlers` (timeout, budget) and
:mod:`kaizen_ray.core.signals` can both build on it without importing each
other: ``handlers`` re-exports ``SignalInterruptHandler`` from ``signals``.

>>> isinstance(InterruptHandler(), InterruptHandler)
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kaizen_ray.core.interrupts import InterruptMode, InterruptSource

# One logger for every handler, whichever module it lives in, so log filters
# written against "kaizen_ray.handlers" keep seeing the signal handler too.
logger = logging.getLogger("kaizen_ray.handlers")

__all__ = ["InterruptHandler"]


def _check_mode(value: Any) -> InterruptMode:
    try:
        return InterruptMode(value)
    except ValueError:
        raise ValueError(f"mode must be 'graceful' or 'immediate', got {value!r}") from None


def _notify(managers: Iterable[Any], source: InterruptSource, mode: InterruptMode, msg: str, meta: dict) -> None:
    for manager in managers:
        try:
            manager.request_interrupt(source, mode, msg, dict(meta))
        except Exception:
            logger.exception("interrupting %r failed", manager)


class InterruptHandler:
    """Base of the handlers: every lifecycle method is a no-op; config is read-only.

    >>> h = InterruptHandler()
    >>> h.attach(None); h.run_started(None); h.run_ended(None); h.detach(None)
    """

    def attach(self, manager: Any) -> None:
        """Start acting on ``manager`` (called by ``manager.add_handler``)."""

    def detach(self, manager: Any) -> None:
        """Stop acting on ``manager`` (called by ``manager.remove_handler``)."""

    def run_started(self, manager: Any) -> None:
        """The run of ``manager``'s agent starts."""

    def run_ended(self, manager: Any) -> None:
        """The run of ``manager``'s agent ended (whatever its status)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} is read-only after construction: cannot set {name!r}")
        object.__setattr__(self, name, value)
