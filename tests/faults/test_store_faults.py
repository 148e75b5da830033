"""The checkpoint store under fire: SIGKILLed mid-flush, restarted, and on a disk that refuses writes.

What must hold whatever happens to the store's process: no torn checkpoint
file is ever visible (a reader finds the old file or the whole new one), every
checkpoint the store acknowledged as durable loads, and the runs that use the
store go on once Ray has restarted it. A disk that refuses writes (the store's
process under ``RLIMIT_FSIZE``, so ``write`` fails with EFBIG) ends the run
with a clear ``CheckpointError`` and leaves the last good checkpoint in place.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import Checkpoint, encode_checkpoint
from kaizen_ray.runtime._store_sink import load_from_store
from kaizen_ray.runtime.checkpoints import STORE_NAME, get_or_create_store

from tests._support.waiting import wait_until
from tests.faults._kills import WAIT_S, pid_of, restarted

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

BLOCK_S = 120.0  # the longest an agent here waits for the test's go-ahead


class Heavy(kr.BaseAutonomousAgent):
    """Counts to ``goal`` carrying ``pad_mb`` MB of state; from cycle ``grow_at`` on (if set) the pad appears.

    At ``n == hold_at`` it touches ``held`` and waits for the file ``go``: the
    test acts on the store while this run is still going.
    """

    def initial_state(self, task: dict[str, Any]) -> dict[str, Any]:
        return {"n": 0, "pad": b"", **task}

    async def step(self, state: dict[str, Any], ctx: Any) -> kr.StepResult:
        if state["n"] == state.get("hold_at") and not Path(state["go"]).exists():
            Path(state["held"]).touch()
            give_up = time.monotonic() + BLOCK_S
            while not Path(state["go"]).exists() and time.monotonic() < give_up:
                await asyncio.sleep(0.01)
        n = state["n"] + 1
        grown = state.get("grow_at") is None or n >= state["grow_at"]
        pad = bytes(state["pad_mb"] << 20) if grown else b""
        return kr.StepResult({**state, "n": n, "pad": pad}, done=n >= state["goal"], output=n)


def temp_files(storage: Path) -> list[Path]:
    """Files a writer has begun but not renamed into place (whatever the writer calls them: ``*.tmp``)."""
    return [p for p in storage.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def assert_no_torn_file(storage: Path) -> list[kr.Checkpoint]:
    """Every ``*.ckpt`` file under ``storage`` is listed and loads whole; the loaded checkpoints."""
    files = sorted(storage.rglob("*.ckpt"))
    listed = kr.list_checkpoints(storage)
    assert len(listed) == len(files), (files, listed)  # list_checkpoints skips (with a warning) what it cannot read
    return [kr.load_checkpoint(info.id, storage) for info in listed]


def durable_saves(store: Any, storage: Path, agent: str, count: int) -> list[str]:
    """``count`` small checkpoints of ``agent`` saved durable through ``store``: acknowledged = on disk."""
    ids = []
    for cycle in range(1, count + 1):
        ckpt = Checkpoint.new(agent, cycle, "running", {"cycle": cycle})
        ids.append(ray.get(store.save.remote(str(storage), agent, ckpt.id, encode_checkpoint(ckpt), True), timeout=WAIT_S))
    return ids


def test_a_store_killed_mid_flush_leaves_no_torn_file_loses_nothing_acknowledged_and_the_run_goes_on(
    ray_cluster, storage, tmp_path, cleanup
):
    store = get_or_create_store(ray_cluster)
    acknowledged = durable_saves(store, storage, "bystander", 3)
    held, go = tmp_path / "held", tmp_path / "go"
    goal, hold_at = 4, 2
    # 24 MB per checkpoint, one per cycle, write-behind: the store's writer is busy writing and fsyncing for a while.
    config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
    handle = Heavy.spawn(config=config, name="heavy")
    cleanup(handle)
    ref = handle.start({"goal": goal, "hold_at": hold_at, "held": str(held), "go": str(go), "pad_mb": 24})

    # Mid-flush: the store has created its temp file and is writing into it. SIGKILL it there.
    pid = pid_of(store)  # asked first: once the write has begun, nothing stands between it and the kill
    wait_until(lambda: temp_files(storage), "the store to begin writing a checkpoint", poll=0.002)
    os.kill(pid, signal.SIGKILL)
    restarted(store, pid, "the checkpoint store")
    # The write it was killed in never finished: its temp file is left, never renamed into place.
    left = temp_files(storage)
    assert left, "the kill landed between two writes, not mid-flush"

    for checkpoint_id in acknowledged:  # acknowledged as durable before the kill: intact
        assert kr.load_checkpoint(checkpoint_id, storage).agent == "bystander"
    assert_no_torn_file(storage)

    # The run goes on against the restarted store (Ray retries a save that was in flight).
    wait_until(held.exists, "the agent to reach its hold")
    go.touch()
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "completed" and result["cycles"] == goal, result
    final = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert (final.cycle, final.state["n"], len(final.state["pad"])) == (goal, goal, 24 << 20)
    every = assert_no_torn_file(storage)
    assert {c.agent for c in every} == {"bystander", "heavy"}
    # Later checkpoints work: the cycles after the hold reached the disk through the new store.
    assert max(c.cycle for c in every if c.agent == "heavy") == goal
    # The restarted store serves "latest" from disk (its objects died with the old process).
    latest = asyncio.run(load_from_store(store, str(storage), "heavy", "latest"))
    assert latest.id == result["checkpoint_id"]
    assert all(not p.name.endswith(".ckpt") for p in left)  # a temp file is never taken for a checkpoint


def test_a_restarted_store_rebuilds_its_index_from_disk(ray_cluster, storage):
    # Moved here from the integration tier (it kills the namespace's store; Ray restarts it).
    store = get_or_create_store(ray_cluster)
    made = []
    for cycle in range(1, 4):
        ckpt = Checkpoint.new("restarted", cycle, "running", {"cycle": cycle})
        made.append(ckpt.id)
        ray.get(store.save.remote(str(storage), "restarted", ckpt.id, encode_checkpoint(ckpt), True), timeout=WAIT_S)
    assert ray.get(store.locate.remote(str(storage), made[-1]), timeout=WAIT_S)[0] == "ref"

    before = pid_of(store)
    ray.kill(store, no_restart=False)
    restarted(store, before, "the checkpoint store")

    assert ray.get(store.candidates.remote(str(storage), "restarted"), timeout=WAIT_S) == made[::-1]
    for checkpoint_id in made:  # its objects died with it: every load now comes from disk
        assert ray.get(store.locate.remote(str(storage), checkpoint_id), timeout=WAIT_S)[0] == "path"
    assert asyncio.run(load_from_store(store, str(storage), "restarted", "latest")).id == made[-1]
    assert ray.get_actor(STORE_NAME, namespace=ray_cluster)._actor_id == store._actor_id


# -- a disk that refuses writes ---------------------------------------------------------------------

LIMIT = 1 << 20  # the store's process may write files up to 1 MB


def _limit_file_size(_actor: Any, limit: int | None) -> tuple[Any, Any]:
    """In the store's process: cap file sizes (None: lift the cap); the SIGXFSZ disposition and the old limits."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (old[1] if limit is None else limit, old[1]))
    # Python ignores SIGXFSZ from start-up on: a write past the limit fails with EFBIG instead of killing the process.
    return signal.getsignal(signal.SIGXFSZ), old


