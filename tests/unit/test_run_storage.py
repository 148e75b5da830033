"""Storage going wrong around an in-process run: a save that fails mid-run, a damaged checkpoint to resume from.

The failures are real: a save fails because its destination is taken by a
folder (made by a PRE_CHECKPOINT hook, which knows the id about to be
written), so the real atomic writer fails at its rename, as it would on a
full or broken disk; a damaged checkpoint is a real file with a flipped byte.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import FileCheckpointStorage
from tests._support.agents import Counter


def cfg(tmp_path: Path, **kw) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=tmp_path, **kw)


def fail_the_save_at_cycle(agent: kr.BaseAutonomousAgent, cycle: int) -> list[Path]:
    """Make the checkpoint written at ``cycle`` fail for real; returns where it would have gone."""
    blocked: list[Path] = []

    def take_its_place(ctx: kr.HookContext) -> None:
        if ctx.cycle == cycle:
            target = agent.storage.path_for(agent.name, ctx.data["checkpoint_id"])
            target.mkdir(parents=True)  # os.replace(temp file, folder) fails: IsADirectoryError
            blocked.append(target)

    agent.hooks.register(kr.HookEvent.PRE_CHECKPOINT, take_its_place)
    return blocked


def checkpoint_files(tmp_path: Path) -> list[str]:
    """Every file under the storage folder, temp files included (a half-written one would show here)."""
    return sorted(p.name for p in tmp_path.rglob("*") if p.is_file())


def test_a_periodic_save_that_fails_ends_the_run_failed_with_the_storage_error_and_the_last_good_checkpoint(tmp_path):
    agent = Counter(config=cfg(tmp_path, checkpoint_frequency=1))
    blocked = fail_the_save_at_cycle(agent, 3)
    result = asyncio.run(agent.run_autonomous(10))

    assert result["status"] == "failed" and result["cycles"] == 3
    error = result["error"]
    assert type(error) is kr.CheckpointStorageError and isinstance(error.__cause__, IsADirectoryError)
    assert str(blocked[0]) in str(error)
    good = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (good.cycle, good.state["n"], good.status) == (2, 2, "running")
    # Nothing half-written: the two good files and no temp file; the failed one never appeared.
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent="Counter")] == [1, 2]
    assert checkpoint_files(tmp_path) == sorted(f"{c.id}.ckpt" for c in kr.list_checkpoints(tmp_path))


def test_a_final_save_that_fails_turns_a_completed_run_into_failed_naming_the_last_good_checkpoint(tmp_path):
    agent = Counter(config=cfg(tmp_path, checkpoint_frequency=2))
    blocked = fail_the_save_at_cycle(agent, 5)  # the run is done at 5: only the final save is at 5
    result = asyncio.run(agent.run_autonomous(5))

    assert (result["status"], result["cycles"], result["output"]) == ("failed", 5, 5)
    error = result["error"]
    assert type(error) is kr.CheckpointStorageError and isinstance(error.__cause__, IsADirectoryError)
    assert str(blocked[0]) in str(error)
    good = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (good.cycle, good.state["n"]) == (4, 4)
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent="Counter")] == [2, 4]
    assert checkpoint_files(tmp_path) == sorted(f"{c.id}.ckpt" for c in kr.list_checkpoints(tmp_path))
    assert agent.last_checkpoint_id == good.id and agent.status()["phase"] == "finished"


def test_a_final_save_that_fails_with_nothing_saved_before_names_no_checkpoint(tmp_path):
    agent = Counter(config=cfg(tmp_path, checkpoint_frequency=0))
    fail_the_save_at_cycle(agent, 2)
    result = asyncio.run(agent.run_autonomous(2))
    assert (result["status"], result["checkpoint_id"]) == ("failed", None)
    assert type(result["error"]) is kr.CheckpointStorageError
    assert kr.list_checkpoints(tmp_path) == [] and checkpoint_files(tmp_path) == []


# -- resuming from a damaged checkpoint --------------------------------------------------------


def three_checkpoints(tmp_path: Path) -> list[kr.CheckpointInfo]:
    """A run of Counter to 3 with a checkpoint per cycle: cycles 1, 2 (running) and 3 (completed)."""
    asyncio.run(Counter(config=cfg(tmp_path, checkpoint_frequency=1)).run_autonomous(3))
    infos = kr.list_checkpoints(tmp_path, agent="Counter")
    assert [i.cycle for i in infos] == [1, 2, 3]
    return infos


def damage(tmp_path: Path, checkpoint_id: str) -> Path:
    path = FileCheckpointStorage(tmp_path).find(checkpoint_id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the payload's last byte: the header still lists, the checksum fails
    path.write_bytes(bytes(data))
    return path


def test_resuming_from_a_damaged_checkpoint_by_id_raises_corrupt_naming_the_file(tmp_path):
    newest = three_checkpoints(tmp_path)[-1]
    path = damage(tmp_path, newest.id)
    agent = Counter(config=cfg(tmp_path))
    with pytest.raises(kr.CheckpointCorruptError) as info:
        asyncio.run(agent.run_autonomous(resume_from_checkpoint=newest.id))
    assert Path(info.value.path) == path and str(path) in str(info.value)
    assert "checksum" in info.value.problem
    # Nothing ran and nothing was written; the agent may start another run.
    assert (agent.status()["phase"], agent.cycle) == ("finished", 0)
    assert len(kr.list_checkpoints(tmp_path)) == 3


def test_resuming_from_latest_skips_a_damaged_newest_checkpoint_and_resumes_from_the_older_good_one(tmp_path, caplog):
    infos = three_checkpoints(tmp_path)
    path = damage(tmp_path, infos[-1].id)
    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        result = asyncio.run(Counter(config=cfg(tmp_path)).run_autonomous(resume_from_checkpoint="latest"))
    assert any(infos[-1].id in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records), caplog.text
    straight = asyncio.run(Counter(config=cfg(tmp_path / "straight")).run_autonomous(3))
    assert (result["status"], result["cycles"], result["state"]) == ("completed", 3, straight["state"])
    resumed = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    chain = []
    while resumed.parent_id is not None:
        chain.append(resumed.parent_id)
        resumed = kr.load_checkpoint(resumed.parent_id, storage_path=tmp_path)
    assert infos[1].id in chain and infos[2].id not in chain  # it went on from cycle 2, not the damaged 3
    assert path.exists()  # the damaged file is left for a human to look at


class Outputs(kr.BaseAutonomousAgent):
    """One cycle, done, whose output is the task."""

    async def step(self, state, ctx):
        return kr.StepResult({"n": 1}, done=True, output=state["task"])


KEPT = [None, "", "é\ud800", True, 7, 1.5, [1, [2]], {"a": {"b": None}}]  # come back equal from JSON
NOT_KEPT = [("a", 1), {1: "x"}, math.nan, {"s": math.inf}, [1, (2,)], {"a": b"x"}, object()]  # do not


@pytest.mark.parametrize(("output", "kept"), [(o, True) for o in KEPT] + [(o, False) for o in NOT_KEPT], ids=repr)
def test_a_completed_run_keeps_its_output_and_its_checkpoint_whatever_the_output(tmp_path, output, kept):
    """The output goes into the final checkpoint's metadata only when it comes back equal from JSON."""
    agent = Outputs(config=cfg(tmp_path))
    result = asyncio.run(agent.run_autonomous(output))
    assert result["status"] == "completed" and result["error"] is None
    assert result["output"] is output
    final = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert final.metadata.get("output", "absent") == (output if kept else "absent")
    resumed = asyncio.run(agent.run_autonomous(output, resume_from_checkpoint=result["checkpoint_id"]))
    assert resumed["status"] == "completed" and resumed["output"] == (output if kept else None)


