"""The Ray runtime's logic without a Ray cluster: AgentRuntime, CheckpointStoreLogic, supervision decisions.

Importing ``kaizen_ray.runtime`` imports Ray, but nothing here starts it: the
plain classes run on asyncio in this process, with real files in tmp_path.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import CheckpointStorageError, FileCheckpointStorage, encode_checkpoint
from kaizen_ray.core.deadlines import shared_scheduler
from kaizen_ray.core.supervision import ChildExit, children_to_restart, classify_exit, should_restart
from kaizen_ray.runtime.agent_actor import AgentRuntime
from kaizen_ray.runtime.checkpoints import CheckpointStoreLogic
from tests._support.agents import WAIT_S, BlocksAtCycle, Counter


# -- agents (module level, like the Ray tests' agents) ------------------------------------------


class SlowStartAgent(kr.BaseAutonomousAgent):
    """Its (async) ``initial_state`` waits for a gate: a run that is going but has not stepped."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate: asyncio.Event | None = None

    async def initial_state(self, task):
        assert self.gate is not None
        await self.gate.wait()
        return {"n": 0}

    async def step(self, state, ctx):
        return kr.StepResult(state, done=True)


class ForgetsName(kr.BaseAutonomousAgent):
    def __init__(self, config=None, **_ignored) -> None:
        super().__init__(config)  # drops name=: the runtime must refuse it

    async def step(self, state, ctx):
        return kr.StepResult(state, done=True)


def config(tmp_path: Path, **kw) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=tmp_path, **kw)


async def wait_thread_event(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT_S), "the event never came"


# -- AgentRuntime ----------------------------------------------------------------------------------


def test_runtime_runs_to_completion_with_a_durable_final_checkpoint(tmp_path):
    rt = AgentRuntime(Counter, "counter", config(tmp_path))
    result = asyncio.run(rt.run(3, None))
    assert (result["status"], result["cycles"], result["output"], result["state"]["n"]) == ("completed", 3, 3, 3)
    saved = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (saved.agent, saved.cycle, saved.status.value, saved.state["n"]) == ("counter", 3, "completed", 3)
    status = rt.status()
    assert (status["phase"], status["cycle"], status["checkpoint_id"]) == ("finished", 3, result["checkpoint_id"])


def test_runtime_refuses_an_agent_class_that_drops_its_name(tmp_path):
    with pytest.raises(TypeError, match="must pass name="):
        AgentRuntime(ForgetsName, "named", config(tmp_path))


def test_kill_deadline_resolves_with_a_snapshot_when_an_immediate_stop_of_a_blocking_step_overruns(tmp_path):
    rt = AgentRuntime(BlocksAtCycle, "blocker", config(tmp_path, immediate_shutdown_timeout=0.2))
    agent = rt.agent

    async def scenario():
        run = asyncio.ensure_future(rt.run(None, None))
        await wait_thread_event(agent.entered)  # cycle 1 committed, cycle 2 blocked in its thread
        deadline = asyncio.ensure_future(rt.wait_kill_deadline())
        assert rt.manager.request_interrupt("programmatic", "immediate", "stop now")
        snapshot = await asyncio.wait_for(deadline, WAIT_S)
        assert not run.done(), "the run cannot end while its step thread is blocked"
        agent.release.set()  # what the kill would do on Ray: end the stuck step
        return snapshot, await asyncio.wait_for(run, WAIT_S)

    snapshot, result = asyncio.run(scenario())
    assert snapshot is not None
    assert (snapshot["agent"], snapshot["interrupted"], snapshot["mode"]) == ("blocker", True, "immediate")
    assert snapshot["cycle"] == 1  # the blocked cycle never committed
    assert (result["status"], result["mode"], result["cycles"], result["state"]) == ("interrupted", "immediate", 1, {"n": 1})
    saved = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert (saved.cycle, saved.state, saved.status.value) == (1, {"n": 1}, "interrupted")


