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


def _notify(managers: Iterable[Any], source: InterruptSource, mode: InterruptMode, msg: str, meta: dict) -> None:
    for manager in managers:
        try:
            manager.request_interrupt(source, mode, msg, dict(meta))
        except Exception:
            logger.exception("interrupting %r failed", manager)


class InterruptHandler:
    """Base of the handlers: ``arm`` / ``disarm`` are no-ops here; config is read-only.

    The manager decides when a handler acts: a bare manager arms it from
    ``add_handler`` to ``remove_handler``; an agent's manager arms it at each
    run's start and disarms it at the run's end (see
    :meth:`~kaizen_ray.core.interrupts.InterruptManager.arm_handlers`).

    >>> from kaizen_ray.core.interrupts import InterruptManager
    >>> h, m = InterruptHandler(), InterruptManager()
    >>> h.arm(m); h.disarm(m)
    """

    def arm(self, manager: Any) -> None:
        """Start acting on ``manager`` from now (armed again: starts over from now)."""

    def disarm(self, manager: Any) -> None:
        """Stop acting on ``manager``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_"):
            raise AttributeError(f"{type(self).__name__} is read-only after construction: cannot set {name!r}")
        object.__setattr__(self, name, value)
