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

Where the watching runs: in a supervisor's event loop for its children
(:func:`watch_run`, :func:`watch_supervisor`); for ``handle.start()``, in a
zero-CPU task beside the caller, whose ObjectRef is the one returned
(:func:`watch_task`); for ``handle.run()``, in the blocked driver itself
(:func:`watch_blocking`, which the task runs too).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from kaizen_ray.core.checkpoint import CheckpointError
from kaizen_ray.core.interrupts import InterruptReason
from kaizen_ray.core.results import RunStatus, end_line, run_result, supervisor_result
from kaizen_ray.runtime._actors import death_cause, gone
from kaizen_ray.runtime._store_sink import load_from_store

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = [
    "PickledResult", "killed_result", "opened", "supervisor_killed_result", "watch_blocking", "watch_run",
    "watch_supervisor", "watch_supervisor_blocking", "watch_supervisor_task", "watch_task",
]  # fmt: skip


async def watch_run(
    actor: Any, agent: str, storage_path: str, store: Any, task: Any, resume: str | None, progress: bool = False,
    kill: asyncio.Future[InterruptReason | None] | None = None,
) -> dict[str, Any]:
    """Run ``actor.run(task, resume, progress)`` to its result dict, killing the actor past its kill deadline.

    ``kill``: set by a supervisor whose own stop passed its bound (see
    ``kaizen_ray.core._stop_bounds``), with the stop's reason: the actor is
    killed then, as at its own deadline, and reported ``"killed"`` with that reason.
    """
    run_fut = asyncio.wrap_future(actor.run.remote(task, resume, progress).future())
    kill_fut = asyncio.wrap_future(actor.wait_kill_deadline.remote().future())
    waits = {run_fut, kill_fut} if kill is None else {run_fut, kill_fut, kill}
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    snapshot, why = None, "its IMMEDIATE stop passed immediate_shutdown_timeout"
    if kill_fut in done:
        try:
            snapshot = kill_fut.result()
        except RayActorError:
            snapshot = None
    elif kill is not None and kill in done:
        snapshot, why = {"interrupt_reason": kill.result()}, "its supervisor's IMMEDIATE stop passed the supervisor's bound"
    if snapshot is not None and not run_fut.done():
        logger.warning("killing %s: %s", agent, why)
        ray.kill(actor, no_restart=True)
        try:
            data = await run_fut  # won the race after all
        except Exception:  # noqa: BLE001 - died as it was killed, or failed as it was: the kill is the story
            return await killed_result(agent, storage_path, store, snapshot.get("interrupt_reason"), None)
        return pickle.loads(data)
    try:
        return pickle.loads(await run_fut)
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
        result = run_result(agent, RunStatus.KILLED, interrupt_reason=reason, mode="immediate" if reason else None, error=error)
    else:
        result = _from_checkpoint(agent, checkpoint, reason, error)
    # The run's own end line never came: this is the killed agent's one line (with its stop's provenance).
    logger.info("%s", end_line(agent, RunStatus.KILLED, result["cycles"], reason, result["mode"], result["checkpoint_id"], error))
    return result


def _from_checkpoint(agent: str, checkpoint: Any, reason: InterruptReason | None, error: BaseException | None) -> dict[str, Any]:
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
        await store.flush.remote(storage_path, agent)  # its own files, not behind the others'
        return await load_from_store(store, storage_path, agent, "latest")
    except CheckpointError as exc:
        logger.warning("no checkpoint to report for %s: %s", agent, exc)
        return None


def _wait_any(refs: list[Any]) -> None:
    ray.wait(refs, num_returns=1, fetch_local=False)


def _run_coroutine(coro: Any) -> Any:
    """``asyncio.run(coro)``, in a thread of its own when this one already runs a loop (a Jupyter kernel's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaizen-killed-result") as pool:
        return pool.submit(asyncio.run, coro).result()


def watch_blocking(
    actor: Any, agent: str, storage_path: str, store: Callable[[], Any], task: Any, resume: str | None, progress: bool = False,
    wait_any: Callable[[list[Any]], None] = _wait_any,
) -> bytes | dict[str, Any]:
    """:func:`watch_run`, blocking: the run's pickled result, or the ``"killed"`` result dict.

    ``wait_any(refs)`` returns once one of ``refs`` is ready (the driver's
    turns Ctrl+C into interrupts meanwhile). Run in a watcher task by
    ``handle.start()`` and in the driver itself by ``handle.run()``, which
    blocks anyway: no task to lease, and the result comes straight from the
    agent, not through a watcher's copy. ``store()`` gives the checkpoint
    store, asked for only when a ``"killed"`` result must be built.
    """
    run_ref = actor.run.remote(task, resume, progress)
    kill_ref = actor.wait_kill_deadline.remote()
    wait_any([run_ref, kill_ref])
    snapshot = None
    try:
        snapshot = ray.get(kill_ref, timeout=0)
    except (RayActorError, GetTimeoutError):
        pass  # still waiting (the run ended first), or the actor died: the run's ref says which
    if snapshot is not None and not ray.wait([run_ref], timeout=0)[0]:
        logger.warning("killing %s: its IMMEDIATE stop passed immediate_shutdown_timeout", agent)
        ray.kill(actor, no_restart=True)
        try:
            return ray.get(run_ref)  # won the race after all
        except Exception:  # noqa: BLE001 - died as it was killed, or failed as it was: the kill is the story
            return _run_coroutine(killed_result(agent, storage_path, store(), snapshot.get("interrupt_reason"), None))
    try:
        return ray.get(run_ref)
    except RayActorError as exc:
        logger.warning("the actor of %s died during its run: %s", agent, death_cause(exc))
        return _run_coroutine(killed_result(agent, storage_path, store(), None, exc))


def watch_supervisor_blocking(
    actor: Any, name: str, storage_path: str, store: Callable[[], Any], task: Any, resume: str | None, progress: bool = False,
    wait_any: Callable[[list[Any]], None] = _wait_any,
) -> bytes | dict[str, Any]:
    """:func:`watch_supervisor`, blocking (see :func:`watch_blocking` for where it runs and ``wait_any``)."""
    try:
        layout = ray.get(actor.children_layout.remote())
    except RayActorError as exc:
        return _run_coroutine(supervisor_killed_result(name, storage_path, store(), {}, exc))
    run_ref = actor.run.remote(task, resume, progress)
    wait_any([run_ref])
    try:
        return ray.get(run_ref)
    except RayActorError as exc:
        logger.warning("the actor of supervisor %s died during its run: %s", name, death_cause(exc))
        return _run_coroutine(supervisor_killed_result(name, storage_path, store(), layout, exc))


def opened(outcome: bytes | dict[str, Any]) -> dict[str, Any]:
    """A blocking watcher's outcome as the result dict (in the driver that watched)."""
    return pickle.loads(outcome) if isinstance(outcome, bytes) else outcome