def test_a_disk_that_refuses_writes_fails_the_run_clearly_and_keeps_the_last_good_checkpoint(ray_cluster, storage, cleanup):
    store = get_or_create_store(ray_cluster)
    disposition, _ = ray.get(store.__ray_call__.remote(_limit_file_size, LIMIT), timeout=WAIT_S)
    try:
        assert disposition == signal.SIG_IGN
        config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
        handle = Heavy.spawn(config=config, name="refused")
        cleanup(handle)
        # Cycles 1-2 are small and fit; from cycle 3 on every checkpoint is 2 MB: the disk refuses it.
        result = ray.get(handle.start({"goal": 8, "grow_at": 3, "pad_mb": 2}), timeout=WAIT_S)
        status = handle.status()
    finally:
        ray.get(store.__ray_call__.remote(_limit_file_size, None), timeout=WAIT_S)

    assert result["status"] == "failed", result
    error = result["error"]
    assert isinstance(error, kr.CheckpointError), repr(error)
    message = str(error)
    assert str(storage) in message and "File too large" in message, message  # the path and the cause
    # The last good checkpoint is named, kept and loadable: cycle 2, before the pad appeared.
    last_good = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert (last_good.cycle, last_good.state["n"], last_good.state["pad"]) == (2, 2, b"")
    # Nothing acknowledged that is not on disk: every checkpoint on disk is whole and none is past cycle 2.
    assert [c.cycle for c in assert_no_torn_file(storage)] == [1, 2]
    assert temp_files(storage) == []  # a refused write leaves no temp file behind
    assert status["checkpoint_id"] == result["checkpoint_id"], status  # status, too, names the one on disk

