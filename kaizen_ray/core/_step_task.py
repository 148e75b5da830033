"""The task a cycle's step runs in: it wakes the cycle's waiter as it ends, and is cancelled cleanly even before it starts.

One task per cycle is the least that lets an IMMEDIATE stop cancel a step in
flight; :func:`waking` makes that task also the cycle's wake-up (no second
task, no ``asyncio.wait``), which keeps a cycle at two turns of the loop.

>>> import asyncio
>>> async def demo():
...     loop = asyncio.get_running_loop()
...     waiter = loop.create_future()
...     async def step():
...         return "done"
...     task = loop.create_task(waking(step(), waiter))
...     await waiter
...     return task.done(), task.result()
>>> asyncio.run(demo())
(True, 'done')
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

__all__ = ["cancel_step", "waking"]


async def waking(step: Any, waiter: asyncio.Future[None]) -> Any:
    """Await ``step``, then wake ``waiter`` from inside the step's own task, in the same turn of the loop it ends in."""
    try:
        return await step
    finally:
        if not waiter.done():
            waiter.set_result(None)


def cancel_step(step: asyncio.Future[Any], inner: Any) -> None:
    """Cancel the step's task; if it never started, close the step's coroutine too.

    A task cancelled before its first turn never starts ``waking``, which
    would leave the step's own coroutine never awaited (and warned about).
    """
    step.cancel()
    if inspect.iscoroutine(inner) and inspect.getcoroutinestate(inner) == inspect.CORO_CREATED:
        inner.close()
