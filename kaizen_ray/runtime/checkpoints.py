"""The checkpoint store: one named actor per namespace that owns checkpoint objects.

Why an actor: whoever calls ``ray.put`` owns the object, and the object dies
with its owner. Agents send the encoded checkpoint here; the store puts it (so
it outlives the agent that made it) and flushes it to ``storage_path`` with
the core's atomic file format. A storage path is a folder or a URI
(``s3://...``): passed around as the str it is, resolved only by the core's
storage seam, never by ``Path(...)`` here.

Flushing: one writer task drains one queue, so files land in the order the
saves arrived. A durable save returns once its file is on disk; a periodic one
returns once it is in the object store (write-behind). A failed write-behind
flush is never dropped silently: the next save or flush for that storage path
raises it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from kaizen_ray.core.checkpoint import (
    CheckpointNotFoundError,
    FileCheckpointStorage,
    resolve_storage_path,
    validate_agent_name,
    validate_checkpoint_id,
)
from kaizen_ray.runtime._namespaces import system_namespace

logger = logging.getLogger("kaizen_ray.checkpoints")

__all__ = ["CheckpointStore", "CheckpointStoreLogic", "STORE_NAME", "get_or_create_store"]

STORE_NAME = "kaizen-checkpoints"


class CheckpointStoreLogic:
    """The store without Ray: object refs per agent, an ordered write-behind flush.

    ``put`` turns bytes into a handle (``ray.put`` in the actor; identity in tests).
    """

    def __init__(self, put: Callable[[bytes], Any] = lambda data: data, keep_per_agent: int = 4) -> None:
        self._put = put
        self._keep = keep_per_agent
        self._storages: dict[Path | str, FileCheckpointStorage] = {}
        # (storage root, agent) -> checkpoint id -> object ref, oldest first.
        self._refs: dict[tuple[Path | str, str], OrderedDict[str, Any]] = {}
        self._queue: asyncio.Queue[tuple[FileCheckpointStorage, str, str, bytes, asyncio.Future[None] | None]] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._failures: dict[Path | str, BaseException] = {}
        # Saved but not yet on disk: their refs are the only copy, never evicted.
        self._unflushed: set[tuple[Path | str, str]] = set()
        # (storage root, agent) -> the newest checkpoint id this store put on disk.
        self._last_flushed: dict[tuple[Path | str, str], str] = {}
        self.saved = 0
        self.flushed = 0

    def __repr__(self) -> str:
        agents = len(self._refs)
        return f"CheckpointStore(agents={agents}, saved={self.saved}, flushed={self.flushed})"

    def storage(self, storage_path: str) -> FileCheckpointStorage:
        """The storage of ``storage_path``, checked writable the first time it is seen."""
        # The storage's own key: an absolute Path for a folder, the normalised URI str for s3:// etc.
        root = resolve_storage_path(storage_path)
        found = self._storages.get(root)
        if found is None:
            found = FileCheckpointStorage(root)
            found.ensure_writable()
            self._storages[root] = found
        return found

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._queue = asyncio.Queue()
            self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def _write_forever(self) -> None:
        assert self._queue is not None
        while True:
            storage, agent, checkpoint_id, data, done = await self._queue.get()
            try:
                await asyncio.to_thread(storage.write_bytes, agent, checkpoint_id, data)
            except Exception as exc:  # noqa: BLE001 - handed to the waiter or kept for the next call
                logger.error("flushing checkpoint %s of %s to %r failed: %r", checkpoint_id, agent, storage, exc)
                # Never on disk, so never a good checkpoint to offer: a load or
                # "latest" must not find it (only its object, which dies with the store).
                self._refs.get((storage.path, agent), {}).pop(checkpoint_id, None)
                if done is not None and not done.done():
                    done.set_exception(exc)
                else:
                    self._failures[storage.path] = exc
            else:
                self.flushed += 1
                self._last_flushed[(storage.path, agent)] = checkpoint_id
                if done is not None and not done.done():
                    done.set_result(None)
            finally:
                self._unflushed.discard((storage.path, checkpoint_id))
                self._trim(storage.path, agent)
                self._queue.task_done()

    def _trim(self, root: Path | str, agent: str) -> None:
        """Drop the oldest flushed refs of ``agent`` beyond ``keep_per_agent``."""
        refs = self._refs.get((root, agent))
        if not refs:
            return
        surplus = len(refs) - self._keep
        for checkpoint_id in [c for c in refs if (root, c) not in self._unflushed][: max(0, surplus)]:
            del refs[checkpoint_id]

    def _raise_failure(self, root: Path | str) -> None:
        failure = self._failures.pop(root, None)
        if failure is not None:
            raise failure

    async def save(self, storage_path: str, agent: str, checkpoint_id: str, data: bytes, durable: bool) -> str:
        """Keep ``data`` in the object store and flush it; durable: on disk before returning."""
        validate_agent_name(agent)
        validate_checkpoint_id(checkpoint_id)
        storage = self.storage(storage_path)
        self._raise_failure(storage.path)
        refs = self._refs.setdefault((storage.path, agent), OrderedDict())
        refs[checkpoint_id] = self._put(data)
        self._unflushed.add((storage.path, checkpoint_id))
        self._trim(storage.path, agent)
        self.saved += 1
        self._start_writer()
        assert self._queue is not None
        done: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if durable else None
        self._queue.put_nowait((storage, agent, checkpoint_id, data, done))
        if done is not None:
            await done
        return checkpoint_id

    async def flush(self, storage_path: str | None = None) -> None:
        """Wait until every queued checkpoint is on disk; raise a failed flush."""
        if self._queue is not None:
            await self._queue.join()
        roots = [resolve_storage_path(storage_path)] if storage_path else list(self._failures)
        for root in roots:
            self._raise_failure(root)

    def last_flushed(self, storage_path: str, agent: str) -> str | None:
        """The newest checkpoint of ``agent`` this store wrote to ``storage_path`` (since it started), or None."""
        return self._last_flushed.get((self.storage(storage_path).path, agent))

    def candidates(self, storage_path: str, agent: str) -> list[str]:
        """The agent's checkpoint ids, newest first: in the object store or on disk."""
        storage = self.storage(storage_path)
        on_disk = [info.id for info in storage.list(agent)]
        in_memory = list(self._refs.get((storage.path, agent), {}))
        return sorted(set(on_disk) | set(in_memory), reverse=True)

    def locate(self, storage_path: str, checkpoint_id: str) -> tuple[str, Any]:
        """``("ref", [ref])`` while the object is held, else ``("path", file)``."""
        storage = self.storage(storage_path)
        for (root, _agent), refs in self._refs.items():
            if root == storage.path and checkpoint_id in refs:
                return "ref", [refs[checkpoint_id]]  # nested: the caller fetches it, zero-copy
        try:
            return "path", str(storage.find(checkpoint_id))
        except CheckpointNotFoundError:
            raise
        except ValueError as exc:
            raise CheckpointNotFoundError(checkpoint_id, storage.path, hint=str(exc)) from exc


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class CheckpointStore:
    """The named checkpoint store actor (``kaizen-checkpoints``), one per namespace.

    >>> store = get_or_create_store("kaizen")  # doctest: +SKIP
    >>> ray.get(store.candidates.remote("/tmp/ckpts", "a1"))  # doctest: +SKIP
    []
    """

    def __init__(self) -> None:
        # Restarted by Ray after a crash: the index is rebuilt from disk on demand.
        self._logic = CheckpointStoreLogic(put=ray.put)

    def __repr__(self) -> str:
        return repr(self._logic)

    async def save(self, storage_path: str, agent: str, checkpoint_id: str, data: bytes, durable: bool) -> str:
        return await self._logic.save(storage_path, agent, checkpoint_id, data, durable)

    async def flush(self, storage_path: str | None = None) -> None:
        await self._logic.flush(storage_path)

    async def candidates(self, storage_path: str, agent: str) -> list[str]:
        return await asyncio.to_thread(self._logic.candidates, storage_path, agent)

    async def last_flushed(self, storage_path: str, agent: str) -> str | None:
        return self._logic.last_flushed(storage_path, agent)

    async def locate(self, storage_path: str, checkpoint_id: str) -> tuple[str, Any]:
        return self._logic.locate(storage_path, checkpoint_id)

    async def ping(self) -> bool:
        return True


def get_or_create_store(namespace: str | None) -> Any:
    """The namespace's store, created on first use (detached: it must outlive drivers).

    It lives in :func:`~kaizen_ray.runtime._namespaces.system_namespace` of
    ``namespace``: never in an anonymous one, where no other driver could find it.

    >>> store = get_or_create_store(None)  # after a plain ray.init(): in "kaizen"  # doctest: +SKIP
    >>> ray.get_actor(STORE_NAME, namespace="kaizen")                              # doctest: +SKIP
    Actor(CheckpointStore, ...)
    """
    options = {"name": STORE_NAME, "namespace": system_namespace(namespace), "get_if_exists": True, "lifetime": "detached"}
    return CheckpointStore.options(**options).remote()
