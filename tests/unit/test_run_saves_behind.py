"""Write-behind checkpoints in flight (kaizen_ray.core._saves_behind): the run goes on, acknowledgements come in order.

The sink is the in-process file sink (real files) behind a gate the test
opens: a save is *held* until then, as a store actor's acknowledgement is in
flight. It says it keeps its saves in order (as the store's sink on Ray does),
so ``checkpoints_in_flight`` says how many a run may leave unacknowledged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import kaizen_ray as kr
from kaizen_ray.core._local_budget import LocalBudgetClient
from kaizen_ray.core.context import FileCheckpointSink
from tests._support.agents import WAIT_S, Counter


class HeldSink:
    """The file sink, each write-behind save held until ``gate`` is set; a chosen cycle's save fails."""

    keeps_order = True

    def __init__(self, storage: Any, fail_cycle: int | None = None) -> None:
        self._files = FileCheckpointSink(storage)
        self._fail_cycle = fail_cycle
        self.gate = asyncio.Event()
        self.held: list[int] = []  # cycles of the write-behind saves waiting at the gate
        self.changed = asyncio.Event()

    async def save(self, checkpoint: kr.Checkpoint, *, durable: bool) -> str:
        if not durable:
            self.held.append(checkpoint.cycle)
            self.changed.set()
            await self.gate.wait()
            if checkpoint.cycle == self._fail_cycle:
                raise kr.CheckpointStorageError("held-sink", f"the save of cycle {checkpoint.cycle} is refused")
        return await self._files.save(checkpoint, durable=durable)

    async def load(self, agent: str, checkpoint_id: str) -> kr.Checkpoint:
        return await self._files.load(agent, checkpoint_id)

    async def until_held(self, n: int) -> None:
        while len(self.held) < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), WAIT_S)


def run_with(agent: kr.BaseAutonomousAgent, sink: HeldSink, task: Any) -> Any:
    return agent.new_run(sink=sink, budget=LocalBudgetClient(agent.interrupt_manager)).execute(task)


def hooked(agent: kr.BaseAutonomousAgent) -> list[tuple[str, int, str]]:
    seen: list[tuple[str, int, str]] = []
    for event in (kr.HookEvent.PRE_CHECKPOINT, kr.HookEvent.POST_CHECKPOINT):
        agent.hooks.register(event, lambda ctx, e=event: seen.append((e.value, ctx.cycle, ctx.data["checkpoint_id"])))
    return seen


def test_the_run_goes_on_while_saves_are_held_then_takes_their_acknowledgements_in_order(tmp_path: Path) -> None:
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path, checkpoint_frequency=1, checkpoints_in_flight=3))
    seen = hooked(agent)

    async def scenario() -> tuple[Any, dict[str, Any]]:
        sink = HeldSink(agent.storage)
        run = asyncio.ensure_future(run_with(agent, sink, 10))
        await sink.until_held(3)
        await asyncio.sleep(0)  # the loop had its chance to go on: it must be waiting for room
        during = agent.status()
        sink.gate.set()
        return await asyncio.wait_for(run, WAIT_S), during

    result, during = asyncio.run(scenario())
    # Three cycles ran and sent their checkpoints with none acknowledged; the fourth waited for room.
    assert during["cycle"] == 3 and during["checkpoint_id"] is None
    assert result["status"] == "completed" and result["cycles"] == 10
    pre = [(c, i) for e, c, i in seen if e == "pre_checkpoint"]
    post = [(c, i) for e, c, i in seen if e == "post_checkpoint"]
    assert post == pre  # every checkpoint acknowledged, in the order sent, the final one last
    assert [c for c, _ in pre] == list(range(1, 11))
    final = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert final.cycle == 10 and final.parent_id == pre[-2][1]  # the chain runs through the write-behind ones
    assert [c.cycle for c in kr.list_checkpoints(tmp_path, agent=agent.name)] == list(range(1, 11))


def test_a_held_save_that_fails_fails_the_run_at_its_acknowledgement_naming_the_last_acknowledged(tmp_path: Path) -> None:
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path, checkpoint_frequency=1, checkpoints_in_flight=3))
    seen = hooked(agent)

    async def scenario() -> Any:
        sink = HeldSink(agent.storage, fail_cycle=2)
        run = asyncio.ensure_future(run_with(agent, sink, 10))
        await sink.until_held(3)
        sink.gate.set()
        return await asyncio.wait_for(run, WAIT_S)

    result = asyncio.run(scenario())
    assert result["status"] == "failed" and type(result["error"]) is kr.CheckpointStorageError
    assert "cycle 2 is refused" in str(result["error"])
    sent = {c: i for e, c, i in seen if e == "pre_checkpoint"}
    # The one after the failed one was still held, and whole: the newest checkpoint the sink has.
    assert [c for e, c, _ in seen if e == "post_checkpoint"] == [1, 3]
    assert result["checkpoint_id"] == sent[3]
    assert kr.load_checkpoint(sent[3], storage_path=tmp_path).state["n"] == 3
    assert sent[2] not in {c.id for c in kr.list_checkpoints(tmp_path)}
    assert result["cycles"] >= 3  # the run had gone on while the failed save was in flight


@pytest.mark.parametrize(("in_flight", "keeps_order"), [(1, True), (3, False)])
def test_by_default_or_where_order_is_not_kept_each_save_is_acknowledged_before_the_next_cycle(
    tmp_path: Path, in_flight: int, keeps_order: bool
) -> None:
    agent = Counter(config=kr.AutonomousConfig(storage_path=tmp_path, checkpoint_frequency=1, checkpoints_in_flight=in_flight))

    async def scenario() -> dict[str, Any]:
        sink = HeldSink(agent.storage)
        sink.keeps_order = keeps_order
        run = asyncio.ensure_future(run_with(agent, sink, 5))
        await sink.until_held(1)
        await asyncio.sleep(0)
        during = agent.status()
        sink.gate.set()
        await asyncio.wait_for(run, WAIT_S)
        return during

    assert asyncio.run(scenario())["cycle"] == 1  # held at its first save


@pytest.mark.parametrize("bad", [0, -1, 65, 1.5, "many"])
def test_checkpoints_in_flight_is_a_count_from_1_to_64(bad: Any) -> None:
    with pytest.raises(kr.ConfigError, match="checkpoints_in_flight"):
        kr.AutonomousConfig(checkpoints_in_flight=bad)
