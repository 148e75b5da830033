"""The store's flushes (no Ray started): agents flush side by side, each agent in order, buffers written uncopied."""

from __future__ import annotations

import asyncio
import pickle
import threading

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
