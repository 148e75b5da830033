"""Timeout and budget handlers added to an actor, carried out by the timer and budget actors.

Shared by agent and supervisor actors. A :class:`TimeoutInterruptHandler`
becomes a deadline on the namespace's timer actor, scheduled when a run
starts (counting from that moment) and cancelled when it ends. A
:class:`BudgetInterruptHandler` becomes a budget scope actor owned by this
actor, which subscribes to it; a supervisor hands its scopes to its children
so that they all charge one. Both kinds of actor live in a named namespace,
never an anonymous one (see :mod:`kaizen_ray.runtime._namespaces`), and the
timer keeps a scheduled deadline across its own restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import ray

from kaizen_ray.core.handlers import BudgetInterruptHandler, TimeoutInterruptHandler
from kaizen_ray.runtime.budget import create_budget_scope
from kaizen_ray.runtime.timer import get_or_create_timer

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["SystemHandlers"]


class SystemHandlers:
    """The SYSTEM handlers of one actor (``owner``), by key.

    >>> system = SystemHandlers("a1", "/tmp/ckpts", None)  # inside the agent's actor  # doctest: +SKIP
    >>> key = await system.add(TimeoutInterruptHandler(30.0)); await system.run_started()  # doctest: +SKIP
    """

    def __init__(self, owner: str, storage_path: str, namespace: str | None) -> None:
        self.owner = owner
        self.storage_path = storage_path
        self.namespace = namespace
        self.timeouts: dict[str, TimeoutInterruptHandler] = {}
        self.scopes: dict[str, Any] = {}
        # handler key -> (timer key, ref of the timer's answer to its schedule call) of the current run
        self._scheduled: dict[str, tuple[str, Any]] = {}
        # The timer keys of the current run's deadlines, replaced whole when it ends: read on the control
        # group's thread (see is_current_deadline), where one membership test is atomic.
        self._current: set[str] = set()
        self._run_started: float | None = None
        self._timer: Any = None
        self._cancels: set[asyncio.Task[Any]] = set()  # cancels waiting for their schedule's answer

    def _me(self) -> Any:
        return ray.get_runtime_context().current_actor

    def _timer_actor(self) -> Any:
        if self._timer is None:
            self._timer = get_or_create_timer(self.namespace)
        return self._timer

    async def add(self, handler: Any) -> str:
        """Register ``handler``; returns its key (for :meth:`remove`)."""
        key = f"{type(handler).__name__}-{uuid.uuid4().hex[:8]}"
        if isinstance(handler, TimeoutInterruptHandler):
            self.timeouts[key] = handler
            if self._run_started is not None:  # added mid-run: counts from the run's start too
                self._schedule(key, handler)
        elif isinstance(handler, BudgetInterruptHandler):
            # Subscribed by its creation arguments, so a restarted budget actor still interrupts this one.
            scope = create_budget_scope(self.owner, handler, self.storage_path, self.namespace, subscriber=self._me())
            await scope.snapshot.remote()  # up and subscribed before add_handler returns
            self.scopes[key] = scope
        else:
            raise TypeError(f"{handler!r} cannot be carried out by an actor; expected a Timeout- or BudgetInterruptHandler")
        return key

    async def remove(self, key: str) -> Any:
        """Unregister; returns the budget scope actor that was dropped, if any."""
        if key in self.timeouts:
            del self.timeouts[key]
            scheduled = self._scheduled.pop(key, None)
            if scheduled is not None:
                self._current.discard(scheduled[0])  # no longer this run's: if it fires before the cancel, refused
            cancelled = await self._cancel_once_scheduled(*scheduled) if scheduled is not None else None
            if cancelled is not None:
                await cancelled
            return None
        if key in self.scopes:
            return self.scopes.pop(key)
        raise KeyError(f"no handler with key {key!r} on {self.owner!r}; known: {sorted({*self.timeouts, *self.scopes})}")

    def _schedule(self, key: str, handler: TimeoutInterruptHandler) -> None:
        """Send the deadline to the timer actor, not waiting for its answer (kept for the cancel); a refusal is logged.

        Not waited for, at a run's start as mid-run (add_handler): a timer still starting holds up neither.
        """
        assert self._run_started is not None
        timer_key = f"{self.owner}/{key}/{uuid.uuid4().hex[:8]}"
        answer = self._timer_actor().schedule.remote(
            timer_key, self._me(), self.owner, self._run_started, handler.timeout_seconds, handler.mode.value
        )
        self._scheduled[key] = (timer_key, answer)
        self._current.add(timer_key)
        answer.future().add_done_callback(self._log_refused(handler))

    async def _cancel_once_scheduled(self, timer_key: str, answer: Any) -> Any:
        """Send the cancel once the schedule is answered; the ref of the cancel's answer (None: nothing to cancel)."""
        # The timer is an async actor that retries calls across its restarts: Ray does not keep two calls
        # in the order they were sent. A cancel that overtook its schedule would find nothing, and the
        # deadline would fire later on an idle agent, stopping its next run (interrupts are level-triggered).
        try:
            await answer
        except Exception:  # noqa: BLE001 - never scheduled (logged by run_started): nothing to cancel
            return None
        return self._timer_actor().cancel.remote(timer_key)

    async def run_started(self) -> None:
        """Schedule every timeout, counting from now (wall clock), without waiting for the timer's answer.

        The run's cycles start at once. The timer actor may still be starting
        (about a second here, the first time in a namespace): that makes no
        deadline later, since each counts from this moment, and it must not eat
        into the run's time either. A timer that crashes meanwhile gets the
        call again once restarted (``max_task_retries=-1``); one gone for good
        (killed, or removed by ``kaizen-ray gc``) is logged as an error.
        """
        self._run_started = time.time()
        for key, handler in self.timeouts.items():
            self._schedule(key, handler)

    def _log_refused(self, handler: TimeoutInterruptHandler) -> Any:
        def check(answer: Any) -> None:
            if answer.cancelled() or answer.exception() is None:
                return
            logger.error(
                "%s: the timer actor did not take %r: this run has no such deadline", self.owner, handler,
                exc_info=answer.exception(),
            )

        return check

    async def run_ended(self) -> None:
        """Cancel the run's deadlines, each once the timer has it (in the background: a dead timer must not hold the run)."""
        self._run_started = None
        self._current = set()
        scheduled, self._scheduled = self._scheduled, {}
        for timer_key, answer in scheduled.values():
            cancel = asyncio.get_running_loop().create_task(self._cancel_once_scheduled(timer_key, answer))
            self._cancels.add(cancel)  # a task nobody holds may be collected before it runs
            cancel.add_done_callback(self._cancels.discard)

    def is_current_deadline(self, timer_key: Any) -> bool:
        """Whether ``timer_key`` is a deadline of the run going now.

        The timer may fire a deadline after its run ended: its schedule came
        in late (the timer was starting) and was already past due, or it fell
        due as the run ended, before the cancel came. Interrupts are
        level-triggered, so accepting it would stop this agent's next run.

        >>> system.is_current_deadline(metadata["deadline"])  # in request_interrupt  # doctest: +SKIP
        False
        """
        return timer_key in self._current

    async def budget_snapshot(self) -> dict[str, Any] | None:
        """The first scope's ledger (spent, remaining, ...), or None without a budget."""
        for scope in self.scopes.values():
            return await scope.snapshot.remote()
        return None