def test_kill_deadline_resolves_none_when_the_run_ends_first(tmp_path):
    rt = AgentRuntime(BlocksAtCycle, "quick", config(tmp_path, immediate_shutdown_timeout=30.0))
    agent = rt.agent

    async def scenario():
        run = asyncio.ensure_future(rt.run(None, None))
        await wait_thread_event(agent.entered)
        deadline = asyncio.ensure_future(rt.wait_kill_deadline())
        await asyncio.sleep(0)  # let the waiter register before anything else happens
        assert rt.manager.request_interrupt("programmatic", "immediate", "stop now")
        agent.release.set()  # the step ends well within immediate_shutdown_timeout
        result = await asyncio.wait_for(run, WAIT_S)
        return result, await asyncio.wait_for(deadline, WAIT_S)

    result, snapshot = asyncio.run(scenario())
    assert result["status"] == "interrupted"
    assert snapshot is None


def test_kill_deadline_resolves_none_for_an_uninterrupted_run(tmp_path):
    rt = AgentRuntime(Counter, "plain", config(tmp_path, immediate_shutdown_timeout=0.05))

    async def scenario():
        deadline = asyncio.ensure_future(rt.wait_kill_deadline())
        await asyncio.sleep(0)
        result = await rt.run(5, None)
        return result, await asyncio.wait_for(deadline, WAIT_S)

    result, snapshot = asyncio.run(scenario())
    assert result["status"] == "completed"
    assert snapshot is None


def test_an_immediate_request_made_before_the_run_arms_the_kill_deadline(tmp_path):
    rt = AgentRuntime(SlowStartAgent, "early", config(tmp_path, immediate_shutdown_timeout=0.1))
    assert rt.manager.request_interrupt("programmatic", "immediate", "stop before starting")

    async def scenario():
        rt.agent.gate = asyncio.Event()
        run = asyncio.ensure_future(rt.run(None, None))
        # The run is going (stuck in initial_state) and no request arrives during it:
        # only the level-triggered arming at the start of run() can make this resolve.
        snapshot = await asyncio.wait_for(rt.wait_kill_deadline(), WAIT_S)
        rt.agent.gate.set()
        return snapshot, await asyncio.wait_for(run, WAIT_S)

    snapshot, result = asyncio.run(scenario())
    assert snapshot is not None and snapshot["mode"] == "immediate"
    assert (result["status"], result["cycles"]) == ("interrupted", 0)


def test_a_passed_kill_deadline_is_not_reported_for_the_next_run(tmp_path):
    rt = AgentRuntime(BlocksAtCycle, "again", config(tmp_path, immediate_shutdown_timeout=0.1, max_cycles=3))
    agent = rt.agent

    async def scenario():
        run = asyncio.ensure_future(rt.run(None, None))
        await wait_thread_event(agent.entered)
        first_deadline = asyncio.ensure_future(rt.wait_kill_deadline())
        rt.manager.request_interrupt("programmatic", "immediate", "stop now")
        assert await asyncio.wait_for(first_deadline, WAIT_S) is not None
        agent.release.set()  # the step ended after all: the run finishes, nobody was killed
        first = await asyncio.wait_for(run, WAIT_S)
        # A second run on the same actor (a resume): its watcher asks for the
        # deadline, and must not be told about the first run's.
        rt.manager.reset()
        agent.entered.clear()
        second_deadline = asyncio.ensure_future(rt.wait_kill_deadline())
        await asyncio.sleep(0)
        second = await asyncio.wait_for(rt.run(None, first["checkpoint_id"]), WAIT_S)
        return first, second, await asyncio.wait_for(second_deadline, WAIT_S)

    first, second, snapshot = asyncio.run(scenario())
    assert (first["status"], first["cycles"]) == ("interrupted", 1)
    assert (second["status"], second["cycles"]) == ("completed", 3)
    assert snapshot is None


