"""The checkpoint store actor on a real local Ray: ownership, durability, write-behind order, bounds.

Its restart after a kill is in the fault tier (tests/faults/test_store_faults.py).

Most tests talk to the store directly with encoded checkpoints (what an
agent's ``StoreSink`` sends), so each property is observed where it is made.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import ray

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import Checkpoint, decode_checkpoint, encode_checkpoint
from kaizen_ray.runtime._store_sink import load_from_store
from kaizen_ray.runtime.checkpoints import STORE_NAME, get_or_create_store

from tests._support.ray_agents import Counter, Polite
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

EVENT_TIMEOUT_S = 60.0  # generous: other Ray tests share these two cores
KEEP_PER_AGENT = 4  # CheckpointStoreLogic's default, which the actor uses


def make(agent: str, count: int, pad_bytes: int = 0) -> list[tuple[Checkpoint, bytes]]:
    """``count`` checkpoints of ``agent``, oldest first, with their encoded bytes."""
    made = []
    for cycle in range(1, count + 1):
        ckpt = Checkpoint.new(agent, cycle, "running", {"cycle": cycle, "pad": os.urandom(pad_bytes)})
        made.append((ckpt, encode_checkpoint(ckpt)))
    return made


def save(store, storage: Path, ckpt: Checkpoint, data: bytes, durable: bool):
    return store.save.remote(str(storage), ckpt.agent, ckpt.id, data, durable)


def file_of(storage: Path, ckpt: Checkpoint) -> Path:
    return storage / ckpt.agent / f"{ckpt.id}.ckpt"


def load(store, storage: Path, agent: str, checkpoint_id: str) -> Checkpoint:
    return asyncio.run(load_from_store(store, str(storage), agent, checkpoint_id))


def test_the_store_is_one_named_actor_per_namespace(ray_cluster, storage):
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="store-user")
    handle.run(1)  # its checkpoint went through the store

    assert STORE_NAME.startswith("kaizen-checkpoints")
    store = ray.get_actor(STORE_NAME, namespace=ray_cluster)
    assert store._actor_id == get_or_create_store(ray_cluster)._actor_id
    described = ray.get(store.__ray_call__.remote(lambda actor: repr(actor)), timeout=30)
    assert described.startswith("CheckpointStore(agents=") and "saved=" in described and "flushed=" in described


def test_a_checkpoint_object_outlives_the_agent_that_made_it(ray_cluster, storage):
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=0), name="outlived")
    result = handle.run(3)
    handle.kill()

    def gone() -> bool:
        try:
            handle.status()
        except kr.AgentGoneError:
            return True
        return False

    wait_until(gone, "the agent's actor to die")
    (storage / "outlived" / f"{result['checkpoint_id']}.ckpt").unlink()  # the store's object is the only copy left

    store = get_or_create_store(ray_cluster)
    kind, where = ray.get(store.locate.remote(str(storage), result["checkpoint_id"]), timeout=30)
    assert kind == "ref"
    ckpt = decode_checkpoint(ray.get(where[0], timeout=30))
    assert ckpt.id == result["checkpoint_id"] and ckpt.agent == "outlived" and ckpt.state["n"] == 3
    assert load(store, storage, "outlived", "latest").id == result["checkpoint_id"]


def test_run_returns_with_its_final_and_interrupt_checkpoints_on_disk(ray_cluster, storage, tmp_path):
    cfg = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=0)  # only the run-ending checkpoint
    completed = Counter.spawn(config=cfg, name="durable-completed").run(2)
    on_disk = kr.list_checkpoints(storage, agent="durable-completed")  # no flush asked for: already durable
    assert [info.id for info in on_disk] == [completed["checkpoint_id"]]
    assert on_disk[0].status == kr.CheckpointStatus.COMPLETED and on_disk[0].cycle == 2

    marker = tmp_path / "step-started"
    polite = Polite.spawn(config=cfg, name="durable-interrupted")
    ref = polite.start({"marker": str(marker)})
    wait_until(marker.exists, "the step to start")
    polite.request_interrupt("user", "graceful", "save and stop")
    interrupted = ray.get(ref, timeout=EVENT_TIMEOUT_S)
    saved = kr.load_checkpoint(interrupted["checkpoint_id"], storage)  # no flush asked for: already durable
    assert saved.status == kr.CheckpointStatus.INTERRUPTED and saved.cycle == 1
    assert saved.interrupt_reason.message == "save and stop"


def test_periodic_checkpoints_flush_write_behind_in_order(ray_cluster, storage):
    store = get_or_create_store(ray_cluster)
    periodic = make("write-behind", 5, pad_bytes=1_000_000)  # big enough that writing them takes a while
    big = Checkpoint.new("write-behind", 6, "running", {"cycle": 6, "pad": os.urandom(16_000_000)})
    last = (big, encode_checkpoint(big))
    made = [*periodic, last]

    # One after the other, as an agent's sink sends them (each awaited): an async actor
    # does not promise to start concurrent calls from one caller in submission order.
    ids = [ray.get(save(store, storage, ckpt, data, durable=False), timeout=60) for ckpt, data in periodic]
    assert ids == [ckpt.id for ckpt, _ in periodic]
    # A durable save queued behind them returns once it is on disk: so, in order, are all before it.
    ray.get(save(store, storage, *last, durable=True), timeout=60)
    for ckpt, data in made:
        assert file_of(storage, ckpt).read_bytes() == data
    mtimes = [file_of(storage, ckpt).stat().st_mtime_ns for ckpt, _ in made]
    assert mtimes == sorted(mtimes), "files landed out of save order"

    ray.get(store.flush.remote(str(storage)), timeout=60)
    listed = kr.list_checkpoints(storage, agent="write-behind")
    assert [info.id for info in listed] == [ckpt.id for ckpt, _ in made]


def test_a_run_with_checkpoints_in_flight_lands_every_checkpoint_in_order_and_ends_on_its_final_one(ray_cluster, storage):
    cfg = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1, checkpoints_in_flight=4)
    result = Counter.spawn(config=cfg, name="in-flight").run(12)

    assert result["status"] == "completed" and result["cycles"] == 12
    ray.get(get_or_create_store(ray_cluster).flush.remote(str(storage)), timeout=EVENT_TIMEOUT_S)
    every = [kr.load_checkpoint(info.id, storage) for info in kr.list_checkpoints(storage, agent="in-flight")]
    assert [c.cycle for c in every] == list(range(1, 13))  # none lost, none twice
    assert every[-1].id == result["checkpoint_id"] and every[-1].status == kr.CheckpointStatus.COMPLETED
    assert [c.parent_id for c in every[1:]] == [c.id for c in every[:-1]]  # one chain, sent in order
    mtimes = [file_of(storage, c).stat().st_mtime_ns for c in every]
    assert mtimes == sorted(mtimes), "the store wrote them out of the order they were sent"
    assert [c.state["n"] for c in every] == list(range(1, 13))


def test_the_store_keeps_a_bounded_number_of_refs_per_agent_and_loads_the_rest_from_disk(ray_cluster, storage):
    store = get_or_create_store(ray_cluster)
    made = make("bounded", KEEP_PER_AGENT + 2)
    ray.get([save(store, storage, ckpt, data, durable=True) for ckpt, data in made], timeout=60)

    located = [ray.get(store.locate.remote(str(storage), ckpt.id), timeout=30) for ckpt, _ in made]
    assert [kind for kind, _ in located] == ["path"] * 2 + ["ref"] * KEEP_PER_AGENT
    assert [Path(where) for _, where in located[:2]] == [file_of(storage, ckpt) for ckpt, _ in made[:2]]

    oldest, newest = made[0][0], made[-1][0]
    assert load(store, storage, "bounded", oldest.id).state["cycle"] == 1  # from disk
    file_of(storage, newest).unlink()  # held in the object store: the file is not needed
    assert load(store, storage, "bounded", newest.id).state["cycle"] == KEEP_PER_AGENT + 2


def test_bad_paths_and_unknown_ids_say_what_and_where(ray_cluster, storage, tmp_path):
    store = get_or_create_store(ray_cluster)
    (ckpt, data), = make("bad-input", 1)
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    with pytest.raises(kr.CheckpointStorageError, match="unusable"):
        ray.get(store.save.remote(str(in_the_way / "ckpts"), ckpt.agent, ckpt.id, data, True), timeout=30)

    with pytest.raises(kr.CheckpointNotFoundError) as missing:
        load(store, storage, "bad-input", "ck-unknown")
    assert "ck-unknown" in str(missing.value) and str(storage) in str(missing.value)
    with pytest.raises(kr.CheckpointNotFoundError, match="'bad-input' has no good checkpoint"):
        load(store, storage, "bad-input", "latest")
