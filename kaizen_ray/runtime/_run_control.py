"""Runs that outlive their caller, and waiting for a run's end from anywhere.

Shared by agent and supervisor actors (through ``ControlMethods``). Every run
settles a future with its result; ``wait_run`` (a control call) awaits it, so
``kaizen-ray interrupt --wait`` can block until a run that another process
started has ended. ``start_detached`` starts a run owned by the actor itself:
a plain ``handle.start()`` is watched by a task the calling driver owns, and
that task dies with the driver, while a detached actor's run must go on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import ray

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["RunControl", "settle"]


class RunControl:
    """The run-tracking control calls; subclasses provide ``run`` (which calls ``_run_began`` and ``settle``), ``_name``, ``_kind``, ``_wait_kill_deadline``.

    >>> ray.get(actor.start_detached.remote("task", None))   # doctest: +SKIP
    'a1'
    >>> ray.get(actor.wait_run.remote())["status"]           # doctest: +SKIP
    'completed'
    """

    _name: str
    _kind: str

    _run_future: concurrent.futures.Future[dict[str, Any]] | None = None
    _prepared: concurrent.futures.Future[dict[str, Any]] | None = None
    _detached: asyncio.Future[Any] | None = None

    def _run_began(self) -> concurrent.futures.Future[dict[str, Any]]:
        """The future of the run that begins now (the one start_detached made for it, if any)."""
        # A concurrent future: the run settles it on the default loop, control
        # calls await it on the control group's loop.
        fut, self._prepared = self._prepared, None
        self._run_future = fut if fut is not None else concurrent.futures.Future()
        return self._run_future

    @ray.method(concurrency_group="control")
    async def running(self) -> bool:
        """True while a run (attached or detached) is going."""
        return self._run_future is not None and not self._run_future.done()

    @ray.method(concurrency_group="control")
    async def wait_run(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The result of the current run once it has ended (of the last run if none is going; None if none ever ran).

        Raises ``TimeoutError`` past ``timeout_s``, and whatever the run raised.
        """
        fut = self._run_future
        if fut is None:
            return None
        # Shielded: a waiter that gives up must not cancel the run's future for every other waiter.
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout_s)

    async def start_detached(self, task: Any, resume_from_checkpoint: str | None) -> str:
        """Start a run that belongs to this actor, not to the caller, and return at once.

        The run goes on after the caller exits (a plain ``start()`` is watched
        by a task its driver owns, which dies with it). The kill deadline is
        then kept by the actor itself: see :meth:`keep_kill_deadline`.
        Its result: :meth:`wait_run`.
        """
        if self._run_future is not None and not self._run_future.done():
            raise RuntimeError(f"{self._kind} {self._name!r} is already running (a second run must wait for the first to end)")
        # Made now, so that running() and wait_run() see this run before the call returns.
        self._prepared = self._run_future = concurrent.futures.Future()
        # Runs on the default group's loop, as an attached run does; the reference keeps the task alive.
        self._detached = asyncio.ensure_future(self.run(task, resume_from_checkpoint))
        ray.get_runtime_context().current_actor.keep_kill_deadline.remote()  # our own call: no caller to die with
        return self._name

    @ray.method(concurrency_group="control")
    async def keep_kill_deadline(self) -> None:
        """What a watcher does for an attached run: kill this actor once an IMMEDIATE stop outlives its deadline."""
        snapshot = await self._wait_kill_deadline()
        if snapshot is not None:
            logger.warning("killing %s: its IMMEDIATE stop passed immediate_shutdown_timeout (detached run)", self._name)
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def settle(fut: concurrent.futures.Future[Any], result: Any = None, *, error: BaseException | None = None) -> None:
    """Settle a run's future once (a second settle is ignored).

    >>> f = concurrent.futures.Future(); settle(f, {"status": "completed"}); settle(f, None); f.result()
    {'status': 'completed'}
    """
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