def test_the_run_after_an_immediate_stop_outlives_immediate_shutdown_timeout(tmp_path):
    # The IMMEDIATE request the first run stopped for is handled: the next run on the same actor
    # (a resume) is not interrupted by it, so no kill deadline may count against it.
    timeout_s = 0.1
    rt = AgentRuntime(BlocksAtCycle, "resumed", config(tmp_path, immediate_shutdown_timeout=timeout_s, max_cycles=3))
    agent = rt.agent

    async def scenario():
        run = asyncio.ensure_future(rt.run(None, None))
        await wait_thread_event(agent.entered)
        rt.manager.request_interrupt("programmatic", "immediate", "stop now")
        agent.release.set()
        first = await asyncio.wait_for(run, WAIT_S)
        agent.entered.clear()
        agent.release.clear()
        deadline = asyncio.ensure_future(rt.wait_kill_deadline())
        await asyncio.sleep(0)
        run = asyncio.ensure_future(rt.run(None, first["checkpoint_id"]))
        await wait_thread_event(agent.entered)  # cycle 2 blocks again, in the second run
        # Deadlines fire in due order: once this one has, a kill deadline armed as this run began has too.
        later = threading.Event()
        shared_scheduler().call_later(("test-later", id(later)), 3 * timeout_s, later.set)
        await wait_thread_event(later)
        agent.release.set()
        return first, await asyncio.wait_for(run, WAIT_S), await asyncio.wait_for(deadline, WAIT_S)

    first, second, snapshot = asyncio.run(scenario())
    assert (first["status"], first["cycles"]) == ("interrupted", 1)
    assert (second["status"], second["cycles"], second["interrupt_reason"]) == ("completed", 3, None)
    assert snapshot is None  # the run ended first: its watcher was never told to kill it


# -- CheckpointStoreLogic ------------------------------------------------------------------------


def encoded(agent: str, cycle: int) -> tuple[str, bytes]:
    ckpt = kr.Checkpoint.new(agent, cycle, "running", {"cycle": cycle})
    return ckpt.id, encode_checkpoint(ckpt)


def test_a_durable_save_is_on_disk_when_save_returns(tmp_path):
    logic = CheckpointStoreLogic()
    cid, data = encoded("a1", 1)

    async def scenario():
        returned = await logic.save(str(tmp_path), "a1", cid, data, durable=True)
        # Checked before any other await: nothing else could have written it meanwhile.
        return returned, kr.load_checkpoint(cid, storage_path=tmp_path)

    returned, loaded = asyncio.run(scenario())
    assert returned == cid
    assert (loaded.agent, loaded.cycle, loaded.state) == ("a1", 1, {"cycle": 1})
    assert (logic.saved, logic.flushed) == (1, 1)


def test_periodic_saves_return_before_their_write_and_flush_in_order(tmp_path, monkeypatch):
    written: list[str] = []
    gate = threading.Event()
    real_write = FileCheckpointStorage.write_bytes

    def gated_write(self, agent, checkpoint_id, data):
        assert gate.wait(WAIT_S), "the test never opened the gate"
        path = real_write(self, agent, checkpoint_id, data)
        written.append(checkpoint_id)
        return path

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", gated_write)
    logic = CheckpointStoreLogic()
    saves = [encoded("a1", cycle) for cycle in range(1, 6)]

    async def scenario():
        for cid, data in saves:
            await logic.save(str(tmp_path), "a1", cid, data, durable=False)
        pending = list(written)  # every save returned while the writer was held at the gate
        gate.set()
        await asyncio.wait_for(logic.flush(str(tmp_path)), WAIT_S)
        return pending

    pending = asyncio.run(scenario())
    assert pending == []
    assert written == [cid for cid, _ in saves]
    assert [info.id for info in kr.list_checkpoints(tmp_path, agent="a1")] == written
    assert logic.flushed == 5


def test_a_saved_checkpoint_stays_locatable_while_its_flush_is_pending(tmp_path, monkeypatch):
    gate = threading.Event()
    real_write = FileCheckpointStorage.write_bytes

    def gated_write(self, agent, checkpoint_id, data):
        assert gate.wait(WAIT_S), "the test never opened the gate"
        return real_write(self, agent, checkpoint_id, data)

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", gated_write)
    logic = CheckpointStoreLogic(keep_per_agent=2)
    saves = [encoded("a1", cycle) for cycle in range(1, 6)]

    async def scenario():
        for cid, data in saves:
            await logic.save(str(tmp_path), "a1", cid, data, durable=False)
        # Nothing is on disk yet: the refs are the only copies, so none may be evicted.
        held = [logic.locate(str(tmp_path), cid) for cid, _ in saves]
        gate.set()
        await asyncio.wait_for(logic.flush(str(tmp_path)), WAIT_S)
        return held

    held = asyncio.run(scenario())
    assert held == [("ref", [data]) for _, data in saves]
    kinds = [logic.locate(str(tmp_path), cid)[0] for cid, _ in saves]
    assert kinds == ["path", "path", "path", "ref", "ref"]  # once flushed, the bound holds again


