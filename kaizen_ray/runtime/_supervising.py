"""A supervisor's loop over its children's exits: restarts per strategy and intensity, as OTP's supervisor makes them.

A mixin of :class:`~kaizen_ray.runtime.supervisor_actor.SupervisorActor`, apart
so that the actor's control calls and its run's start and end read on their
own (as ``core/_run_cycles.py`` is for ``AgentRun``). The decisions are the
pure functions of :mod:`kaizen_ray.core.supervision` (which exit restarts a
child, who goes with it, how many restarts the window allows); this is where
they meet the children's runs: an exit of a run a group restart replaced is
discarded, a child that ended before its group's restart is not restarted, a
temporary child is stopped with its group and never restarted, a group stops
newest first, and a restarted child resumes from its newest checkpoint of
this run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from kaizen_ray.core.config import RestartPolicy, SupervisorConfig
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource
from kaizen_ray.core.results import RunStatus, run_result
from kaizen_ray.core.supervision import ChildExit, add_restart, children_to_restart, classify_exit, should_restart
from kaizen_ray.runtime._children import Child, exit_cause

logger = logging.getLogger("kaizen_ray.supervisor")

__all__ = ["Supervising"]


def _run_result_of(child: Child, finished: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    """A child's result dict; a run that raised before its first cycle (its ``initial_state``, a
    checkpoint to resume from that is gone) is that child failing, not its supervisor."""
    try:
        return finished.result()
    except Exception as exc:  # noqa: BLE001 - the child's failure, reported in its result with its type
        cause = getattr(exc, "cause", None)  # a RayTaskError carries the actor's own exception
        error = cause if isinstance(cause, BaseException) else exc
        logger.error("child %s failed before its first cycle: %r", child.full_name, error)
        return run_result(child.full_name, RunStatus.FAILED, error=error)


class Supervising:
    """The supervisor actor's restart loop; the actor provides the attributes below and the methods under TYPE_CHECKING."""

    _name: str
    _config: SupervisorConfig
    _children: dict[str, Child]
    _manager_: InterruptManager
    _store: Any
    _restart_times: list[float]
    _restarts: int
    _resume: dict[str, str | None]
    _run_mark: str

    if TYPE_CHECKING:  # the actor's; declared here only for the type checker

        async def _release_held(self, agent: str) -> None: ...

        async def _replace(self, child: Child) -> None: ...

        def _start(self, child: Child, task: Any, resume: str | None) -> None: ...

        def _start_failed(self, name: str, exc: BaseException, resume: str | None) -> tuple[dict[str, Any], str]: ...

    async def _supervise(self, task: Any) -> tuple[dict[str, dict[str, Any]], str | None]:
        order = list(self._children)
        results: dict[str, dict[str, Any]] = {}
        cause: str | None = None
        while True:
            running = {c.task: name for name, c in self._children.items() if c.task is not None and name not in results}
            if not running:
                return results, cause
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                name = running[finished]
                child = self._children[name]
                if child.task is not finished or name in results:
                    # Ended as a group restart handled just before took it down and started it again
                    # (or recorded it): that run is over, its exit is not a new incident (OTP too).
                    continue
                result = _run_result_of(child, finished)
                exit_ = classify_exit(result)
                if exit_ in (ChildExit.KILLED, ChildExit.CRASHED):  # gone mid-cycle, maybe holding a reservation
                    await self._release_held(child.full_name)
                stopping = self._manager_.is_interrupted() or cause is not None
                if not should_restart(child.spec.restart, exit_, stopping=stopping):
                    results[name] = result
                    continue
                self._restart_times, allowed = add_restart(
                    self._restart_times, time.monotonic(), self._config.max_restarts, self._config.restart_window_s
                )
                if not allowed:
                    cause = (
                        f"child {name!r} {exit_.value}{exit_cause(result.get('error'))} and {self._config.max_restarts} restarts within "
                        f"{self._config.restart_window_s}s were already used: giving up"
                    )
                    logger.error("supervisor %s: %s", self._name, cause)
                    results[name] = result
                    self._manager_.request_interrupt(
                        InterruptSource.SYSTEM, InterruptMode.GRACEFUL, cause, {"handler": "escalation", "cause": "max_restarts"}
                    )
                    continue
                self._restarts += 1
                alive = {n for n in running.values() if n != name and n not in results}
                group = children_to_restart(self._config.strategy, order, name, alive)
                logger.warning("supervisor %s: child %s %s; restarting %s", self._name, name, exit_.value, group)
                stopped = {}
                for other in reversed(group):  # the others, newest first (OTP): none outlives one it depends on
                    if other != name:
                        stopped[other] = await self._stop_for_restart(self._children[other], name)
                for member in group:
                    if member != name and self._children[member].spec.restart is RestartPolicy.TEMPORARY:
                        results[member] = stopped[member]  # stopped with the group, never restarted (OTP)
                        continue
                    try:
                        await self._replace(self._children[member])
                    except Exception as exc:  # noqa: BLE001 - a restart that cannot start: reported, and the end
                        resume = await self._restart_point(self._children[member])
                        results[member], cause = self._start_failed(member, exc, resume)
                        self._manager_.request_interrupt(
                            InterruptSource.SYSTEM, InterruptMode.GRACEFUL, cause, {"handler": "escalation", "cause": "start"}
                        )
                        continue
                    self._start(self._children[member], task, await self._restart_point(self._children[member]))

    async def _restart_point(self, child: Child) -> str | None:
        """Where a restarted child resumes: its newest checkpoint of this run, else where this run started it.

        A child supervisor writes its manifest only as its run ends: one that died has none of this
        run, and resumes with ``"latest"``, each of its children from its own newest checkpoint.
        """
        ids = await self._store.candidates.remote(child.storage_path, child.full_name)  # newest first
        this_run = next((i for i in ids if i >= self._run_mark), None)
        if this_run is not None:
            return this_run
        return "latest" if child.spec.kind == "supervisor" else self._resume.get(child.spec.name)

    async def _stop_for_restart(self, child: Child, dead: str) -> dict[str, Any]:
        child.actor.request_interrupt.remote(
            InterruptSource.PROGRAMMATIC.value,
            InterruptMode.IMMEDIATE.value,
            f"restarting with {dead} ({self._config.strategy.value})",
            {"supervisor": self._name, "cause": "restart"},
        )
        assert child.task is not None
        await asyncio.wait({child.task})
        return _run_result_of(child, child.task)  # a run that raised is its failure, not the supervisor's
