"""Storage that fails during a run on Ray: the run ends ``failed`` with the storage error, the last good checkpoint intact.

The failure is real: mid-run, the agent's step moves its checkpoint folder
aside and leaves a plain file in its place, so the checkpoint store actor's
next write there fails in the file system (``NotADirectoryError``), as a
vanished or remounted volume would. The agent first waits until its previous
checkpoint is on disk, so which checkpoint is the last good one is known.
Afterwards the test puts the folder back and reads what survived.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr

from tests._support.ray_agents import BLOCK_S

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 60.0  # generous: other Ray tests share these two cores


def aside(folder: Path) -> Path:
    return folder.with_name(folder.name + ".aside")


class BreaksItsStorage(kr.BaseAutonomousAgent):
    """Counts; in cycle ``break_at`` it waits for cycle ``break_at - 1``'s checkpoint on disk, then breaks its folder.

    Done at ``goal`` (None: never). Each cycle awaits ``delay``.
    """

    def initial_state(self, task):
        return {"n": 0, "goal": None, "delay": 0.01, **task}

    async def step(self, state, ctx):
        await asyncio.sleep(state["delay"])
        n = state["n"] + 1
        if n == state["break_at"]:
            folder = Path(state["storage"]) / ctx.agent_name
            give_up = time.monotonic() + BLOCK_S
            while not any(i.cycle == n - 1 for i in kr.list_checkpoints(state["storage"], agent=ctx.agent_name)):
                assert time.monotonic() < give_up, f"cycle {n - 1}'s checkpoint never reached the disk"
                await asyncio.sleep(0.01)
            os.rename(folder, aside(folder))
            folder.write_text("not a folder any more")
        return kr.StepResult({**state, "n": n}, done=state["goal"] is not None and n >= state["goal"], output=n)


def put_back(storage: Path, agent: str) -> None:
    folder = storage / agent
    folder.unlink()
    os.rename(aside(folder), folder)


def assert_failed_by_the_storage(result: dict[str, Any], storage: Path, agent: str) -> kr.Checkpoint:
    """The run failed with the storage's error, and its result names the last checkpoint that reached the disk."""
    assert result["status"] == "failed", result
    error = result["error"]
    assert isinstance(error, kr.CheckpointStorageError), repr(error)
    assert str(storage) in str(error) and "NotADirectoryError" in str(error), str(error)
    put_back(storage, agent)
    on_disk = kr.list_checkpoints(storage, agent=agent)
    newest = max(on_disk, key=lambda info: info.cycle)
    assert result["checkpoint_id"] == newest.id, (result["checkpoint_id"], [(i.id, i.cycle) for i in on_disk])
    saved = kr.load_checkpoint(result["checkpoint_id"], storage)  # checksum verified: whole, not torn
    assert saved.agent == agent and saved.state["n"] == saved.cycle
    return saved


def test_a_periodic_checkpoint_that_cannot_be_flushed_fails_the_run_and_keeps_the_last_good_one(ray_cluster, storage, cleanup):
    name = "periodic-flush-fails"
    handle = BreaksItsStorage.spawn(config=kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1), name=name)
    cleanup(handle)

    result = ray.get(handle.start({"break_at": 3, "storage": str(storage)}), timeout=WAIT_S)

    saved = assert_failed_by_the_storage(result, storage, name)
    assert saved.cycle == 2  # cycle 3's checkpoint was the first that could not be written
    assert result["cycles"] >= 3  # the run went on until the store reported the failed flush


def test_a_final_checkpoint_that_cannot_be_written_fails_the_run_and_keeps_the_last_good_one(ray_cluster, storage, cleanup):
    name = "final-save-fails"
    handle = BreaksItsStorage.spawn(config=kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1), name=name)
    cleanup(handle)

    result = ray.get(handle.start({"break_at": 3, "goal": 3, "storage": str(storage)}), timeout=WAIT_S)

    saved = assert_failed_by_the_storage(result, storage, name)
    # Cycle 3 completed the task, but its (final, durable) checkpoint could not be written.
    assert result["cycles"] == 3 and result["output"] == 3
    assert saved.cycle == 2 and saved.status == kr.CheckpointStatus.RUNNING