def test_refs_are_bounded_per_agent_and_locate_finds_evicted_ones_on_disk(tmp_path):
    logic = CheckpointStoreLogic(keep_per_agent=2)
    a_saves = [encoded("a1", cycle) for cycle in range(1, 5)]
    b_id, b_data = encoded("b1", 1)

    async def scenario():
        await logic.save(str(tmp_path), "b1", b_id, b_data, durable=False)
        for cid, data in a_saves:
            await logic.save(str(tmp_path), "a1", cid, data, durable=False)
        await logic.flush(str(tmp_path))

    asyncio.run(scenario())
    storage = FileCheckpointStorage(tmp_path)
    for cid, data in a_saves[-2:]:  # the newest two are held: the ref is the put value itself
        assert logic.locate(str(tmp_path), cid) == ("ref", [data])
    for cid, _ in a_saves[:2]:  # evicted: served from the flushed file
        assert logic.locate(str(tmp_path), cid) == ("path", str(storage.find(cid)))
    assert logic.locate(str(tmp_path), b_id) == ("ref", [b_data])  # another agent's refs are its own
    assert logic.candidates(str(tmp_path), "a1") == sorted((cid for cid, _ in a_saves), reverse=True)


def test_locate_of_an_unknown_id_raises_not_found(tmp_path):
    logic = CheckpointStoreLogic()
    with pytest.raises(kr.CheckpointNotFoundError):
        logic.locate(str(tmp_path), "ck-20000101T000000000000Z-0000-abcdef")


def test_a_failed_write_behind_flush_is_raised_by_the_next_save_once_and_that_save_is_still_kept(tmp_path, monkeypatch):
    real_write = FileCheckpointStorage.write_bytes
    failure = OSError(28, "No space left on device")
    calls = {"n": 0}

    def failing_once(self, agent, checkpoint_id, data):
        calls["n"] += 1
        if calls["n"] == 1:
            raise failure
        return real_write(self, agent, checkpoint_id, data)

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", failing_once)
    logic = CheckpointStoreLogic()
    (lost_id, lost), (durable_id, durable), (next_id, nxt), (after_id, after) = (encoded("a1", c) for c in range(1, 5))

    async def scenario():
        await logic.save(str(tmp_path), "a1", lost_id, lost, durable=False)  # its flush fails, nobody waits
        # Queued after the failed one: when this durable save returns, the failure happened.
        await logic.save(str(tmp_path), "a1", durable_id, durable, durable=True)
        with pytest.raises(OSError) as raised:
            await logic.save(str(tmp_path), "a1", next_id, nxt, durable=True)
        await logic.save(str(tmp_path), "a1", after_id, after, durable=True)  # reported once, then clean
        return raised.value

    raised = asyncio.run(scenario())
    assert raised is failure
    on_disk = {info.id for info in kr.list_checkpoints(tmp_path, agent="a1")}
    # The save that reported the failure was written all the same (durable: before it raised).
    assert on_disk == {durable_id, next_id, after_id}


def test_a_failed_write_behind_flush_is_raised_by_flush(tmp_path):
    root = tmp_path / "ckpts"
    logic = CheckpointStoreLogic()
    (first_id, first), (second_id, second) = (encoded("a1", c) for c in (1, 2))

    async def scenario():
        await logic.save(str(root), "a1", first_id, first, durable=True)
        # The storage folder is replaced by a file: every later write really fails.
        for child in (root / "a1").iterdir():
            child.unlink()
        (root / "a1").rmdir()
        root.rmdir()
        root.write_text("not a folder")
        await logic.save(str(root), "a1", second_id, second, durable=False)  # write-behind: returns
        with pytest.raises(CheckpointStorageError) as raised:
            await asyncio.wait_for(logic.flush(str(root)), WAIT_S)
        return raised.value

    raised = asyncio.run(scenario())
    assert str(root) in str(raised)
    assert isinstance(raised, OSError)


