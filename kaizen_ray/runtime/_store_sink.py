"""The agent's side of the checkpoint store: encode (and sign) in the agent, keep and flush in the store actor.

:class:`StoreSink` is an agent actor's checkpoint sink; :func:`load_from_store`
finds a checkpoint by id or ``"latest"`` through the store, which serves it
from the object store while it holds it, else from disk.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from typing import Any

import ray

from kaizen_ray.core._observer import NULL_OBSERVER, RunObserver
from kaizen_ray.core.checkpoint import (
    Checkpoint,
    CheckpointError,
    FileCheckpointStorage,
    decode_checkpoint,
    encode_buffers,
    resolve_key,
    resolve_latest,
)

__all__ = ["StoreSink", "load_from_store"]


class StoreSink:
    """The agent's checkpoint sink on Ray: encode (and sign, with a key) here, keep and flush in the store actor.

    ``key``: the checkpoint key (``AutonomousConfig.checkpoint_key``), else
    ``$KAIZEN_RAY_CHECKPOINT_KEY`` of this process. ``observer`` hears each
    save's seconds and bytes (the metrics).
    """

    # The store queues this sink's saves in the order they were sent (numbered, see _Turns): a run may
    # leave several unacknowledged (AutonomousConfig.checkpoints_in_flight, kaizen_ray.core._saves_behind).
    keeps_order = True

    def __init__(self, store: Any, storage_path: str, observer: RunObserver = NULL_OBSERVER, key: Any = None) -> None:
        self.store = store
        self.storage_path = storage_path
        self.observer = observer
        self.key = resolve_key(key)
        self.last_state: Any = None  # the state last encoded: known to pickle (see shippable_result)
        # Saves are numbered in a session of this sink: the store queues them in that order (see _Turns).
        self._session = uuid.uuid4().hex
        self._sent = 0

    def warm_up(self, agent: str) -> Any:
        """Pay now for what a fresh process pays on its first save: the store's connection, the encoder's first use.

        Called as the actor starts, so that its first checkpoint (often a
        stop's, which a caller waits for) pays neither: the connection costs
        about 5 ms here, first-time code paths about 1 ms. Returns the ref of
        the connecting call, to be kept, never awaited (the store may still be starting).
        """
        encode_buffers(Checkpoint.new(agent, 0, "running", None), key=self.key)
        return self.store.__ray_ready__.remote()

    async def save(self, checkpoint: Checkpoint, *, durable: bool) -> str:
        started = time.perf_counter()
        # A state cloudpickle refuses fails here, naming agent and type.
        head, *payload = encode_buffers(checkpoint, key=self.key)
        self.last_state = checkpoint.state
        # Out of band: Ray copies the payload once into the object store, the store reads it in place.
        data = [head, *map(pickle.PickleBuffer, payload)]
        self._sent += 1
        order = (self._session, self._sent)
        checkpoint_id = await self.store.save.remote(self.storage_path, checkpoint.agent, checkpoint.id, data, durable, order)
        # Measured here, where both are known: encoding included, up to the store's ack (on disk when durable).
        self.observer.on_checkpoint(time.perf_counter() - started, len(head) + sum(map(len, payload)))
        return checkpoint_id

    async def load(self, agent: str, checkpoint_id: str) -> Checkpoint:
        return await load_from_store(self.store, self.storage_path, agent, checkpoint_id, key=self.key)

    async def last_durable(self, agent: str) -> str | None:
        """The newest checkpoint of ``agent`` on disk once the store's queue has drained (None if unknown)."""
        try:
            await self.store.flush.remote(self.storage_path, agent)
        except CheckpointError:
            pass  # the failure the run already reports; what did reach the disk is asked next
        return await self.store.last_flushed.remote(self.storage_path, agent)


async def load_from_store(
    store: Any, storage_path: str, agent: str, checkpoint_id: str, *, key: Any = None
) -> Checkpoint:
    """A checkpoint by id, or ``"latest"``: the newest good one of ``agent`` (corrupt ones skipped).

    With a key (``key``, else ``$KAIZEN_RAY_CHECKPOINT_KEY``), unsigned or badly signed ones are refused (skipped by ``"latest"``).
    """
    key = resolve_key(key)
    if checkpoint_id != "latest":
        return await asyncio.to_thread(_load_one_sync, store, storage_path, checkpoint_id, key)
    candidates = await store.candidates.remote(storage_path, agent)
    # The one "latest" resolver, run in a thread: its loads are blocking ray.get calls.
    return await asyncio.to_thread(
        resolve_latest, agent, candidates, lambda cid: _load_one_sync(store, storage_path, cid, key), storage_path
    )


def _load_one_sync(store: Any, storage_path: str, checkpoint_id: str, key: bytes | None) -> Checkpoint:
    kind, where = ray.get(store.locate.remote(storage_path, checkpoint_id))
    if kind == "ref":
        return decode_checkpoint(ray.get(where[0]), source=f"object store ({checkpoint_id})", key=key)
    return FileCheckpointStorage(storage_path, key=key).load(checkpoint_id)
