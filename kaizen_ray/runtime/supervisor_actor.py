"""The supervisor's actor: it owns its children's actors, fans interrupts out, restarts.

* Children are agent actors, or supervisor actors (a tree), named
  ``<supervisor>/<child>``: that logical name is their ``ctx.agent_name`` and
  their checkpoints' ``agent``, unchanged across restarts. Their actors take
  their ChildSpec's Ray options (see :mod:`kaizen_ray.runtime._children`).
* An interrupt on the supervisor is accepted by its manager and forwarded to
  every child at once (each forward is a fire-and-forget actor call), and on
  through nested supervisors. Level-triggered: a child spawned or restarted
  after the supervisor was interrupted receives the interrupt before its run
  starts, so it stops at its first boundary.
* A child that crashes or fails is restarted from its newest checkpoint of
  this run (else from where this run started it) per
  its restart policy and the strategy, while fewer than ``max_restarts``
  restarts happened within ``restart_window_s``; one more and the supervisor
  stops the other children gracefully and reports ``"failed"`` (the loop is
  :class:`kaizen_ray.runtime._supervising.Supervising`).
* Its own bounds on a stop of the tree, when ``SupervisorConfig`` sets them
  (:mod:`kaizen_ray.core._stop_bounds`): a GRACEFUL stop escalated to
  IMMEDIATE, then the children still running killed.
* The supervisor's checkpoint is a manifest of its children's checkpoints (a
  child supervisor's manifest, in a tree); resuming it resumes every child from its own. It goes to the supervisor's
  own storage path, else beside its children when they share one, else to
  the default.
* If the supervisor's own actor dies, its children die with it (it owns
  them) and ``start()``'s ref still resolves to a ``"killed"`` result (see
  :func:`kaizen_ray.runtime._watch.watch_supervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import ray

from kaizen_ray.core._stop_bounds import StopBounds
from kaizen_ray.core.checkpoint import (
    Checkpoint,
    CheckpointStatus,
    new_checkpoint_id,
)
from kaizen_ray.core.config import ChildSpec, RestartPolicy, SupervisorConfig
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptReason
from kaizen_ray.core.results import RunStatus, end_line, run_result, supervisor_result
from kaizen_ray.core.supervision import SupervisorPhase, check_transition, supervisor_status
from kaizen_ray.runtime._children import Child, resume_points, spawn_all, tree_layout
from kaizen_ray.runtime._run_control import settle
from kaizen_ray.runtime._system import SystemHandlers
from kaizen_ray.runtime._store_sink import StoreSink
from kaizen_ray.runtime._supervising import Supervising
from kaizen_ray.runtime.agent_actor import ControlMethods
from kaizen_ray.runtime.checkpoints import get_or_create_store

logger = logging.getLogger("kaizen_ray.supervisor")

__all__ = ["SupervisorActor"]

STATUS_TIMEOUT_S = 1.0  # a child that does not answer status() in time (dead, or its control group busy) is left out


async def _awaited(ref: Any) -> Any:
    return await ref


@ray.remote(concurrency_groups={"control": 16}, max_restarts=0)
class SupervisorActor(Supervising, ControlMethods):
    """The Ray actor of a supervisor. Made by ``kr.Supervisor.spawn(...)``."""

    _kind = "supervisor"
    _progress = False  # set by each run()

    def __init__(
        self,
        name: str,
        specs: list[ChildSpec],
        config: SupervisorConfig,
        storage_path: str,
        namespace: str | None,
    ) -> None:
        self._name = name
        self._storage_path = storage_path
        self._config = config
        self._namespace = namespace
        self._store = get_or_create_store(namespace)
        # Else the stop's durable manifest pays for the connection (5-20 ms here), after every child is done.
        self._store_warmed = StoreSink(self._store, storage_path).warm_up(name)
        self._system = SystemHandlers(name, storage_path, namespace)
        self._manager_ = InterruptManager(name=name)
        # Specs come resolved (Supervisor.spawn): every storage_path is set, down the tree.
        self._children = {s.name: Child(s, f"{name}/{s.name}", str(s.config.storage_path)) for s in specs}
        self._inherited_scopes: list[Any] = []  # a parent supervisor's budget scopes, passed on to every child
        self._restart_times: list[float] = []  # inside the restart window only (add_restart prunes it)
        self._restarts = 0
        # This run's start: where each child started (its manifest entry, or None), and an id below
        # every checkpoint made since (ids sort by creation): see _restart_point.
        self._resume: dict[str, str | None] = {}
        self._run_mark = ""
        self._handled_generation: int | None = None
        self._manifest_id: str | None = None  # the last manifest this actor saved (status()'s checkpoint_id)
        # The run moves the phase on its loop; an accepted interrupt moves it on a control thread.
        self._phase_lock = threading.Lock()
        self._phase = SupervisorPhase.IDLE
        self._loop: asyncio.AbstractEventLoop | None = None  # the run's (its children's tasks are on it)
        self._bounds = StopBounds(name, self._manager_, config, self._kill_stragglers_soon)
        self._manager_.add_listener(self._on_interrupt)

    def __repr__(self) -> str:
        # Ray shows the repr once, right after __init__, and never again: name and
        # class only (as AgentActor's). Live state is in status(), `kaizen-ray ls`
        # and metrics. getattr: Ray shows it even when __init__ failed.
        return f"SupervisorActor({getattr(self, '_name', '?')}, Supervisor)"

    def _made_of(self) -> list[str]:
        """Its children's names, in order: what ``kaizen-ray run`` checks before it reuses this actor."""
        return list(self._children)

    def _move(self, phase: SupervisorPhase) -> None:
        with self._phase_lock:
            self._phase = check_transition(self._phase, phase)

    def _on_interrupt(self, reason: InterruptReason, mode: InterruptMode) -> None:
        with self._phase_lock:
            if self._phase is SupervisorPhase.RUNNING:
                self._phase = SupervisorPhase.STOPPING
        self._bounds.arm(mode)  # the tree's bound on this stop (nothing between runs)

    def _kill_stragglers_soon(self) -> None:
        # On the deadline thread: the children's tasks belong to the run's loop.
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._kill_stragglers)
            except RuntimeError:
                pass  # the loop is closed: no run, nothing to kill

    def _kill_stragglers(self) -> None:
        """Have the children still running killed: their watchers report them ``"killed"`` (not restarted: stopping)."""
        for child in self._children.values():
            if child.task is not None and not child.task.done() and child.kill is not None and not child.kill.done():
                child.kill.set_result(self._manager_.reason)

    @ray.method(concurrency_group="control")
    async def children_layout(self) -> dict[str, dict[str, Any]]:
        """Each child's actor name (``agent``), ``namespace``, ``storage_path`` and ``kind`` (down the tree).

        What a watcher needs to report the children once this actor is gone.
        """
        return tree_layout(self._children, self._namespace)

    @ray.method(concurrency_group="control")
    async def use_budget_scope(self, scope: Any) -> None:
        """Charge ``scope`` too: a parent supervisor's budget, passed on to every child of this one."""
        self._inherited_scopes.append(scope)
        await self._use_scope(scope)

    def _manager(self) -> InterruptManager:
        return self._manager_

    async def _status(self) -> dict[str, Any]:
        mgr = self._manager_
        cycle, cost = await self._children_totals()
        return {
            "cycle": cycle,
            "cost": cost,
            "checkpoint_id": self._manifest_id,
            "budget": await self._system.budget_snapshot(),
            "agent": self._name,
            "kind": "supervisor",
            "phase": self._phase.value,
            "children": {name: c.full_name for name, c in self._children.items()},
            "restarts": self._restarts,
            "interrupted": mgr.is_interrupted(),
            "mode": mgr.mode.value if mgr.mode else None,
            "interrupt_reason": mgr.reason,
        }

    async def _children_totals(self) -> tuple[int, float]:
        """Live cycles and cost summed over the children that answer within a second (a tree sums itself)."""
        refs = [c.actor.status.remote() for c in self._children.values() if c.actor is not None]
        answers = await asyncio.gather(*(asyncio.wait_for(_awaited(r), STATUS_TIMEOUT_S) for r in refs), return_exceptions=True)
        live = [a for a in answers if isinstance(a, dict)]
        return sum(int(a.get("cycle") or 0) for a in live), sum(float(a.get("cost") or 0.0) for a in live)

    async def _use_scope(self, scope: Any) -> None:
        # One scope for the whole swarm: every child charges it, spawned or restarted.
        for child in self._children.values():
            if child.actor is not None:
                await child.actor.use_budget_scope.remote(scope)

    async def _drop_scope(self, scope: Any) -> None:
        logger.info("supervisor %s: budget scope removed; running children keep charging it until restarted", self._name)

    async def _release_held(self, agent: str) -> None:
        """Give back what ``agent`` reserved in this supervisor's scopes and died holding; logged, never raised."""
        scopes = [*self._system.scopes.values(), *self._inherited_scopes]
        answers = await asyncio.gather(*(_awaited(s.release_held.remote(agent)) for s in scopes), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                logger.error("supervisor %s: releasing what %s reserved failed: %r", self._name, agent, answer)

    async def _wait_kill_deadline(self) -> None:
        # A supervisor is never killed on a deadline: its children are, and it
        # reports them. None tells a watcher to wait for the run itself.
        return None

    # -- children ----------------------------------------------------------------

    async def _spawn(self, child: Child) -> None:
        scopes = [*self._system.scopes.values(), *self._inherited_scopes]
        await child.spawn(self._namespace, self._manager_, scopes, SupervisorActor)

    async def _spawn_or_replace(self, child: Child) -> None:
        if child.actor is not None:  # the previous run's actor: a new run gets a fresh one
            await self._replace(child)
        else:
            await self._spawn(child)

    def _start(self, child: Child, task: Any, resume: str | None) -> None:
        child.start(self._store, task, resume, self._progress)  # a restarted child gets its bar again

    def _start_failed(self, name: str, exc: BaseException, resume: str | None) -> tuple[dict[str, Any], str]:
        """The result of a child that could not start, and the cause the supervisor gives up for.

        Its ``checkpoint_id`` is where it would have resumed: the manifest keeps it, so that
        resuming the manifest resumes the child from there, not from scratch.
        """
        child = self._children[name]
        self._manager_.remove_child(child)
        cause = f"child {name!r} could not start ({type(exc).__name__}: {exc}): giving up"
        logger.error("supervisor %s: %s", self._name, cause)
        return run_result(child.full_name, RunStatus.FAILED, error=exc, checkpoint_id=resume), cause

    async def _give_up_at_start(self, failed: dict[str, Exception]) -> dict[str, Any]:
        # OTP: a child that cannot start fails its supervisor's start; nothing ran, so the others just go.
        results, causes = {}, []
        for name, exc in failed.items():
            results[name], cause = self._start_failed(name, exc, self._resume.get(name))
            causes.append(cause)
        for name, child in self._children.items():
            if name not in failed and child.actor is not None:
                self._manager_.remove_child(child)
                ray.kill(child.actor, no_restart=True)
                child.actor = None
                # Never ran: its result keeps where it was to resume from, as the manifest must.
                results[name] = run_result(child.full_name, RunStatus.KILLED, checkpoint_id=self._resume.get(name))
        return await self._finish(results, "; ".join(causes))

    async def _replace(self, child: Child) -> None:
        self._manager_.remove_child(child)
        ray.kill(child.actor, no_restart=True)
        await self._spawn(child)

    # -- the run -----------------------------------------------------------------------

    async def run(self, task: Any, resume_from_checkpoint: str | None, progress: bool = False) -> bytes:
        """The run's result dict, pickled once here for its watcher to forward unopened (as an agent's is)."""
        self._move(SupervisorPhase.STARTING)
        self._progress = progress  # one bar per child (agent) for this run
        done = self._run_began()  # after the move: a refused second run leaves the first one's future alone
        try:
            result = await self._run(task, resume_from_checkpoint)
        except BaseException as exc:
            settle(done, error=exc)
            raise
        settle(done, result)
        return ray.cloudpickle.dumps(result)

    async def _run(self, task: Any, resume_from_checkpoint: str | None) -> dict[str, Any]:
        try:
            mgr = self._manager_
            if mgr.is_interrupted() and mgr.generation == self._handled_generation:
                mgr.reset()  # the last run stopped for it; a request made since would still count
            await self._system.run_started()  # its deadlines count from here, the children's start-up included
            self._loop = asyncio.get_running_loop()
            self._bounds.begin()
            self._bounds.arm(mgr.mode)  # an interrupt standing as the run starts is bounded from now
            try:
                resume, restarts = await resume_points(self._store, self._storage_path, self._name, list(self._children), resume_from_checkpoint)
                self._restarts = self._restarts if restarts is None else restarts
                # Each run counts its own restart intensity (OTP: a supervisor starts with a fresh record),
                # and a restarted child resumes from this run's checkpoints, never an older run's.
                self._restart_times, self._resume, self._run_mark = [], resume, new_checkpoint_id()
                failed = await spawn_all(self._children, self._spawn_or_replace)
                if failed:
                    return await self._give_up_at_start(failed)
                # An interrupt that came while the children were spawning already stops this run.
                self._move(SupervisorPhase.STOPPING if mgr.is_interrupted() else SupervisorPhase.RUNNING)
                for name, child in self._children.items():
                    self._start(child, task, resume.get(name))
                results, cause = await self._supervise(task)
            finally:
                self._bounds.disarm()  # the children are done (or never started): nothing left to bound
                await self._system.run_ended()
            return await self._finish(results, cause)
        finally:
            # As an agent's manager does at the end of its run (registered through the proxy).
            self._manager_.run_shutdown_callbacks()
            self._move(SupervisorPhase.FINISHED)

    async def _finish(self, results: dict[str, dict[str, Any]], cause: str | None) -> dict[str, Any]:
        temporary = {n for n, c in self._children.items() if c.spec.restart is RestartPolicy.TEMPORARY}
        status = CheckpointStatus(
            supervisor_status(results, temporary, interrupted=self._manager_.is_interrupted(), gave_up=cause is not None)
        )
        reason = self._manager_.reason
        manifest = Checkpoint.new(
            self._name,
            0,
            status,
            {"children": {name: r.get("checkpoint_id") for name, r in results.items()}},
            interrupt_reason=reason,
            metadata={"kind": "manifest", "restarts": self._restarts},
        )
        checkpoint_id = await StoreSink(self._store, self._storage_path).save(manifest, durable=True)
        self._manifest_id = checkpoint_id
        if self._manager_.is_interrupted():
            self._handled_generation = self._manager_.generation
        cycles = sum(int(r.get("cycles") or 0) for r in results.values())
        logger.info("%s", end_line(self._name, status.value, cycles, reason, None, checkpoint_id, cause))
        return supervisor_result(
            self._name,
            status.value,
            children=results,
            checkpoint_id=checkpoint_id,
            interrupt_reason=reason,
            restarts=self._restarts,
            error=cause,
        )
