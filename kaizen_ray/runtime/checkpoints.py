"""The checkpoint store: one named actor per namespace that owns checkpoint objects.

Why an actor: whoever calls ``ray.put`` owns the object, and the object dies
with its owner. Agents send the encoded checkpoint here; the store puts it (so
it outlives the agent that made it) and flushes it to ``storage_path`` with
the core's atomic file format. A storage path is a folder or a URI
(``s3://...``): passed around as the str it is, resolved only by the core's
storage seam, never by ``Path(...)`` here.

Flushing: one writer task per agent drains that agent's queue, so an agent's
files land in the order its saves arrived, while different agents' files are
written (and fsynced) at the same time in a thread pool: a swarm stopped at
once is not flushed one agent after another. A durable save returns once its
file is on disk; a periodic one returns once it is in the object store
(write-behind). A failed write-behind flush is never dropped silently: the
agent's next save, or the next flush that covers it, raises it. That save
is still kept (queued, and on disk before it raises if durable): a run's
final state is not lost to an earlier failure on a disk that works again.

One copy on the way: the agent sends ``[head, PickleBuffer(payload)]`` (see
``StoreSink``), which Ray hands over out of band, as a read-only view of the
object store; the store writes that view to disk with ``writev`` and, in
another thread at the same time, ``ray.put``s it as its own object.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
_FLUSH_THREADS = 16  # writes wait on fsync (the GIL is released): threads, not cores, bound them
_INLINE_PUT_BYTES = 1 << 20
_JOIN_BELOW_BYTES = 64 << 10  # a smaller checkpoint is put as one bytes object (see _put)
_QueueItem = tuple[FileCheckpointStorage, str, str, Any, "asyncio.Future[None] | None"]
# How long a save waits for the saves its sender sent before it (see _Turns) before it is queued anyway.
_TURN_WAIT_S = 30.0
# Sessions whose turns are kept: a sender killed before its last save never ends its own.
_TURNS_KEPT = 4096


class _Turns:
    """Saves of one sender queued in the order it sent them, whatever order Ray starts them in.

    An async actor does not promise to start one caller's calls in the order
    they were submitted, and a run sends several write-behind saves without
    waiting (see ``kaizen_ray.core._saves_behind``). Each such save names its
    sender's session and its number in it; a save that arrives before one
    sent earlier waits for it (at most ``_TURN_WAIT_S``: a save lost with its
    sender must not hold the next ones for ever). A session this store has not
    seen starts wherever its first save arrives: after a restart of the store
    its numbers go on from the old one's, and the saves Ray retries must not
    wait for those the old store had already queued. The price: if Ray starts
    the very first saves of a session out of order, they are queued as they
    came (each file is still whole; "latest" goes by id, not by arrival).
    A session's durable save ends it; the sessions of senders that died
    before theirs are forgotten, least recently moved first, past ``_TURNS_KEPT``
    (one that comes back starts afresh, as after a restart of the store).
    """

    def __init__(self) -> None:
        self._next: OrderedDict[tuple[Any, str], int] = OrderedDict()
        self._moved = asyncio.Event()

    async def wait(self, key: Any, session: str, number: int) -> None:
        """Return once every save of ``session`` numbered below ``number`` is queued, or the wait timed out."""
        turn = (key, session)
        deadline = asyncio.get_running_loop().time() + _TURN_WAIT_S
        while number > self._next.setdefault(turn, number):
            moved = self._moved
            try:
                await asyncio.wait_for(moved.wait(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                logger.warning(
                    "checkpoint save %d of %s came %.0fs before those sent earlier; queued without them",
                    number, session, _TURN_WAIT_S,
                )
                return

    def queued(self, key: Any, session: str, number: int, *, last: bool) -> None:
        """``number`` is queued: the next save of ``session`` may go (``last``: the session is over, forget it)."""
        turn = (key, session)
        if last:
            self._next.pop(turn, None)
        else:
            self._next[turn] = max(self._next.get(turn, number), number + 1)
            self._next.move_to_end(turn)
            while len(self._next) > _TURNS_KEPT:
                self._next.popitem(last=False)
        self._moved.set()
        self._moved = asyncio.Event()


class CheckpointStoreLogic:
    """The store without Ray: object refs per agent, an ordered write-behind flush.

    ``put`` turns bytes into a handle (``ray.put`` in the actor; identity in tests).
    """

    def __init__(self, put: Callable[[Any], Any] = lambda data: data, keep_per_agent: int = 4) -> None:
        self._put = put
        self._keep = keep_per_agent
        self._storages: dict[Path | str, FileCheckpointStorage] = {}
        # (storage root, agent) -> checkpoint id -> object ref, oldest first.
        self._refs: dict[tuple[Path | str, str], OrderedDict[str, Any]] = {}
        # (storage root, agent) -> its queue and the task draining it (gone when the queue is empty).
        self._queues: dict[tuple[Path | str, str], asyncio.Queue[_QueueItem]] = {}
        self._writers: dict[tuple[Path | str, str], asyncio.Task[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=_FLUSH_THREADS, thread_name_prefix="kaizen-ckpt-flush")
        # (storage root, agent) -> its failed write-behind flush, raised to that agent's next save or flush.
        self._failures: dict[tuple[Path | str, str], BaseException] = {}
        # Saved but not yet on disk: their refs are the only copy, never evicted.
        self._unflushed: set[tuple[Path | str, str]] = set()
        # (storage root, agent) -> the newest checkpoint id this store put on disk.
        self._last_flushed: dict[tuple[Path | str, str], str] = {}
        self._turns = _Turns()
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
            # The store writes bytes an agent encoded (and signed, see _sign) and never unpickles them.
            found = FileCheckpointStorage(root)
            found.ensure_writable()
            self._storages[root] = found
        return found

    def _enqueue(self, key: tuple[Path | str, str], item: _QueueItem) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
        queue.put_nowait(item)
        if key not in self._writers:
            self._writers[key] = asyncio.get_running_loop().create_task(self._drain(key, queue))

    async def _drain(self, key: tuple[Path | str, str], queue: asyncio.Queue[_QueueItem]) -> None:
        """Write one agent's queued checkpoints in order; end when its queue is empty."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                storage, agent, checkpoint_id, data, done = queue.get_nowait()
            except asyncio.QueueEmpty:
                # No await between the empty queue and these lines: a save cannot slip in unseen.
                del self._writers[key], self._queues[key]
                return
            try:
                await loop.run_in_executor(self._pool, storage.write_bytes, agent, checkpoint_id, data)
            except Exception as exc:  # noqa: BLE001 - handed to the waiter or kept for the next call
                logger.error("flushing checkpoint %s of %s to %r failed: %r", checkpoint_id, agent, storage, exc)
                # Never on disk, so never a good checkpoint to offer: a load or
                # "latest" must not find it (only its object, which dies with the store).
                self._refs.get((storage.path, agent), {}).pop(checkpoint_id, None)
                if done is not None and not done.done():
                    done.set_exception(exc)
                else:
                    self._failures[key] = exc
            else:
                self.flushed += 1
                self._last_flushed[(storage.path, agent)] = checkpoint_id
                if done is not None and not done.done():
                    done.set_result(None)
            finally:
                self._unflushed.discard((storage.path, checkpoint_id))
                self._trim(storage.path, agent)
                queue.task_done()

    def _trim(self, root: Path | str, agent: str) -> None:
        """Drop the refs of ``agent`` older than its newest ``keep_per_agent``, once they are flushed.

        Newest by id (ids sort by creation time), not by arrival: concurrent
        calls into an async actor may start in another order than they were
        sent. An old checkpoint not yet on disk stays until its flush (its ref
        is its only copy), and is dropped then; it never costs a newer one its ref.
        """
        refs = self._refs.get((root, agent))
        if not refs:
            return
        for checkpoint_id in sorted(refs)[: max(0, len(refs) - self._keep)]:
            if (root, checkpoint_id) not in self._unflushed:
                del refs[checkpoint_id]

    def _raise_failure(self, root: Path | str | None, agent: str | None) -> None:
        """Raise (once) the first failed flush of ``agent`` under ``root``; None matches any."""
        for key in list(self._failures):
            if _covers(key, root, agent):
                raise self._failures.pop(key)

    async def save(
        self, storage_path: str, agent: str, checkpoint_id: str, data: Any, durable: bool, order: tuple[str, int] | None = None
    ) -> str:
        """Keep ``data`` in the object store and flush it; durable: on disk before returning.

        ``data``: the file's bytes, or its buffers ``[head, *payload]`` (written back to back).
        ``order``: ``(session, number)`` from a sender that does not wait for each save:
        its saves are queued, so written, in the order of their numbers (see ``_Turns``);
        its durable save (a run's last) ends the session.
        """
        turn = (storage_path, agent)  # as the sender names them: known before anything can be refused
        if order is not None:
            await self._turns.wait(turn, *order)
        try:
            validate_agent_name(agent)
            validate_checkpoint_id(checkpoint_id)
            storage = self.storage(storage_path)
            key = (storage.path, agent)
        except BaseException:
            if order is not None:  # refused before it was queued: the sender's next save need not wait for it
                self._turns.queued(turn, *order, last=durable)
            raise
        # Raised once this save is kept (queued; on disk first if durable), not instead of it: the
        # disk may work again, and a run's final state must not be lost for an earlier failure.
        earlier = self._failures.pop(key, None)
        refs = self._refs.setdefault(key, OrderedDict())
        refs[checkpoint_id] = None  # its place in the agent's order; the ref follows the put
        self._unflushed.add((storage.path, checkpoint_id))
        self.saved += 1
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] | None = loop.create_future() if durable else None
        self._enqueue(key, (storage, agent, checkpoint_id, data, done))
        if order is not None:
            self._turns.queued(turn, *order, last=durable)
        if done is not None or _size(data) >= _INLINE_PUT_BYTES:
            # Beside the write, in another thread: a durable save waits for the
            # longer of the two, not their sum, and the loop stays free for the
            # other agents' saves (a swarm stopped at once); a put of many megabytes never holds it.
            put = loop.run_in_executor(self._pool, self._put, data)
            try:
                ref = (await asyncio.gather(put, done))[0] if done is not None else await put
            except BaseException:
                if earlier is not None:  # this one's own failure is raised; the earlier one is not lost
                    logger.error("an earlier write-behind flush of %s had failed too: %r", agent, earlier)
                raise
        else:
            ref = self._put(data)  # a small write-behind save: cheaper than the hop to a thread and back
        if checkpoint_id in refs:  # not dropped meanwhile by a failed write or the bound
            refs[checkpoint_id] = ref
        self._trim(storage.path, agent)
        if earlier is not None:
            raise earlier
        return checkpoint_id

    async def flush(self, storage_path: str | None = None, agent: str | None = None) -> None:
        """Wait until the queued checkpoints are on disk; raise a failed flush.

        All of them; with ``storage_path``, those under it; with ``agent`` too,
        only that agent's: a killed agent's watcher waits for its own files,
        not behind a swarm's other writes.
        """
        root = resolve_storage_path(storage_path) if storage_path else None
        queues = [queue for key, queue in list(self._queues.items()) if _covers(key, root, agent)]
        await asyncio.gather(*(queue.join() for queue in queues))
        self._raise_failure(root, agent)

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
            if root == storage.path and refs.get(checkpoint_id) is not None:
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
        self._logic = CheckpointStoreLogic(put=_put)

    def __repr__(self) -> str:
        return repr(self._logic)

    async def save(
        self, storage_path: str, agent: str, checkpoint_id: str, data: Any, durable: bool, order: tuple[str, int] | None = None
    ) -> str:
        return await self._logic.save(storage_path, agent, checkpoint_id, data, durable, order)

    async def flush(self, storage_path: str | None = None, agent: str | None = None) -> None:
        await self._logic.flush(storage_path, agent)

    async def candidates(self, storage_path: str, agent: str) -> list[str]:
        return await asyncio.to_thread(self._logic.candidates, storage_path, agent)

    async def last_flushed(self, storage_path: str, agent: str) -> str | None:
        return self._logic.last_flushed(storage_path, agent)

    async def locate(self, storage_path: str, checkpoint_id: str) -> tuple[str, Any]:
        return self._logic.locate(storage_path, checkpoint_id)

    async def ping(self) -> bool:
        return True


def _covers(key: tuple[Path | str, str], root: Path | str | None, agent: str | None) -> bool:
    """Whether a ``(storage root, agent)`` key is among those a flush of ``root`` and ``agent`` covers (None: any)."""
    return root in (None, key[0]) and agent in (None, key[1])


def _size(data: Any) -> int:
    parts = data if isinstance(data, (list, tuple)) else [data]
    return sum(memoryview(p).nbytes for p in parts)


def _put(data: Any) -> Any:
    """``ray.put`` of the checkpoint's bytes, or of its ``[head, *payload]`` buffers with the payload out of band.

    A small checkpoint is joined into one ``bytes`` first: copying a few
    kilobytes is cheaper than out-of-band buffers (measured here: 0.44 ms
    against 1.07 ms for a 1 KB checkpoint), and the store puts one per save.
    """
    if isinstance(data, (list, tuple)):
        if _size(data) < _JOIN_BELOW_BYTES:
            return ray.put(b"".join(data))
        head, *payload = data
        return ray.put([bytes(head), *map(pickle.PickleBuffer, payload)])
    return ray.put(data)


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
