"""The least an IMMEDIATE stop costs with kaizen_ray's hops, made of bare actors: the stop's architectural floor.

An IMMEDIATE stop of an agent started with ``handle.start()`` travels
driver → agent (a control call, acknowledged) → checkpoint store (the write
made durable) → agent → watcher task → driver. These bare actors make the same
trips and the same durable write, and nothing else: no interrupt manager, no
hooks, no checkpoint format, no result dict. ``stop_latency`` sets the real
stop beside this floor, so what the runtime adds to its own hops reads apart
from what the hops themselves cost (which ``ray.cancel``, the issue's baseline,
does not pay: two trips, no disk).

A swarm's floor adds the supervisor's hops: driver → supervisor (control call)
→ every agent at once → store (the writes in parallel threads) → agents →
supervisor → store (the manifest, durable) → supervisor → watcher → driver.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import ray

_AWAIT_S = 600.0
_CHECKPOINT = os.urandom(1024)  # about the size of the stopped agent's checkpoint


def durable_write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync of the folder: what any durable checkpoint costs on disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@ray.remote(num_cpus=0)
class FloorStore:
    """The store's part: a durable write in a thread, the caller answered once it is on disk."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="kaizen-bench-floor-"))

    async def save(self, name: str, data: bytes) -> str:
        await asyncio.get_running_loop().run_in_executor(None, durable_write, self.folder / name, data)
        return name


@ray.remote(num_cpus=0, concurrency_groups={"control": 1})
class FloorAgent:
    """The agent's part: a call that awaits until a control call cancels it, then saves and returns."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.running: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None

    async def work(self, marker: str, name: str) -> bytes:
        self.running = (asyncio.get_running_loop(), asyncio.current_task())  # type: ignore[assignment]
        Path(marker).touch()
        try:
            await asyncio.sleep(_AWAIT_S)
        except asyncio.CancelledError:
            pass
        finally:
            self.running = None
        await self.store.save.remote(name, _CHECKPOINT)
        return pickle.dumps({"status": "interrupted", "checkpoint_id": name})

    @ray.method(concurrency_group="control")
    async def stop(self) -> bool:
        running = self.running
        if running is None:
            return False
        loop, task = running
        loop.call_soon_threadsafe(task.cancel)  # the work runs on the default group's loop
        return True


@ray.remote(num_cpus=0, concurrency_groups={"control": 1})
class FloorSupervisor:
    """The supervisor's part: its agents' calls awaited at once, then a manifest saved; stops forwarded at once."""

    def __init__(self, store: Any, agents: list[Any]) -> None:
        self.store, self.agents = store, agents

    async def work(self, marker: str, name: str) -> bytes:
        results = await asyncio.gather(*(a.work.remote(f"{marker}.{k}", f"{name}-{k}") for k, a in enumerate(self.agents)))
        await self.store.save.remote(f"{name}-manifest", pickle.dumps([pickle.loads(r) for r in results]))
        return pickle.dumps({"status": "interrupted", "children": len(results)})

    @ray.method(concurrency_group="control")
    async def stop(self) -> bool:
        return all(await asyncio.gather(*(a.stop.remote() for a in self.agents)))


@ray.remote(num_cpus=0, max_retries=0)
def floor_watch(actor: Any, marker: str, name: str) -> bytes:
    """The watcher task's part: wait for the run's ref and hand its bytes on."""
    return ray.get(actor.work.remote(marker, name))
