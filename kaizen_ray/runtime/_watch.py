"""Watching one agent's run: its result, or its kill at the deadline, never a bare ActorDiedError.

Two-phase stop, enforced from outside the actor: the agent is asked to stop
(GRACEFUL, escalated in the actor; then IMMEDIATE); when the actor says its
kill deadline has passed with the run still going, the watcher kills it with
``ray.kill(no_restart=True)`` and builds the result from the last flushed
checkpoint. An actor that dies on its own (a crash, a lost node) gives the same
``"killed"`` result, with the cause in ``error``.

A supervisor's run is watched the same way (:func:`watch_supervisor`): if the
supervisor's own actor dies, its children die with it (it owns them), and the
result reports each child's last durable checkpoint and the last manifest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray.exceptions import RayActorError

from kaizen_ray.core.checkpoint import CheckpointError
from kaizen_ray.core.interrupts import InterruptReason
from kaizen_ray.core.results import RunStatus, run_result, supervisor_result
from kaizen_ray.runtime._actors import death_cause, gone
from kaizen_ray.runtime._shipping import as_pickled
from kaizen_ray.runtime.agent_actor import load_from_store

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = [
    "killed_result", "supervisor_killed_result", "watch_run", "watch_supervisor", "watch_supervisor_task", "watch_task",
]  # fmt: skip


async def watch_run(actor: Any, agent: str, storage_path: str, store: Any, task: Any, resume: str | None) -> dict[str, Any]:
    """Run ``actor.run(task, resume)`` to its result dict, killing the actor past its kill deadline."""
    run_fut = asyncio.wrap_future(actor.run.remote(task, resume).future())
    kill_fut = asyncio.wrap_future(actor.wait_kill_deadline.remote().future())
    done, _ = await asyncio.wait({run_fut, kill_fut}, return_when=asyncio.FIRST_COMPLETED)
    snapshot = None
    if kill_fut in done:
        try:
            snapshot = kill_fut.result()
        except RayActorError:
            snapshot = None
    if snapshot is not None and not run_fut.done():
        logger.warning("killing %s: its IMMEDIATE stop passed immediate_shutdown_timeout", agent)
        ray.kill(actor, no_restart=True)
        try:
            await run_fut  # fails with the actor's death, or won the race after all
        except RayActorError:
            return await killed_result(agent, storage_path, store, snapshot.get("interrupt_reason"), None)
        except Exception:  # noqa: BLE001 - the run failed as it was killed; the kill is the story
            return await killed_result(agent, storage_path, store, snapshot.get("interrupt_reason"), None)
        return run_fut.result()
    try:
        return await run_fut
    except RayActorError as exc:
        logger.warning("the actor of %s died during its run: %s", agent, death_cause(exc))
        return await killed_result(agent, storage_path, store, None, exc)


async def killed_result(
    agent: str, storage_path: str, store: Any, reason: InterruptReason | None, error: BaseException | None
) -> dict[str, Any]:
    """The result of a run whose actor is gone: the last flushed checkpoint's state.

    >>> await killed_result("a1", "/ck", store, None, None)  # doctest: +SKIP
    {'status': 'killed', 'checkpoint_id': 'ck-...', 'state': {...}, 'cycles': 7, ...}
    """
    checkpoint = await _latest(store, storage_path, agent)
    if checkpoint is None:
        return run_result(agent, RunStatus.KILLED, interrupt_reason=reason, mode="immediate" if reason else None, error=error)
    return run_result(
        agent,
        RunStatus.KILLED,
        state=checkpoint.state,
        cycles=checkpoint.cycle,
        cost=float(checkpoint.metadata.get("cost", 0.0)),
        checkpoint_id=checkpoint.id,
        interrupt_reason=reason,
        # A kill past the deadline ends an IMMEDIATE stop, whatever mode came first.
        mode="immediate" if reason is not None else None,
        error=error,
    )


async def _latest(store: Any, storage_path: str, agent: str) -> Any:
    """The newest good checkpoint of ``agent`` once the store has flushed, or None."""

    try:
        await store.flush.remote(storage_path)
        return await load_from_store(store, storage_path, agent, "latest")
    except CheckpointError as exc:
        logger.warning("no checkpoint to report for %s: %s", agent, exc)
        return None


@ray.remote(num_cpus=0, max_retries=0)
def watch_task(actor: Any, agent: str, storage_path: str, store: Any, task: Any, resume: str | None) -> dict[str, Any]:
    """``handle.start()``'s ObjectRef: a zero-CPU task that watches one run."""
    return as_pickled(asyncio.run(watch_run(actor, agent, storage_path, store, task, resume)))