class RaisesACheckpointError(kr.BaseAutonomousAgent):
    """Counts; at cycle 3 the step itself raises a CheckpointError (it looked up a checkpoint that is not there)."""

    def initial_state(self, task):
        return {"n": 0}

    async def step(self, state, ctx):
        if ctx.cycle == 3:
            kr.load_checkpoint("ck-20000101T000000000000Z-0000-abcdef", storage_path=self.storage.path)
        return kr.StepResult({"n": state["n"] + 1})


def test_a_checkpoint_error_the_step_raises_fails_the_run_with_a_final_checkpoint_of_the_last_good_state(tmp_path):
    """Only a save's own failure skips the final save; a step's CheckpointError is a step's failure like any other."""
    agent = RaisesACheckpointError(config=cfg(tmp_path, checkpoint_frequency=0))
    result = asyncio.run(agent.run_autonomous(None))
    assert result["status"] == "failed" and type(result["error"]) is kr.CheckpointNotFoundError
    assert result["checkpoint_id"] is not None
    final = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (final.status, final.cycle, final.state) == ("failed", 2, {"n": 2})


def test_a_relative_storage_path_with_dot_dot_holds_the_runs_checkpoints(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    result = asyncio.run(Counter(config=cfg(Path("../ckpts"))).run_autonomous(2))
    assert result["status"] == "completed" and result["error"] is None
    assert [c.cycle for c in kr.list_checkpoints(tmp_path / "ckpts", agent="Counter")][-1] == 2
