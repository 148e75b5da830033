"""A supervisor's children: where each keeps its checkpoints, its actor's options, its spawn and its run.

A child is an agent actor or, in a supervision tree, another supervisor
actor; both are named ``<parent>/<child>`` and take the Ray options of their
:class:`ChildSpec` under that name. The supervisor waits (at most the spec's
``spawn_timeout_s``) for each child's actor to be up: a request no node can
meet (``resources={"gpu-x": 1}`` on a cluster without one) ends as a
``TimeoutError`` naming the child and its options, never as a hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from ray.exceptions import RayActorError

from kaizen_ray.core.checkpoint import CheckpointNotFoundError, FileCheckpointStorage
from kaizen_ray.core.config import ChildSpec
from kaizen_ray.core.errors import ConfigError
from kaizen_ray.core.interrupts import InterruptManager, coerce_source_mode
from kaizen_ray.core.supervision import manifest_storage_path
from kaizen_ray.runtime._actors import death_cause, gone
from kaizen_ray.runtime._watch import watch_run, watch_supervisor
from kaizen_ray.runtime._store_sink import load_from_store
from kaizen_ray.runtime.agent_actor import AgentActor

logger = logging.getLogger("kaizen_ray.supervisor")

__all__ = ["Child", "check_actor_options", "exit_cause", "resolve_storage", "resume_points", "spawn_all", "tree_layout"]

_NAME_RELEASE_S = 10.0  # how long a restart waits for a dead child's actor name to be released


def resolve_storage(specs: list[ChildSpec]) -> list[ChildSpec]:
    """``specs`` with every ``config.storage_path`` resolved and proven writable, down the tree.

    Resolved once, by the caller of ``Supervisor.spawn``: every actor of the
    tree then reads the same folders, whatever its own environment says. A
    child supervisor's path is where its manifest goes (its own; else beside
    its children when they share one; else the default).

    >>> [s.config.storage_path for s in resolve_storage([ChildSpec(Worker, name="w")])]  # doctest: +SKIP
    [PosixPath('/home/me/.kaizen_ray/checkpoints')]
    """
    resolved = []
    for spec in specs:
        update: dict[str, Any] = {}
        if spec.kind == "supervisor":
            children = resolve_storage(list(spec.children or []))
            own = None if spec.config.storage_path is None else str(spec.config.storage_path)
            where = manifest_storage_path(own, [str(c.config.storage_path) for c in children])
            update["children"] = children
        else:
            where = spec.config.storage_path
        path = FileCheckpointStorage(where).ensure_writable()
        update["config"] = spec.config.model_copy(update={"storage_path": path})
        resolved.append(spec.model_copy(update=update))
    return resolved


def check_actor_options(owner: str, specs: list[ChildSpec], supervisor_actor: Any) -> None:
    """Refuse, before anything starts, Ray actor options that Ray itself refuses (ConfigError naming the child).

    >>> check_actor_options("root", [ChildSpec(Worker, name="w", actor_options={"num_gpu": 1})], SupervisorActor)  # doctest: +SKIP
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: actor_options of child 'root/w' must be ... got {'num_gpu': 1}
    """
    for spec in specs:
        full_name = f"{owner}/{spec.name}"
        actor_cls = supervisor_actor if spec.kind == "supervisor" else AgentActor
        try:
            actor_cls.options(**spec.actor_options, name=full_name)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"actor_options of child {full_name!r}", spec.actor_options, f"Ray actor options ({exc})") from exc
        if spec.children:
            check_actor_options(full_name, spec.children, supervisor_actor)


async def spawn_all(children: dict[str, Child], spawn: Callable[[Child], Awaitable[None]]) -> dict[str, Exception]:
    """``spawn`` every child at once (a child waiting for resources holds up none of the others);
    those that could not start, with why.
    """
    outcomes = await asyncio.gather(*(spawn(c) for c in children.values()), return_exceptions=True)
    failed: dict[str, Exception] = {}
    for name, outcome in zip(children, outcomes, strict=True):
        if isinstance(outcome, Exception):
            failed[name] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome  # a cancellation is the supervisor's, not a child's failure
    return failed


async def resume_points(
    store: Any, storage_path: str, name: str, children: list[str], resume: str | None
) -> tuple[dict[str, str | None], int | None]:
    """Where each child of supervisor ``name`` resumes from, and the restart count its manifest kept (if any).

    A manifest id: each child from its entry there. ``"latest"`` (the restart of
    a supervisor whose actor died, its children with it, each past its last
    manifest): each child from its own newest checkpoint.

    >>> await resume_points(store, "/ck", "root/team", ["w1"], "latest")  # doctest: +SKIP
    ({'w1': 'latest'}, 0)
    """
    if resume is None:
        return {}, None
    try:
        manifest = await load_from_store(store, storage_path, name, resume)
    except CheckpointNotFoundError:
        if resume != "latest":
            raise
        return dict.fromkeys(children, "latest"), None  # died before its first manifest
    restarts = int(manifest.metadata.get("restarts", 0))
    if resume == "latest":
        return dict.fromkeys(children, "latest"), restarts
    return dict(manifest.state.get("children", {})), restarts


def exit_cause(error: Any) -> str:
    """`` (why)`` for a child's error in a give-up message: a dead actor's cause, else the exception; else ``""``."""
    if isinstance(error, RayActorError):
        return f" ({death_cause(error)})"
    return f" ({type(error).__name__}: {error})" if error is not None else ""


def tree_layout(children: dict[str, Child], namespace: str | None) -> dict[str, dict[str, Any]]:
    """Each child's actor name (``agent``), ``namespace``, ``storage_path`` and ``kind``, a child supervisor's
    own children under ``children``: what a watcher needs to report the tree once its actors are gone.
    """
    layout: dict[str, dict[str, Any]] = {}
    for name, child in children.items():
        entry: dict[str, Any] = {
            "agent": child.full_name, "namespace": namespace, "storage_path": child.storage_path, "kind": child.spec.kind,
        }  # fmt: skip
        if child.spec.kind == "supervisor":
            grandchildren = {
                s.name: Child(s, f"{child.full_name}/{s.name}", str(s.config.storage_path)) for s in child.spec.children or []
            }
            entry["children"] = tree_layout(grandchildren, namespace)
        layout[name] = entry
    return layout


class Child:
    """A supervised child: its spec, its current actor, and its current run.

    >>> child = Child(ChildSpec(Worker, name="w1"), "swarm/w1", "/ck")  # doctest: +SKIP
    >>> await child.spawn(namespace, manager, scopes, SupervisorActor); child.start(store, task, None)  # doctest: +SKIP
    """

    def __init__(self, spec: ChildSpec, full_name: str, storage_path: str) -> None:
        self.spec = spec
        self.full_name = full_name
        self.storage_path = storage_path
        self.actor: Any = None
        self.task: asyncio.Task[dict[str, Any]] | None = None
        # Set (with the stop's reason) by its supervisor to kill the current run's actor (see watch_run).
        self.kill: asyncio.Future[Any] | None = None
        self._captured: list[Any] | None = None  # the sends made while joining a manager

    def request_interrupt_nowait(self, source: Any, mode: Any, reason: str = "", metadata: dict[str, Any] | None = None) -> Any:
        """Send an interrupt to the child's actor without waiting (how the manager forwards); its ObjectRef."""
        source, mode = coerce_source_mode(source, mode)
        ref = self.actor.request_interrupt.remote(source.value, mode.value, reason, metadata)
        captured = self._captured
        if captured is not None:
            captured.append(ref)
        return ref

    def request_interrupt(self, source: Any, mode: Any, reason: str = "", metadata: dict[str, Any] | None = None) -> bool:
        """Interrupt the child; True if its manager accepted. Blocks: never call it on the actor's event loop."""
        ref = self.request_interrupt_nowait(source, mode, reason, metadata)
        try:
            return bool(ray.get(ref))
        except RayActorError as exc:
            raise gone(self.full_name, exc) from exc

    async def join(self, manager: InterruptManager) -> None:
        """Become ``manager``'s child, and return once the episode it replays has reached the actor.

        Level-triggered: the manager replays its current episode to a new child
        (once). Control and run calls are not ordered across concurrency groups,
        so that one send is awaited before the child's run may start.
        """
        self._captured = []
        try:
            manager.add_child(self)
        finally:
            sent, self._captured = self._captured, None
        for ref in sent:
            await ref

    def _create(self, options: dict[str, Any], namespace: str | None, supervisor_actor: Any) -> Any:
        spec = self.spec
        if spec.kind == "supervisor":
            return supervisor_actor.options(**options).remote(
                self.full_name, spec.children, spec.config, self.storage_path, namespace
            )
        return AgentActor.options(**options).remote(
            spec.agent_cls, self.full_name, spec.config, self.storage_path, namespace, spec.agent_kwargs
        )

    async def spawn(self, namespace: str | None, manager: InterruptManager, scopes: list[Any], supervisor_actor: Any) -> None:
        """Create the child's actor, wait until it is up, hand it ``scopes`` and join ``manager``.

        TimeoutError (naming the child and its actor options) if it is not up
        within ``spawn_timeout_s``; its pending actor is removed.
        """
        # The user's options first: the name and namespace are the supervisor's to set.
        options: dict[str, Any] = {**self.spec.actor_options, "name": self.full_name}
        if namespace is not None:
            options["namespace"] = namespace
        deadline = time.monotonic() + _NAME_RELEASE_S
        while True:
            try:
                self.actor = self._create(options, namespace, supervisor_actor)
                break
            except ValueError as exc:
                # The dead actor's name is released a little after its death; anything else is not about the name.
                if "already taken" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        try:
            await self._wait_up()
            for scope in scopes:
                await self.actor.use_budget_scope.remote(scope)
            await self.join(manager)
        except RayActorError as exc:
            # Its run will fail the same way, and its watcher reports it as a crash (restarted per policy).
            logger.warning("child %s died as it started: %s", self.full_name, death_cause(exc))

    async def _wait_up(self) -> None:
        timeout = self.spec.spawn_timeout_s
        try:
            await asyncio.wait_for(asyncio.wrap_future(self.actor.__ray_ready__.remote().future()), timeout)
        except TimeoutError as exc:
            ray.kill(self.actor, no_restart=True)  # not left pending, to start whenever resources free up
            raise TimeoutError(
                f"child {self.full_name!r} was not up within spawn_timeout_s={timeout}s with actor_options="
                f"{self.spec.actor_options!r}: does any node have the resources it asks for? Its pending actor was removed"
            ) from exc

    def start(self, store: Any, task: Any, resume: str | None, progress: bool = False) -> None:
        """Start the child's run on its spec's task (else ``task``), watched to its result dict (with a progress bar if asked)."""
        spec_task = self.spec.task if self.spec.task is not None else task
        self.kill = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._watch(store, spec_task, resume, progress))

    async def _watch(self, store: Any, task: Any, resume: str | None, progress: bool) -> dict[str, Any]:
        if self.spec.kind == "supervisor":
            # Its "latest" resumes each of its children from their own latest checkpoint.
            return await watch_supervisor(self.actor, self.full_name, self.storage_path, store, task, resume, progress, self.kill)
        if resume == "latest" and not await store.candidates.remote(self.storage_path, self.full_name):
            resume = None  # died before its first checkpoint: it starts afresh
        return await watch_run(self.actor, self.full_name, self.storage_path, store, task, resume, progress, self.kill)
