"""Run a blocking call in a daemon thread and await it from an event loop.

Not the loop's default executor: its worker threads are joined at interpreter
exit, so one hung step or hook would hang the process on exit. A daemon thread
that cannot be cancelled can at least be abandoned.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["DaemonCall"]


class DaemonCall:
    """``fn(*args)`` running in its own daemon thread.

    ``result()`` is the call's outcome (awaiting it may be cancelled: the
    thread goes on). ``wait_finished(timeout)`` tells, independently of any
    cancellation, whether the thread ended within ``timeout`` seconds.

    >>> async def demo():
    ...     call = DaemonCall(sum, [1, 2, 3])
    ...     return await call.result(), await call.wait_finished(1.0)
    >>> asyncio.run(demo())
    (6, True)
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "kaizen-call") -> None:
        self._loop = asyncio.get_running_loop()
        self._outcome: asyncio.Future[Any] = self._loop.create_future()
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._fn = fn
        self._args = args
        self.thread = threading.Thread(target=self._target, name=name, daemon=True)
        self.thread.start()

    def _target(self) -> None:
        try:
            value = self._fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting loop, type intact
            self._post(self._settle, self._outcome.set_exception, exc)
        else:
            self._post(self._settle, self._outcome.set_result, value)
        finally:
            self._post(self._settle, self._finished.set_result, None)

    def _post(self, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(*args)
        except RuntimeError:  # the loop is closed: the call was abandoned
            pass

    @staticmethod
    def _settle(setter: Callable[[Any], None], value: Any) -> None:
        fut = getattr(setter, "__self__", None)
        if fut is not None and not fut.done():
            setter(value)

    async def result(self) -> Any:
        """The return value of ``fn`` (or its exception, type and chain intact)."""
        return await asyncio.shield(self._outcome)

    async def wait_finished(self, timeout: float | None) -> bool:
        """True if the thread ended within ``timeout`` seconds (None: wait for ever)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._finished), timeout)
        except TimeoutError:
            return False
        return True
