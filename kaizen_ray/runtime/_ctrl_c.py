"""Ctrl+C while the driver blocks on a run: :func:`wait_with_signals`.

Used by ``AgentHandle.run()`` / ``SupervisorHandle.run()``: the driver's own
:class:`~kaizen_ray.core.handlers.SignalInterruptHandler` for the wait's
duration, forwarding each press to the agent (or supervisor) actor. Presses
are counted one by one by the handler's wakeup pipe, also while the main
thread is inside ``ray.wait``.
"""

from __future__ import annotations

from typing import Any

import ray

from kaizen_ray.core.handlers import SignalInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager

__all__ = ["wait_with_signals"]


def wait_with_signals(target: Any, refs: list[Any], poll_s: float = 0.02) -> None:
    """Return once one of ``refs`` is ready, turning Ctrl+C into interrupts of ``target`` while it waits.

    First SIGINT: GRACEFUL USER interrupt; second: IMMEDIATE; third: the
    previous handler is restored and KeyboardInterrupt raised. SIGTERM:
    GRACEFUL. Only the main thread can install it (elsewhere: a warning).

    >>> ref = handle.start("task")  # doctest: +SKIP
    >>> wait_with_signals(handle, [ref]); result = ray.get(ref)  # doctest: +SKIP
    """
    manager = InterruptManager(name=f"driver:{getattr(target, 'name', target)}")
    manager.add_child(target)
    handler = SignalInterruptHandler()
    manager.add_handler(handler)
    try:
        while True:
            # Short waits: the third press raises KeyboardInterrupt from the
            # Python-level handler, which runs only between them. (The first
            # two are counted and forwarded while ray.wait still blocks.)
            ready, _ = ray.wait(refs, num_returns=1, timeout=poll_s, fetch_local=False)
            if ready:
                return
    finally:
        manager.remove_handler(handler)