async def watch_supervisor(actor: Any, name: str, storage_path: str, store: Any, task: Any, resume: str | None) -> dict[str, Any]:
    """Run a supervisor's ``run(task, resume)`` to its result dict, or to a ``"killed"`` one if its actor dies."""
    try:
        # Asked before the run: once the actor is dead, nobody can say who its children were.
        layout = await actor.children_layout.remote()
    except RayActorError as exc:
        return await supervisor_killed_result(name, storage_path, store, {}, exc)
    try:
        return await actor.run.remote(task, resume)
    except RayActorError as exc:
        logger.warning("the actor of supervisor %s died during its run: %s", name, death_cause(exc))
        return await supervisor_killed_result(name, storage_path, store, layout, exc)


async def supervisor_killed_result(
    name: str, storage_path: str, store: Any, layout: dict[str, dict[str, Any]], error: BaseException
) -> dict[str, Any]:
    """The result of a supervisor whose actor died: its last manifest and each child's last durable checkpoint.

    ``layout`` maps each child's short name to its actor name (``agent``),
    ``namespace``, ``storage_path`` and ``kind``, as the supervisor's
    ``children_layout()`` gave them; a child supervisor's entry holds its own
    children's under ``children``, and is reported the same way, down the tree.
    Ray kills the children with their owner, but not at once: each is made sure
    dead first, so that its latest checkpoint is its last.

    >>> await supervisor_killed_result("swarm", "/ck", store, layout, exc)  # doctest: +SKIP
    {'status': 'killed', 'checkpoint_id': 'ck-...', 'children': {'w1': {'status': 'killed', ...}}, ...}
    """
    await asyncio.gather(*(_ensure_dead(w["agent"], w.get("namespace")) for w in layout.values()))

    async def report(w: dict[str, Any]) -> dict[str, Any]:
        if w.get("kind") == "supervisor":  # it died with its parent, and its children with it
            return await supervisor_killed_result(w["agent"], w["storage_path"], store, w["children"], error)
        # Its children died with it: none of them saw an interrupt or raised anything of its own.
        return await killed_result(w["agent"], w["storage_path"], store, None, None)

    results = await asyncio.gather(*(report(w) for w in layout.values()))
    children = dict(zip(layout, results, strict=True))
    manifest = await _latest(store, storage_path, name)
    return supervisor_result(
        name,
        RunStatus.KILLED,
        children=children,
        checkpoint_id=manifest.id if manifest is not None else None,
        error=gone(name, error, "its supervisor actor died during its run"),
    )


async def _ensure_dead(agent: str, namespace: str | None, timeout_s: float = 30.0) -> None:
    """Kill ``agent``'s actor if it is still there, and return once its name is released (it is dead)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            actor = ray.get_actor(agent, namespace=namespace)
        except ValueError:
            return
        ray.kill(actor, no_restart=True)
        if time.monotonic() > deadline:
            logger.warning("%s still there %ss after its supervisor died; reporting its latest checkpoint", agent, timeout_s)
            return
        await asyncio.sleep(0.05)  # Ray has no event for an actor's death: its name is released with it


@ray.remote(num_cpus=0, max_retries=0)
def watch_supervisor_task(actor: Any, name: str, storage_path: str, store: Any, task: Any, resume: str | None) -> dict[str, Any]:
    """``SupervisorHandle.start()``'s ObjectRef: a zero-CPU task that watches one supervisor run."""
    return asyncio.run(watch_supervisor(actor, name, storage_path, store, task, resume))
