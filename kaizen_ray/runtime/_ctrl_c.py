"""Ctrl+C while the driver blocks on a run: :func:`signals_to`.

Used by ``AgentHandle.run()`` / ``SupervisorHandle.run()``: the driver's own
:class:`~kaizen_ray.core.handlers.SignalInterruptHandler` for the run's
duration (from before it is submitted), forwarding each press to the agent
(or supervisor) actor. Presses are counted one by one by the handler's
wakeup pipe, also while the main thread is inside ``ray.wait``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from kaizen_ray.core.handlers import SignalInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager

__all__ = ["signals_to"]


@contextmanager
def signals_to(target: Any, poll_s: float = 0.02) -> Iterator[Callable[[list[Any]], None]]:
    """Within the block, Ctrl+C interrupts ``target``; yields ``wait_any(refs)``, which returns once one is ready.

    First SIGINT: GRACEFUL USER interrupt; second: IMMEDIATE; third: the
    previous handler is restored and KeyboardInterrupt raised. SIGTERM:
    GRACEFUL. Only the main thread can install it (elsewhere: a warning).
    Installed on entry, before the caller starts anything: a press made while
    the run is being submitted is counted too (the run then starts interrupted).

    >>> with signals_to(handle) as wait_any:  # doctest: +SKIP
    ...     ref = handle.start("task"); wait_any([ref])
    """
    manager = InterruptManager(name=f"driver:{getattr(target, 'name', target)}")
    manager.add_child(target)
    handler = SignalInterruptHandler()
    manager.add_handler(handler)

    def wait_any(refs: list[Any]) -> None:
        while True:
            # Short waits: the third press raises KeyboardInterrupt from the
            # Python-level handler, which runs only between them. (The first
            # two are counted and forwarded while ray.wait still blocks.)
            ready, _ = ray.wait(refs, num_returns=1, timeout=poll_s, fetch_local=False)
            if ready:
                return

    try:
        yield wait_any
    finally:
        manager.remove_handler(handler)
