"""Watching one agent's run: its result, or its kill at the deadline, never a bare ActorDiedError.

Two-phase stop, enforced from outside the actor: the agent is asked to stop
(GRACEFUL, escalated in the actor; then IMMEDIATE); when the actor says its
kill deadline has passed with the run still going, the watcher kills it with
``ray.kill(no_restart=True)`` and builds the result from the last flushed
checkpoint. An actor that dies on its own (a crash, a lost node) gives the same
``"killed"`` result, with the cause in ``error``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.exceptions import RayActorError

from kaizen_ray.core.checkpoint import CheckpointError
from kaizen_ray.core.interrupts import InterruptReason

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["watch_run", "killed_result", "watch_task"]


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
        logger.warning("the actor of %s died during its run: %s", agent, type(exc).__name__)
        return await killed_result(agent, storage_path, store, None, exc)


async def killed_result(
    agent: str, storage_path: str, store: Any, reason: InterruptReason | None, error: BaseException | None
) -> dict[str, Any]:
    """The result of a run whose actor is gone: the last flushed checkpoint's state."""
    from kaizen_ray.runtime.agent_actor import load_from_store

    checkpoint = None
    try:
        await store.flush.remote(storage_path)
        checkpoint = await load_from_store(store, storage_path, agent, "latest")
    except CheckpointError as exc:
        logger.warning("no checkpoint to report for killed agent %s: %s", agent, exc)
    if reason is not None and checkpoint is not None:
        reason = reason.with_metadata(checkpoint_id=checkpoint.id)
    return {
        "status": "killed",
        "output": None,
        "state": checkpoint.state if checkpoint else None,
        "cycles": checkpoint.cycle if checkpoint else 0,
        "cost": float(checkpoint.metadata.get("cost", 0.0)) if checkpoint else 0.0,
        "checkpoint_id": checkpoint.id if checkpoint else None,
        "interrupt_reason": reason,
        "mode": "immediate" if reason is not None else None,
        "agent": agent,
        "error": error,
    }


@ray.remote(num_cpus=0, max_retries=0)
def watch_task(actor: Any, agent: str, storage_path: str, store: Any, task: Any, resume: str | None) -> dict[str, Any]:
    """``handle.start()``'s ObjectRef: a zero-CPU task that watches one run."""
    return asyncio.run(watch_run(actor, agent, storage_path, store, task, resume))
