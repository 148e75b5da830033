"""The timer actor: one-shot deadlines that raise SYSTEM interrupts on their targets.

One named actor per namespace (``kaizen-timer``). It runs one scheduling loop
over one heap (:class:`~kaizen_ray.core.deadlines.DeadlineQueue`): no thread or
task per deadline, so a thousand pending deadlines cost a thousand heap
entries. A deadline counts from the moment its run started, by the wall clock
of the process that started it, not from when the timer actor received it or
was up: ``due = started_at + timeout_s``, converted to this process's
monotonic clock on arrival.

Restarts: Ray restarts a crashed timer actor (``max_restarts=-1``) by re-running
``__init__``, which would forget every pending deadline, and a run whose timer
crashed would never time out. So every pending deadline is also kept in Ray's
GCS key-value store (:class:`GcsDeadlineStore`), written before ``schedule``
answers and deleted on cancel or once fired; ``__init__`` reloads them. The GCS
store rather than a file because the timer serves every storage path of its
namespace and has none of its own, and the GCS is cluster-wide (any node may
host the restarted actor) and outlives actor restarts: it is where Ray Serve
keeps its controller's checkpoints. Deadlines are wall-clock based, so one
that fell due while the timer was down fires right after the restart. The
target's actor handle is stored pickled (an out-of-band handle: usable while
the target's own handles keep it alive, which a running target's do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol
from urllib.parse import quote, unquote

import ray
import ray.cloudpickle

from kaizen_ray.core.deadlines import DeadlineQueue
from kaizen_ray.core.interrupts import InterruptSource, coerce_mode
from kaizen_ray.runtime._metrics import record_timer_lateness
from kaizen_ray.runtime._namespaces import system_namespace

logger = logging.getLogger("kaizen_ray.timer")

__all__ = [
    "DeadlineStore", "GcsDeadlineStore", "MemoryDeadlineStore",
    "TimerActor", "TimerLogic", "TIMER_NAME", "get_or_create_timer",
]  # fmt: skip

TIMER_NAME = "kaizen-timer"
KV_NAMESPACE = "kaizen_ray"  # the GCS key-value namespace (not a Ray actor namespace)


class DeadlineStore(Protocol):
    """Where :class:`TimerLogic` keeps pending deadlines so that a new instance can reload them.

    A record is ``{"started_at": float, "timeout_s": float, "payload": Any}``.

    >>> store: DeadlineStore = MemoryDeadlineStore()
    >>> store.save("k", {"started_at": 0.0, "timeout_s": 1.0, "payload": None}); sorted(store.load())
    ['k']
    """

    def save(self, key: str, record: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...

    def load(self) -> dict[str, dict[str, Any]]: ...


class MemoryDeadlineStore:
    """A :class:`DeadlineStore` in a dict: for tests, and for a timer that need not survive restarts.

    >>> store = MemoryDeadlineStore()
    >>> store.save("k", {"started_at": 0.0, "timeout_s": 1.0, "payload": "p"})
    >>> store.delete("k"); store.load()
    {}
    """

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def save(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = dict(record)

    def delete(self, key: str) -> None:
        self.records.pop(key, None)

    def load(self) -> dict[str, dict[str, Any]]:
        return {key: dict(record) for key, record in self.records.items()}


class GcsDeadlineStore:
    """Pending deadlines of one namespace's timer in Ray's GCS key-value store.

    Keys are ``timer/<namespace>/<deadline key>`` (both quoted) in the KV
    namespace ``kaizen_ray``; values are the records pickled with
    ``ray.cloudpickle`` (the payload holds the target's actor handle). They live
    as long as the cluster's GCS; a later ``kaizen-ray gc`` can drop a removed
    timer's leftovers by that prefix.

    >>> store = GcsDeadlineStore("kaizen")  # inside a Ray worker or driver  # doctest: +SKIP
    >>> store.load()                                                         # doctest: +SKIP
    {}
    """

    def __init__(self, namespace: str) -> None:
        self.prefix = f"timer/{quote(namespace, safe='')}/".encode()

    def _key(self, key: str) -> bytes:
        return self.prefix + quote(key, safe="").encode()

    def save(self, key: str, record: dict[str, Any]) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        _internal_kv_put(self._key(key), ray.cloudpickle.dumps(record), overwrite=True, namespace=KV_NAMESPACE)

    def delete(self, key: str) -> None:
        from ray.experimental.internal_kv import _internal_kv_del

        _internal_kv_del(self._key(key), namespace=KV_NAMESPACE)

    def load(self) -> dict[str, dict[str, Any]]:
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

        records: dict[str, dict[str, Any]] = {}
        for raw_key in _internal_kv_list(self.prefix, namespace=KV_NAMESPACE):
            key = unquote(raw_key[len(self.prefix):].decode())
            value = _internal_kv_get(raw_key, namespace=KV_NAMESPACE)
            if value is None:  # deleted between list and get
                continue
            try:
                records[key] = ray.cloudpickle.loads(value)
            except Exception:  # noqa: BLE001 - one unreadable record must not lose the others
                logger.exception("timer: dropping deadline %r, its record cannot be read back", key)
                self.delete(key)
        return records


class TimerLogic:
    """The loop without Ray. ``fire(key, payload, lateness_s)`` is called once per due deadline.

    With a ``store``, every pending deadline is saved there until it is
    cancelled or fired, and :meth:`restore` reloads them into a new instance
    (the timer actor after a restart).

    >>> async def demo():
    ...     fired = []
    ...     timer = TimerLogic(lambda key, payload, late: fired.append(key))
    ...     loop_task = asyncio.ensure_future(timer.loop())
    ...     timer.schedule("k", started_at=time.time(), timeout_s=0.01, payload=None)
    ...     while not fired:
    ...         await asyncio.sleep(0.005)
    ...     loop_task.cancel()
    ...     return fired
    >>> asyncio.run(demo())
    ['k']
    """

    def __init__(
        self,
        fire: Callable[[Hashable, Any, float], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        store: DeadlineStore | None = None,
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._wall = wall
        self._store = store
        self._queue = DeadlineQueue()
        self._changed: asyncio.Event | None = None
        self.fired = 0
        self.restored = 0

    def __len__(self) -> int:
        return len(self._queue)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _due(self, started_at: float, timeout_s: float) -> tuple[float, float]:
        left = started_at + timeout_s - self._wall()
        return self._clock() + left, left

    def restore(self) -> int:
        """Queue every deadline the store holds (those already past fire at the next pass); how many."""
        if self._store is None:
            return 0
        records = self._store.load()
        restored = 0
        for key, record in records.items():
            try:
                due, _ = self._due(record["started_at"], record["timeout_s"])
                self._queue.schedule(key, due, record["payload"])
            except (KeyError, TypeError, ValueError) as exc:
                # One bad record (written by hand, or by an older timer) must not cost every other deadline.
                logger.error("timer: dropping saved deadline %r, which cannot be read back: %r", key, exc)
                self._forget(key)
                continue
            restored += 1
        self.restored += restored
        if restored:
            logger.info("timer: reloaded %d pending deadline(s)", restored)
        self._wake()
        return restored

    def schedule(self, key: Hashable, *, started_at: float, timeout_s: float, payload: Any) -> float:
        """Fire ``key`` at wall time ``started_at + timeout_s``; returns the seconds left (may be < 0)."""
        due, left = self._due(started_at, timeout_s)
        # Queued first: the queue refuses a due that is not a finite number, and only a deadline
        # it took is saved (a saved bad one would fail every restart's restore).
        self._queue.schedule(key, due, payload)
        if self._store is not None:
            try:
                self._store.save(key, {"started_at": started_at, "timeout_s": timeout_s, "payload": payload})  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the deadline still fires unless this process dies
                logger.exception("timer: deadline %r is pending but not saved; a restart would lose it", key)
        self._wake()
        return left

    def _forget(self, key: Hashable) -> None:
        if self._store is not None:
            try:
                self._store.delete(key)  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a leftover record fires once more after a restart, at worst
                logger.exception("timer: could not delete the saved deadline %r", key)

    def cancel(self, key: Hashable) -> bool:
        """Drop a pending deadline (and its saved record); False if it already fired or never was."""
        found = self._queue.cancel(key)
        self._forget(key)
        self._wake()
        return found

    def fire_due(self) -> float | None:
        """Fire every deadline due now; the seconds until the next one, or None when none is pending."""
        now = self._clock()
        for key, due, payload in self._queue.pop_due(now):
            self.fired += 1
            try:
                self._fire(key, payload, now - due)
            except Exception:  # noqa: BLE001 - one bad target never stops the loop
                logger.exception("timer: firing %r failed", key)
            # Forgotten after firing: a crash in between fires it again after the
            # restart (at least once), rather than never.
            self._forget(key)
        upcoming = self._queue.next_due()
        return None if upcoming is None else max(0.0, upcoming - self._clock())

    async def loop(self) -> None:
        """Sleep until the next deadline (or a change), fire what is due, forever."""
        self._changed = asyncio.Event()
        while True:
            self._changed.clear()
            timeout = self.fire_due()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass


def _interrupt_target(key: Hashable, payload: dict[str, Any], lateness_s: float) -> None:
    target = payload["target"]
    elapsed = time.time() - payload["started_at"]
    metadata = {
        "handler": "timeout",
        "timeout_seconds": payload["timeout_s"],
        "elapsed_seconds": elapsed,
        "lateness_seconds": lateness_s,
        "deadline": key,
    }
    logger.info("timer: %s timed out after %.3fs (%.1f ms late)", payload["name"], elapsed, lateness_s * 1000)
    record_timer_lateness(lateness_s)
    # Fire and forget: a dead target must not hold up the loop.
    target.request_interrupt.remote(
        InterruptSource.SYSTEM.value, payload["mode"], f"timeout after {payload['timeout_s']}s", metadata
    )


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class TimerActor:
    """The named timer actor. Targets are actor handles with a ``request_interrupt`` method.

    ``namespace`` is the one it is named in: its deadlines are saved under it
    and reloaded when Ray restarts it.

    >>> timer = get_or_create_timer("kaizen")                                       # doctest: +SKIP
    >>> ray.get(timer.schedule.remote("a1/run-1", handle.actor, "a1", time.time(), 30.0, "graceful"))  # doctest: +SKIP
    29.99...
    """

    # async, so that the loop starts here on the actor's event loop: after a
    # restart nobody may call schedule() again, and reloaded deadlines must fire.
    async def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._logic = TimerLogic(_interrupt_target, store=GcsDeadlineStore(namespace))
        self._logic.restore()
        self._loop_task: asyncio.Task[None] | None = None
        self._ensure_loop()

    def __repr__(self) -> str:
        return f"TimerActor({self._namespace!r}, pending={len(self._logic)}, restored={self._logic.restored})"

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._logic.loop())

    async def schedule(self, key: str, target: Any, name: str, started_at: float, timeout_s: float, mode: str) -> float:
        self._ensure_loop()
        payload = {"target": target, "name": name, "started_at": started_at, "timeout_s": timeout_s, "mode": coerce_mode(mode).value}
        return self._logic.schedule(key, started_at=started_at, timeout_s=timeout_s, payload=payload)

    async def cancel(self, key: str) -> bool:
        return self._logic.cancel(key)

    async def pending(self) -> int:
        return len(self._logic)

    async def stats(self) -> dict[str, int]:
        """This incarnation's counts: ``pending``, ``fired``, ``restored`` (reloaded at its start)."""
        return {"pending": len(self._logic), "fired": self._logic.fired, "restored": self._logic.restored}


def get_or_create_timer(namespace: str | None) -> Any:
    """The namespace's timer actor, created on first use (detached: it serves every driver).

    It lives in :func:`~kaizen_ray.runtime._namespaces.system_namespace` of
    ``namespace``: never in an anonymous one, where no other driver could find it.

    >>> timer = get_or_create_timer(None)  # after a plain ray.init(): in "kaizen"  # doctest: +SKIP
    >>> ray.get(timer.pending.remote())                                            # doctest: +SKIP
    0
    """
    namespace = system_namespace(namespace)
    options = {"name": TIMER_NAME, "namespace": namespace, "get_if_exists": True, "lifetime": "detached"}
    return TimerActor.options(**options).remote(namespace)
