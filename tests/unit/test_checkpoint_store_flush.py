"""The store's flushes (no Ray started): agents flush side by side, each agent in order, buffers written uncopied."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import FileCheckpointStorage, decode_checkpoint, encode_parts
from kaizen_ray.runtime.checkpoints import CheckpointStoreLogic
from tests._support.agents import WAIT_S


def _parts(agent: str, cycle: int) -> tuple[str, list]:
    ckpt = kr.Checkpoint.new(agent, cycle, "interrupted", {"agent": agent, "cycle": cycle})
    head, payload = encode_parts(ckpt)
    return ckpt.id, [head, pickle.PickleBuffer(payload)]  # as StoreSink sends them


def test_one_agents_durable_save_is_not_held_up_by_another_agents_slow_write(tmp_path, monkeypatch):
    """A swarm stopped at once: each final save waits for its own fsync, not for the others' in a row."""
    gate, blocked = threading.Event(), threading.Event()
    real_write = FileCheckpointStorage.write_bytes

    def slow_for_a1(self, agent, checkpoint_id, data):
        if agent == "sw/a1":
            blocked.set()
            assert gate.wait(WAIT_S), "the test never opened the gate"
        return real_write(self, agent, checkpoint_id, data)

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", slow_for_a1)
    logic = CheckpointStoreLogic()
    (a_id, a_data), (b_id, b_data) = _parts("sw/a1", 1), _parts("sw/a2", 1)

    async def scenario():
        a_save = asyncio.ensure_future(logic.save(str(tmp_path), "sw/a1", a_id, a_data, durable=True))
        await asyncio.to_thread(blocked.wait, WAIT_S)
        # a1's write is stuck in its thread; a2's durable save must still complete.
        await asyncio.wait_for(logic.save(str(tmp_path), "sw/a2", b_id, b_data, durable=True), WAIT_S)
        b_on_disk = kr.load_checkpoint(b_id, storage_path=tmp_path).state
        a_pending = not a_save.done()
        gate.set()
        await asyncio.wait_for(a_save, WAIT_S)
        return b_on_disk, a_pending

    b_on_disk, a_pending = asyncio.run(scenario())
    assert b_on_disk == {"agent": "sw/a2", "cycle": 1} and a_pending
    assert kr.load_checkpoint(a_id, storage_path=tmp_path).state == {"agent": "sw/a1", "cycle": 1}
    assert (logic.saved, logic.flushed) == (2, 2)


def test_six_concurrent_final_saves_all_land_and_each_agents_files_keep_their_order(tmp_path):
    logic = CheckpointStoreLogic()
    saves = {f"sw/a{i}": [_parts(f"sw/a{i}", c) for c in (1, 2, 3)] for i in range(6)}

    async def agent(name: str) -> None:
        *periodic, (last_id, last) = saves[name]
        for cid, data in periodic:
            await logic.save(str(tmp_path), name, cid, data, durable=False)
        await logic.save(str(tmp_path), name, last_id, last, durable=True)

    async def scenario():
        await asyncio.gather(*(agent(name) for name in saves))
        await logic.flush(str(tmp_path))

    asyncio.run(scenario())
    for name, made in saves.items():
        listed = kr.list_checkpoints(tmp_path, agent=name)
        assert [i.id for i in listed] == [cid for cid, _ in made]
        assert logic.last_flushed(str(tmp_path), name) == made[-1][0]
    assert logic.flushed == 18
    # The refs hold the buffers as sent; decoding them gives the state back.
    kind, [ref] = logic.locate(str(tmp_path), saves["sw/a0"][-1][0])
    assert kind == "ref" and decode_checkpoint(ref).state == {"agent": "sw/a0", "cycle": 3}


def test_the_refs_kept_are_the_newest_by_id_even_when_an_older_checkpoint_arrives_last(tmp_path):
    """Concurrent saves may reach the store out of order: the bound keeps the newest ``keep`` ids, not the last arrivals."""
    keep = 4
    logic = CheckpointStoreLogic(keep_per_agent=keep)
    made = [_parts("late/a1", cycle) for cycle in range(1, keep + 3)]  # ids sort by creation time

    async def scenario():
        for checkpoint_id, data in [*made[1:], made[0]]:  # the oldest arrives last
            await logic.save(str(tmp_path), "late/a1", checkpoint_id, data, durable=True)

    asyncio.run(scenario())
    kinds = [logic.locate(str(tmp_path), checkpoint_id)[0] for checkpoint_id, _ in made]
    assert kinds == ["path"] * 2 + ["ref"] * keep


