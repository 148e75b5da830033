"""The timer actor: one-shot deadlines that raise SYSTEM interrupts on their targets.

One named actor per namespace (``kaizen-timer``). It runs one scheduling loop
over one heap (:class:`~kaizen_ray.core.deadlines.DeadlineQueue`): no thread or
task per deadline, so a thousand pending deadlines cost a thousand heap
entries. A deadline counts from the moment its run started, by the wall clock
of the process that started it, not from when the timer actor received it or
was up: ``due = started_at + timeout_s``, converted to this process's
monotonic clock on arrival.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

import ray

from kaizen_ray.core.deadlines import DeadlineQueue
from kaizen_ray.core.interrupts import InterruptMode, InterruptSource

logger = logging.getLogger("kaizen_ray.timer")

__all__ = ["TimerActor", "TimerLogic", "TIMER_NAME", "get_or_create_timer"]

TIMER_NAME = "kaizen-timer"


class TimerLogic:
    """The loop without Ray. ``fire(key, payload, lateness_s)`` is called once per due deadline.

    >>> async def demo():
    ...     fired = []
    ...     timer = TimerLogic(lambda key, payload, late: fired.append(key))
    ...     loop_task = asyncio.ensure_future(timer.loop())
    ...     timer.schedule("k", started_at=time.time(), timeout_s=0.01, payload=None)
    ...     while not fired:
    ...         await asyncio.sleep(0.005)
    ...     loop_task.cancel()
    ...     return fired
    >>> asyncio.run(demo())
    ['k']
    """

    def __init__(
        self,
        fire: Callable[[Hashable, Any, float], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._wall = wall
        self._queue = DeadlineQueue()
        self._changed: asyncio.Event | None = None
        self.fired = 0

    def __len__(self) -> int:
        return len(self._queue)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def schedule(self, key: Hashable, *, started_at: float, timeout_s: float, payload: Any) -> float:
        """Fire ``key`` at wall time ``started_at + timeout_s``; returns the seconds left (may be < 0)."""
        left = started_at + timeout_s - self._wall()
        self._queue.schedule(key, self._clock() + left, payload)
        self._wake()
        return left

    def cancel(self, key: Hashable) -> bool:
        """Drop a pending deadline; False if it already fired or never was."""
        found = self._queue.cancel(key)
        self._wake()
        return found

    async def loop(self) -> None:
        """Sleep until the next deadline (or a change), fire what is due, forever."""
        self._changed = asyncio.Event()
        while True:
            self._changed.clear()
            now = self._clock()
            for key, due, payload in self._queue.pop_due(now):
                self.fired += 1
                try:
                    self._fire(key, payload, now - due)
                except Exception:  # noqa: BLE001 - one bad target never stops the loop
                    logger.exception("timer: firing %r failed", key)
            upcoming = self._queue.next_due()
            timeout = None if upcoming is None else max(0.0, upcoming - self._clock())
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass


def _interrupt_target(key: Hashable, payload: dict[str, Any], lateness_s: float) -> None:
    target = payload["target"]
    elapsed = time.time() - payload["started_at"]
    metadata = {
        "handler": "timeout",
        "timeout_seconds": payload["timeout_s"],
        "elapsed_seconds": elapsed,
        "lateness_seconds": lateness_s,
        "deadline": key,
    }
    logger.info("timer: %s timed out after %.3fs (%.1f ms late)", payload["name"], elapsed, lateness_s * 1000)
    # Fire and forget: a dead target must not hold up the loop.
    target.request_interrupt.remote(
        InterruptSource.SYSTEM.value, payload["mode"], f"timeout after {payload['timeout_s']}s", metadata
    )


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class TimerActor:
    """The named timer actor. Targets are actor handles with a ``request_interrupt`` method.

    >>> timer = get_or_create_timer("kaizen")                                       # doctest: +SKIP
    >>> ray.get(timer.schedule.remote("a1/run-1", handle.actor, "a1", time.time(), 30.0, "graceful"))  # doctest: +SKIP
    29.99...
    """

    def __init__(self) -> None:
        self._logic = TimerLogic(_interrupt_target)
        self._loop_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"TimerActor(pending={len(self._logic)}, fired={self._logic.fired})"

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._logic.loop())

    async def schedule(self, key: str, target: Any, name: str, started_at: float, timeout_s: float, mode: str) -> float:
        self._ensure_loop()
        payload = {"target": target, "name": name, "started_at": started_at, "timeout_s": timeout_s, "mode": InterruptMode(mode).value}
        return self._logic.schedule(key, started_at=started_at, timeout_s=timeout_s, payload=payload)

    async def cancel(self, key: str) -> bool:
        return self._logic.cancel(key)

    async def pending(self) -> int:
        return len(self._logic)


def get_or_create_timer(namespace: str | None) -> Any:
    """The namespace's timer actor, created on first use (detached: it serves every driver)."""
    options: dict[str, Any] = {"name": TIMER_NAME, "get_if_exists": True, "lifetime": "detached"}
    if namespace:
        options["namespace"] = namespace
    return TimerActor.options(**options).remote()