def _forwarded(outcome: bytes | dict[str, Any]) -> PickledResult | dict[str, Any]:
    """A blocking watcher's outcome as a watcher task returns it: a pickled result forwarded unopened."""
    return PickledResult(outcome) if isinstance(outcome, bytes) else outcome


@ray.remote(num_cpus=0, max_retries=0)
def watch_task(
    actor: Any, agent: str, storage_path: str, store: Any, task: Any, resume: str | None, progress: bool = False
) -> PickledResult | dict[str, Any]:
    """``handle.start()``'s ObjectRef: a zero-CPU task that watches one run (its caller's ray.get gets the dict).

    :func:`watch_blocking` (the result is on the stop's path to the caller,
    and ``ray.wait`` hands it over without an event loop's thread hops); the
    pickled result is forwarded unopened.
    """
    return _forwarded(watch_blocking(actor, agent, storage_path, lambda: store, task, resume, progress))


class PickledResult:
    """A run's pickled result, forwarded by a watcher without opening it: unpickled by whoever gets it.

    The agent or supervisor actor pickles its result once; the watcher's
    return then costs Ray a copy of those bytes, not a second unpickle and pickle.

    >>> import pickle
    >>> pickle.loads(pickle.dumps(PickledResult(pickle.dumps({"status": "completed"}))))
    {'status': 'completed'}
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (pickle.loads, (self.data,))


async def watch_supervisor(
    actor: Any, name: str, storage_path: str, store: Any, task: Any, resume: str | None, progress: bool = False,
    kill: asyncio.Future[InterruptReason | None] | None = None,
) -> dict[str, Any]:
    """Run a supervisor's ``run(task, resume)`` to its result dict, or to a ``"killed"`` one if its actor dies.

    ``kill``: as for :func:`watch_run` (the parent's bound passed): the actor is
    killed, its tree with it, and reported ``"killed"`` with the parent's reason.
    """
    try:
        # Asked before the run: once the actor is dead, nobody can say who its children were.
        layout = await actor.children_layout.remote()
    except RayActorError as exc:
        return await supervisor_killed_result(name, storage_path, store, {}, exc)
    run_fut = asyncio.wrap_future(actor.run.remote(task, resume, progress).future())
    if kill is not None:
        await asyncio.wait({run_fut, kill}, return_when=asyncio.FIRST_COMPLETED)
        if kill.done() and not run_fut.done():
            logger.warning("killing supervisor %s: its parent's IMMEDIATE stop passed the parent's bound", name)
            ray.kill(actor, no_restart=True)
            try:
                return pickle.loads(await run_fut)  # won the race after all
            except Exception:  # noqa: BLE001 - died as it was killed, or failed as it was: the kill is the story
                return await supervisor_killed_result(name, storage_path, store, layout, None, kill.result())
    try:
        return pickle.loads(await run_fut)
    except RayActorError as exc:
        logger.warning("the actor of supervisor %s died during its run: %s", name, death_cause(exc))
        return await supervisor_killed_result(name, storage_path, store, layout, exc)


async def supervisor_killed_result(
    name: str, storage_path: str, store: Any, layout: dict[str, dict[str, Any]], error: BaseException | None,
    reason: InterruptReason | None = None,
) -> dict[str, Any]:
    """The result of a supervisor whose actor died: its last manifest and each child's last durable checkpoint.

    ``error``: why it died (None: killed on purpose, by its parent's bound, for ``reason``).

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
            return await supervisor_killed_result(w["agent"], w["storage_path"], store, w["children"], error, reason)
        # Its children died with it: none raised anything of its own, and only a kill for a stop had a reason.
        return await killed_result(w["agent"], w["storage_path"], store, reason, None)

    results = await asyncio.gather(*(report(w) for w in layout.values()))
    children = dict(zip(layout, results, strict=True))
    manifest = await _latest(store, storage_path, name)
    return supervisor_result(
        name,
        RunStatus.KILLED,
        children=children,
        checkpoint_id=manifest.id if manifest is not None else None,
        interrupt_reason=reason,
        error=gone(name, error, "its supervisor actor died during its run") if error is not None else None,
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
def watch_supervisor_task(
    actor: Any, name: str, storage_path: str, store: Any, task: Any, resume: str | None, progress: bool = False
) -> PickledResult | dict[str, Any]:
    """``SupervisorHandle.start()``'s ObjectRef: a zero-CPU task that watches one supervisor run.

    :func:`watch_supervisor_blocking`, its pickled result forwarded unopened.
    """
    return _forwarded(watch_supervisor_blocking(actor, name, storage_path, lambda: store, task, resume, progress))
