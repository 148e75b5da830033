"""The supervisor: an actor that owns its children's actors, fans interrupts out, restarts.

* Children are agent actors named ``<supervisor>/<child>``: that logical name
  is their ``ctx.agent_name`` and their checkpoints' ``agent``, unchanged
  across restarts.
* An interrupt on the supervisor is accepted by its manager and forwarded to
  every child at once (each forward is a fire-and-forget actor call), and on
  through nested supervisors. Level-triggered: a child spawned or restarted
  after the supervisor was interrupted receives the interrupt before its run
  starts, so it stops at its first boundary.
* A child that crashes or fails is restarted from its latest checkpoint per
  its restart policy and the strategy, while fewer than ``max_restarts``
  restarts happened within ``restart_window_s``; one more and the supervisor
  stops the other children gracefully and reports ``"failed"``.
* The supervisor's checkpoint is a manifest of its children's checkpoints;
  resuming it resumes every child from its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from kaizen_ray.core.checkpoint import Checkpoint, CheckpointStatus
from kaizen_ray.core.config import ChildSpec, RestartPolicy, SupervisorConfig
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource
from kaizen_ray.core.supervision import ChildExit, children_to_restart, classify_exit, restart_allowed, should_restart
from kaizen_ray.runtime._system import SystemHandlers
from kaizen_ray.runtime._watch import watch_run
from kaizen_ray.runtime.agent_actor import AgentActor, ControlMethods, StoreSink, load_from_store
from kaizen_ray.runtime.handles import ActorHandleBase, actor_options, create_named

logger = logging.getLogger("kaizen_ray.supervisor")

__all__ = ["Supervisor", "SupervisorActor", "SupervisorHandle"]

_NAME_RELEASE_S = 10.0  # how long a restart waits for a dead child's actor name to be released


class _Child:
    """A supervised child: its spec, its current actor, and its current run."""

    def __init__(self, spec: ChildSpec, full_name: str, storage_path: str) -> None:
        self.spec = spec
        self.full_name = full_name
        self.storage_path = storage_path
        self.actor: Any = None
        self.task: asyncio.Task[dict[str, Any]] | None = None

    def request_interrupt_nowait(self, source: Any, mode: Any, reason: str = "", metadata: dict[str, Any] | None = None) -> Any:
        return self.actor.request_interrupt.remote(InterruptSource(source).value, InterruptMode(mode).value, reason, metadata)

    # The manager's add_child wants this name; forwarding uses the nowait one above.
    request_interrupt = request_interrupt_nowait


@ray.remote(concurrency_groups={"control": 16}, max_restarts=0)
class SupervisorActor(ControlMethods):
    """The Ray actor of a supervisor. Made by ``kr.Supervisor.spawn(...)``."""

    _kind = "supervisor"

    def __init__(
        self,
        name: str,
        specs: list[ChildSpec],
        config: SupervisorConfig,
        storage_path: str,
        child_storage: dict[str, str],
        namespace: str | None,
    ) -> None:
        from kaizen_ray.runtime.checkpoints import get_or_create_store

        self._name = name
        self._storage_path = storage_path
        self._config = config
        self._namespace = namespace
        self._store = get_or_create_store(namespace)
        self._system = SystemHandlers(name, storage_path, namespace)
        self._manager_ = InterruptManager(name=name)
        self._children = {s.name: _Child(s, f"{name}/{s.name}", child_storage[s.name]) for s in specs}
        self._restart_times: list[float] = []
        self._restarts = 0
        self._handled_generation: int | None = None
        self._phase = "idle"

    def __repr__(self) -> str:
        # getattr: Ray shows the repr even when __init__ failed; the real error must not be buried.
        name, phase = getattr(self, "_name", "?"), getattr(self, "_phase", "unborn")
        return f"SupervisorActor({name}, {phase}, children={len(getattr(self, '_children', {}))}, restarts={getattr(self, '_restarts', 0)})"

    def _manager(self) -> InterruptManager:
        return self._manager_

    async def _status(self) -> dict[str, Any]:
        mgr = self._manager_
        return {
            "budget": await self._system.budget_snapshot(),
            "agent": self._name,
            "kind": "supervisor",
            "phase": self._phase,
            "children": {name: c.full_name for name, c in self._children.items()},
            "restarts": self._restarts,
            "interrupted": mgr.is_interrupted(),
            "mode": mgr.mode.value if mgr.mode else None,
            "interrupt_reason": mgr.reason,
        }

    async def _use_scope(self, scope: Any) -> None:
        # One scope for the whole swarm: every child charges it, spawned or restarted.
        for child in self._children.values():
            if child.actor is not None:
                await child.actor.use_budget_scope.remote(scope)

    async def _drop_scope(self, scope: Any) -> None:
        logger.info("supervisor %s: budget scope removed; running children keep charging it until restarted", self._name)

    async def _wait_kill_deadline(self) -> None:
        # A supervisor is never killed on a deadline: its children are, and it
        # reports them. None tells a watcher to wait for the run itself.
        return None

    # -- children ----------------------------------------------------------------

    async def _spawn(self, child: _Child) -> None:
        options: dict[str, Any] = {"name": child.full_name}
        if self._namespace is not None:
            options["namespace"] = self._namespace
        deadline = time.monotonic() + _NAME_RELEASE_S
        while True:
            try:
                child.actor = AgentActor.options(**options).remote(
                    child.spec.agent_cls, child.full_name, child.spec.config, child.storage_path, self._namespace
                )
                break
            except ValueError:
                if time.monotonic() > deadline:  # the dead actor's name was never released
                    raise
                await asyncio.sleep(0.05)
        for scope in self._system.scopes.values():
            await child.actor.use_budget_scope.remote(scope)
        mgr = self._manager_
        mgr.add_child(child)  # level-triggered: replays this episode to the new child
        for accepted in mgr.episode:
            # Make sure the interrupt is in before the run starts (control and
            # run calls are not ordered across concurrency groups).
            await child.actor.request_interrupt.remote(
                accepted.source.value, accepted.mode.value, accepted.message, {**accepted.metadata, "propagated_from": self._name}
            )

    def _start(self, child: _Child, task: Any, resume: str | None) -> None:
        spec_task = child.spec.task if child.spec.task is not None else task
        child.task = asyncio.ensure_future(
            watch_run(child.actor, child.full_name, child.storage_path, self._store, spec_task, resume)
        )

    async def _stop_for_restart(self, child: _Child, dead: str) -> dict[str, Any]:
        child.actor.request_interrupt.remote(
            InterruptSource.PROGRAMMATIC.value,
            InterruptMode.IMMEDIATE.value,
            f"restarting with {dead} ({self._config.strategy.value})",
            {"supervisor": self._name, "cause": "restart"},
        )
        assert child.task is not None
        return await child.task

    async def _replace(self, child: _Child) -> None:
        self._manager_.remove_child(child)
        ray.kill(child.actor, no_restart=True)
        await self._spawn(child)

    # -- the run -----------------------------------------------------------------------

    async def run(self, task: Any, resume_from_checkpoint: str | None) -> dict[str, Any]:
        self._phase = "running"
        mgr = self._manager_
        if mgr.is_interrupted() and mgr.generation == self._handled_generation:
            mgr.reset()  # the last run stopped for it; a request made since would still count
        resume: dict[str, str] = {}
        if resume_from_checkpoint is not None:
            manifest = await load_from_store(self._store, self._storage_path, self._name, resume_from_checkpoint)
            resume = dict(manifest.state.get("children", {}))
            self._restarts = int(manifest.metadata.get("restarts", 0))
        for child in self._children.values():
            if child.actor is not None:  # the previous run's actor: a new run gets a fresh one
                await self._replace(child)
            else:
                await self._spawn(child)
        await self._system.run_started()
        try:
            for name, child in self._children.items():
                self._start(child, task, resume.get(name))
            results, cause = await self._supervise(task)
        finally:
            await self._system.run_ended()
        return await self._finish(results, cause)

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
                result = finished.result()
                exit_ = classify_exit(result)
                child = self._children[name]
                stopping = self._manager_.is_interrupted() or cause is not None
                if not should_restart(child.spec.restart, exit_, stopping=stopping):
                    results[name] = result
                    continue
                now = time.monotonic()
                if not restart_allowed(self._restart_times, now, self._config.max_restarts, self._config.restart_window_s):
                    error = result.get("error")
                    why = f" ({type(error).__name__}: {error})" if error is not None else ""
                    cause = (
                        f"child {name!r} {exit_.value}{why} and {self._config.max_restarts} restarts within "
                        f"{self._config.restart_window_s}s were already used: giving up"
                    )
                    logger.error("supervisor %s: %s", self._name, cause)
                    results[name] = result
                    self._manager_.request_interrupt(
                        InterruptSource.SYSTEM, InterruptMode.GRACEFUL, cause, {"handler": "escalation", "cause": "max_restarts"}
                    )
                    continue
                self._restart_times.append(now)
                self._restarts += 1
                group = children_to_restart(self._config.strategy, order, name, {n for n in running.values() if n != name})
                logger.warning("supervisor %s: child %s %s; restarting %s", self._name, name, exit_.value, group)
                for other in group:
                    if other != name:
                        await self._stop_for_restart(self._children[other], name)
                for member in group:
                    await self._replace(self._children[member])
                    self._start(self._children[member], task, "latest")

    async def _finish(self, results: dict[str, dict[str, Any]], cause: str | None) -> dict[str, Any]:
        exits = {classify_exit(r) for r in results.values()}
        # A temporary child is never restarted: its crash or failure is reported
        # in its own result, not held against the supervisor.
        held = {
            classify_exit(r)
            for name, r in results.items()
            if self._children[name].spec.restart is not RestartPolicy.TEMPORARY
        }
        if cause is not None or ChildExit.FAILED in held or ChildExit.CRASHED in held:
            status = CheckpointStatus.FAILED
        elif self._manager_.is_interrupted() or exits & {ChildExit.INTERRUPTED, ChildExit.KILLED}:
            status = CheckpointStatus.INTERRUPTED
        else:
            status = CheckpointStatus.COMPLETED
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
        if reason is not None:
            reason = reason.with_metadata(checkpoint_id=checkpoint_id)
        self._phase = "finished"
        if self._manager_.is_interrupted():
            self._handled_generation = self._manager_.generation
        return {
            "status": status.value,
            "children": results,
            "checkpoint_id": checkpoint_id,
            "interrupt_reason": reason,
            "restarts": self._restarts,
            "agent": self._name,
            "error": cause,
        }


class SupervisorHandle(ActorHandleBase):
    """A handle to a supervisor actor. Made by ``kr.Supervisor.spawn(...)``.

    >>> swarm = kr.Supervisor.spawn("swarm", children=[kr.ChildSpec(Worker, name="w1")])  # doctest: +SKIP
    >>> swarm.run("task")["children"]["w1"]["status"]                                        # doctest: +SKIP
    'completed'
    """

    kind = "supervisor"

    def start(self, task: Any = None, resume_from_checkpoint: str | None = None) -> Any:
        return self._actor.run.remote(task, resume_from_checkpoint)


class Supervisor:
    """Namespace of the supervisor API: ``kr.Supervisor.spawn(name, children=[...], ...)``.

    >>> swarm = kr.Supervisor.spawn(                                   # doctest: +SKIP
    ...     "swarm",
    ...     children=[kr.ChildSpec(Worker, name=f"w{i}") for i in range(3)],
    ...     strategy="one_for_one", max_restarts=3, restart_window_s=5.0,
    ... )
    """

    @staticmethod
    def spawn(
        name: str,
        children: list[ChildSpec],
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        restart_window_s: float = 5.0,
        *,
        config: SupervisorConfig | None = None,
        namespace: str | None = None,
        lifetime: str | None = None,
        **extra_options: Any,
    ) -> SupervisorHandle:
        """Start a supervisor actor over ``children`` (their actors start with the run)."""
        from kaizen_ray.core.checkpoint import FileCheckpointStorage, validate_agent_name

        name = validate_agent_name(name)
        if config is None:
            config = SupervisorConfig(strategy=strategy, max_restarts=max_restarts, restart_window_s=restart_window_s)
        specs = [c if isinstance(c, ChildSpec) else ChildSpec.model_validate(c) for c in children]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique under supervisor {name!r}, got {names}")
        if not specs:
            raise ValueError(f"supervisor {name!r} needs at least one ChildSpec, got {children!r}")
        storage_path = str(FileCheckpointStorage(config.storage_path).ensure_writable())
        child_storage = {s.name: str(FileCheckpointStorage(s.config.storage_path).ensure_writable()) for s in specs}
        namespace, options = actor_options("supervisor", name, namespace, lifetime, extra_options)
        actor = create_named(SupervisorActor, "supervisor", options, name, specs, config, storage_path, child_storage, namespace)
        handle = SupervisorHandle(actor, name, namespace, storage_path)
        handle._register()
        return handle