# -- supervision decisions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status": "completed"}, ChildExit.COMPLETED),
        ({"status": "interrupted"}, ChildExit.INTERRUPTED),
        ({"status": "failed", "error": ValueError("step raised")}, ChildExit.FAILED),
        ({"status": "killed", "error": None}, ChildExit.KILLED),
        ({"status": "killed"}, ChildExit.KILLED),
        ({"status": "killed", "error": RuntimeError("actor died")}, ChildExit.CRASHED),
    ],
)
def test_classify_exit(result, expected):
    assert classify_exit(result) is expected


def test_classify_exit_refuses_an_unknown_status():
    with pytest.raises(ValueError, match="exploded"):
        classify_exit({"status": "exploded"})


RESTARTED = {
    ("permanent", ChildExit.CRASHED),
    ("permanent", ChildExit.FAILED),
    ("transient", ChildExit.CRASHED),
}


@pytest.mark.parametrize("policy", ["permanent", "transient", "temporary"])
@pytest.mark.parametrize("exit_", list(ChildExit))
@pytest.mark.parametrize("stopping", [False, True])
def test_should_restart_table(policy, exit_, stopping):
    expected = not stopping and (policy, exit_) in RESTARTED
    assert should_restart(policy, exit_, stopping=stopping) is expected
    assert should_restart(kr.RestartPolicy(policy), exit_, stopping=stopping) is expected


def test_should_restart_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match="forever"):
        should_restart("forever", ChildExit.CRASHED, stopping=False)


@pytest.mark.parametrize(
    ("strategy", "dead", "running", "expected"),
    [
        ("one_for_one", "b", {"a", "c", "d"}, ["b"]),
        ("one_for_all", "b", {"a", "c", "d"}, ["a", "b", "c", "d"]),
        ("one_for_all", "b", {"d"}, ["b", "d"]),  # finished children stay finished
        ("rest_for_one", "b", {"a", "c", "d"}, ["b", "c", "d"]),
        ("rest_for_one", "b", {"a", "d"}, ["b", "d"]),
        ("rest_for_one", "d", {"a", "b", "c"}, ["d"]),
        ("one_for_all", "a", set(), ["a"]),
    ],
)
def test_children_to_restart(strategy, dead, running, expected):
    assert children_to_restart(strategy, ["a", "b", "c", "d"], dead, running) == expected


def test_children_to_restart_refuses_a_stranger():
    with pytest.raises(ValueError, match="'z'"):
        children_to_restart("one_for_one", ["a", "b"], "z", set())


def test_children_to_restart_refuses_an_unknown_strategy():
    with pytest.raises(ValueError, match="all_for_none"):
        children_to_restart("all_for_none", ["a"], "a", set())


@st.composite
def supervised(draw):
    order = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=8, unique=True))
    dead = draw(st.sampled_from(order))
    running = draw(st.sets(st.sampled_from(order)))
    strategy = draw(st.sampled_from(list(kr.RestartStrategy)))
    return strategy, order, dead, running


@given(supervised())
def test_children_to_restart_properties(case):
    strategy, order, dead, running = case
    group = children_to_restart(strategy, order, dead, running)
    assert dead in group
    assert group == [name for name in order if name in group]  # start order, no repeats
    assert all(name == dead or name in running for name in group)  # only running children besides the dead one
    dead_at = order.index(dead)
    expected = {
        kr.RestartStrategy.ONE_FOR_ONE: {dead},
        kr.RestartStrategy.ONE_FOR_ALL: {dead} | set(running),
        kr.RestartStrategy.REST_FOR_ONE: {dead} | {n for n in running if order.index(n) > dead_at},
    }[strategy]
    assert set(group) == expected