def test_a_durable_saves_put_runs_beside_its_write_and_both_are_done_when_it_returns(tmp_path, monkeypatch):
    # Each side waits for the other to have begun: only a put and a write that run at the same time both finish.
    put_began, write_began = threading.Event(), threading.Event()
    real_write = FileCheckpointStorage.write_bytes

    def write(self, agent, checkpoint_id, data):
        write_began.set()
        assert put_began.wait(WAIT_S), "the put never ran while the write was under way"
        return real_write(self, agent, checkpoint_id, data)

    def put(data):
        put_began.set()
        assert write_began.wait(WAIT_S), "the write never ran while the put was under way"
        return data

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", write)
    logic = CheckpointStoreLogic(put=put)
    checkpoint_id, data = _parts("beside/a1", 1)

    asyncio.run(logic.save(str(tmp_path), "beside/a1", checkpoint_id, data, durable=True))
    assert [i.id for i in kr.list_checkpoints(tmp_path, agent="beside/a1")] == [checkpoint_id]  # on disk
    assert logic.locate(str(tmp_path), checkpoint_id) == ("ref", [data])  # and its object held, before the answer


def test_saves_sent_without_waiting_are_queued_in_the_order_sent_whatever_order_they_start_in(tmp_path, monkeypatch):
    """An async actor may start one caller's calls out of order: the sender's numbers put its saves back in order."""
    written: list[str] = []
    real_write = FileCheckpointStorage.write_bytes

    def recorded(self, agent, checkpoint_id, data):
        written.append(checkpoint_id)
        return real_write(self, agent, checkpoint_id, data)

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", recorded)
    logic = CheckpointStoreLogic()
    (one, d1), (two, d2), (three, d3), (last, d4) = (_parts("a1", c) for c in (1, 2, 3, 4))

    async def scenario():
        await logic.save(str(tmp_path), "a1", one, d1, False, ("s", 1))
        # 3 starts before 2: it waits for 2, which is then queued first.
        third = asyncio.ensure_future(logic.save(str(tmp_path), "a1", three, d3, False, ("s", 3)))
        await asyncio.sleep(0)  # let the third start and wait for its turn
        assert not third.done()
        await logic.save(str(tmp_path), "a1", two, d2, False, ("s", 2))
        await asyncio.wait_for(third, WAIT_S)
        await logic.save(str(tmp_path), "a1", last, d4, True, ("s", 4))  # durable: after all three, and ends the session
        return logic._turns._next

    left = asyncio.run(scenario())
    assert written == [one, two, three, last]
    assert left == {}  # the session ended with its durable save


def test_a_save_whose_predecessor_never_comes_is_queued_after_the_turn_wait(tmp_path, monkeypatch):
    monkeypatch.setattr("kaizen_ray.runtime.checkpoints._TURN_WAIT_S", 0.05)
    logic = CheckpointStoreLogic()
    (one, d1), (three, d3) = _parts("a1", 1), _parts("a1", 3)

    async def scenario():
        await logic.save(str(tmp_path), "a1", one, d1, False, ("s", 1))
        await asyncio.wait_for(logic.save(str(tmp_path), "a1", three, d3, True, ("s", 3)), WAIT_S)  # 2 was lost

    asyncio.run(scenario())
    assert kr.load_checkpoint(three, storage_path=tmp_path).state == {"agent": "a1", "cycle": 3}


def test_a_save_refused_before_it_was_queued_does_not_hold_up_the_next_one(tmp_path, monkeypatch):
    monkeypatch.setattr("kaizen_ray.runtime.checkpoints._TURN_WAIT_S", 3600.0)  # a held save would hang the test
    logic = CheckpointStoreLogic()
    (one, d1), (_two, d2), (three, d3) = (_parts("a1", c) for c in (1, 2, 3))

    async def scenario():
        await logic.save(str(tmp_path), "a1", one, d1, False, ("s", 1))
        try:
            await logic.save(str(tmp_path), "a1", "not an id/..", d2, False, ("s", 2))
        except ValueError as exc:
            refused = exc
        await asyncio.wait_for(logic.save(str(tmp_path), "a1", three, d3, True, ("s", 3)), WAIT_S)
        return refused

    assert "not an id" in str(asyncio.run(scenario()))
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent="a1")] == [1, 3]


def test_a_flush_for_one_agent_waits_for_its_own_files_not_for_another_agents_stuck_write(tmp_path, monkeypatch):
    """What a killed agent's watcher asks for: its latest file, without queueing behind the swarm's other writes."""
    gate, blocked = threading.Event(), threading.Event()
    real_write = FileCheckpointStorage.write_bytes

    def stuck_for_a1(self, agent, checkpoint_id, data):
        if agent == "sw/a1":
            blocked.set()
            assert gate.wait(WAIT_S), "the test never opened the gate"
        return real_write(self, agent, checkpoint_id, data)

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", stuck_for_a1)
    logic = CheckpointStoreLogic()
    (a_id, a_data), (b_id, b_data) = _parts("sw/a1", 1), _parts("sw/a2", 1)

    async def scenario():
        await logic.save(str(tmp_path), "sw/a1", a_id, a_data, durable=False)
        await asyncio.to_thread(blocked.wait, WAIT_S)
        await logic.save(str(tmp_path), "sw/a2", b_id, b_data, durable=False)
        await asyncio.wait_for(logic.flush(str(tmp_path), "sw/a2"), WAIT_S)
        seen = (logic.last_flushed(str(tmp_path), "sw/a2"), logic.last_flushed(str(tmp_path), "sw/a1"))
        whole = asyncio.ensure_future(logic.flush(str(tmp_path)))
        await asyncio.sleep(0)
        whole_waited = not whole.done()
        gate.set()
        await asyncio.wait_for(whole, WAIT_S)
        return seen, whole_waited

    seen, whole_waited = asyncio.run(scenario())
    assert seen == (b_id, None)  # a2's file on disk while a1's was still stuck
    assert whole_waited  # a flush of the whole path still waits for every agent
    assert logic.last_flushed(str(tmp_path), "sw/a1") == a_id


def test_a_failed_write_behind_flush_is_raised_to_its_own_agent_not_to_a_neighbour(tmp_path, monkeypatch):
    real_write = FileCheckpointStorage.write_bytes
    failure = OSError(28, "No space left on device")
    failed: list[str] = []

    def failing_once_for_a1(self, agent, checkpoint_id, data):
        if agent == "sw/a1" and not failed:
            failed.append(checkpoint_id)
            raise failure
        return real_write(self, agent, checkpoint_id, data)

    monkeypatch.setattr(FileCheckpointStorage, "write_bytes", failing_once_for_a1)
    logic = CheckpointStoreLogic()
    (lost_id, lost), (kept_id, kept) = _parts("sw/a1", 1), _parts("sw/a1", 2)
    b_id, b_data = _parts("sw/a2", 1)

    async def scenario():
        await logic.save(str(tmp_path), "sw/a1", lost_id, lost, durable=False)  # its flush fails, nobody waits
        # Queued after the failed one: when this durable save returns, the failure happened.
        await logic.save(str(tmp_path), "sw/a1", kept_id, kept, durable=True)
        await logic.save(str(tmp_path), "sw/a2", b_id, b_data, durable=True)  # a2 is not told of a1's failure
        await logic.flush(str(tmp_path), "sw/a2")
        with pytest.raises(OSError) as raised:
            await logic.flush(str(tmp_path), "sw/a1")
        await logic.flush(str(tmp_path))  # raised once, then clean
        return raised.value

    assert asyncio.run(scenario()) is failure
    assert failed == [lost_id]
    assert [i.id for i in kr.list_checkpoints(tmp_path, agent="sw/a2")] == [b_id]
    assert [i.id for i in kr.list_checkpoints(tmp_path, agent="sw/a1")] == [kept_id]


def test_sessions_of_senders_that_never_sent_their_last_save_are_forgotten_past_the_bound(tmp_path, monkeypatch):
    """Agents killed before their final save never end their session: the store keeps only the newest ones."""
    monkeypatch.setattr("kaizen_ray.runtime.checkpoints._TURNS_KEPT", 2)
    monkeypatch.setattr("kaizen_ray.runtime.checkpoints._TURN_WAIT_S", 3600.0)  # a held save would hang the test
    logic = CheckpointStoreLogic()
    made = {name: [_parts(name, c) for c in (1, 2, 3)] for name in ("k/a1", "k/a2", "k/a3")}

    async def scenario():
        for name, [(cid, data), *_] in made.items():  # three senders, each killed after its first save
            await logic.save(str(tmp_path), name, cid, data, False, (name, 1))
        kept = [turn[1] for turn in logic._turns._next]
        # The forgotten session starts afresh where its next save arrives: it is not held for its save 2.
        cid, data = made["k/a1"][2]
        await asyncio.wait_for(logic.save(str(tmp_path), "k/a1", cid, data, True, ("k/a1", 3)), WAIT_S)
        return kept

    assert asyncio.run(scenario()) == ["k/a2", "k/a3"]
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent="k/a1")] == [1, 3]
