"""The run's observer seam, and a stop's provenance in the result and in one log line (no Ray)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kaizen_ray as kr
from kaizen_ray.core._local_budget import LocalBudgetClient
from kaizen_ray.core._observer import RunObserver
from kaizen_ray.core.context import FileCheckpointSink
from kaizen_ray.core.results import forwarded_by, run_result
from tests._support.agents import WAIT_S, AwaitsAtCycle


class Recording(RunObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_phase(self, old: str, new: str) -> None:
        self.events.append(("phase", old, new))

    def on_cycle(self, cycle: int) -> None:
        self.events.append(("cycle", cycle))

    def on_cost(self, amount: float) -> None:
        self.events.append(("cost", amount))

    def on_interrupt(self, source: str, mode: str) -> None:
        self.events.append(("interrupt", source, mode))


class Spends(kr.BaseAutonomousAgent):
    """Three cycles, each charging 0.25; cycle 2 awaits ``gate`` when set (so a test can interrupt there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_two = threading.Event()

    def initial_state(self, task: Any) -> int:
        return 0

    async def step(self, state: int, ctx: kr.StepContext) -> kr.StepResult:
        ctx.charge(0.25)
        if ctx.cycle == 2:
            self.at_two.set()
        return kr.StepResult(state + 1, done=state + 1 >= 3, output=state + 1)


def _run(agent: kr.BaseAutonomousAgent, observer: RunObserver, task: Any = None) -> dict[str, Any]:
    run = agent.new_run(sink=FileCheckpointSink(agent.storage), budget=LocalBudgetClient(agent.interrupt_manager))
    run.observer = observer
    return asyncio.run(run.execute(task))


def test_observer_hears_phases_committed_cycles_and_spend(tmp_path):
    obs = Recording()
    result = _run(Spends(config={"storage_path": tmp_path}), obs)
    assert result["status"] == "completed"
    assert obs.events == [
        ("phase", "idle", "running"),
        ("cost", 0.25), ("cycle", 1),
        ("cost", 0.25), ("cycle", 2),
        ("cost", 0.25), ("cycle", 3),
        ("phase", "running", "finished"),
    ]  # fmt: skip


def test_observer_hears_each_accepted_interrupt_once_and_the_stopping_phase(tmp_path):
    agent = AwaitsAtCycle(config={"storage_path": tmp_path}, block_at=2)
    obs = Recording()

    def stop() -> None:
        assert agent.entered.wait(WAIT_S)
        agent.interrupt_manager.request_interrupt("user", "graceful", "first")
        agent.interrupt_manager.request_interrupt("system", "immediate", "escalate")
        agent.interrupt_manager.request_interrupt("user", "immediate", "refused")  # not accepted: not heard

    threading.Thread(target=stop, daemon=True).start()
    result = _run(agent, obs)
    assert result["status"] == "interrupted" and result["cycles"] == 1
    assert [e for e in obs.events if e[0] == "interrupt"] == [("interrupt", "user", "graceful"), ("interrupt", "system", "immediate")]
    assert [e for e in obs.events if e[0] == "phase"] == [
        ("phase", "idle", "running"), ("phase", "running", "stopping"), ("phase", "stopping", "finished"),
    ]  # fmt: skip
    assert [e for e in obs.events if e[0] == "cycle"] == [("cycle", 1)]  # the cancelled cycle 2 is not counted


def test_a_forwarded_stop_names_its_whole_chain_in_the_result_and_in_one_log_line(tmp_path, caplog):
    # driver Ctrl+C -> the driver's manager -> the supervisor's manager -> the agent, as on Ray.
    agent = AwaitsAtCycle(config={"storage_path": tmp_path}, name="w1", block_at=2)
    driver, swarm = kr.InterruptManager(name="driver:swarm"), kr.InterruptManager(name="swarm")
    driver.add_child(swarm)
    swarm.add_child(agent.interrupt_manager)

    def press() -> None:
        assert agent.entered.wait(WAIT_S)
        driver.request_interrupt("user", "immediate", "Ctrl+C", {"signal": "SIGINT", "count": 2})

    threading.Thread(target=press, daemon=True).start()
    with caplog.at_level(logging.INFO, logger="kaizen_ray"):
        result = asyncio.run(agent.run_autonomous())
    assert result["status"] == "interrupted"
    assert result["forwarded_by"] == ["SIGINT", "driver:swarm", "swarm"]
    assert (result["interrupt_reason"].source.value, result["mode"]) == ("user", "immediate")
    ends = [r for r in caplog.records if r.name.startswith("kaizen_ray") and r.getMessage().startswith("run of w1 ended")]
    assert len(ends) == 1 and ends[0].levelno == logging.INFO
    assert ends[0].getMessage() == (
        f"run of w1 ended interrupted at cycle 1: stop 'Ctrl+C' source=user mode=immediate "
        f"forwarded_by=SIGINT>driver:swarm>swarm checkpoint={result['checkpoint_id']}"
    )


def test_a_completed_run_logs_one_end_line_without_a_stop(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="kaizen_ray"):
        result = asyncio.run(Spends(config={"storage_path": tmp_path}, name="s1").run_autonomous())
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run of s1 ended")]
    assert ends == [f"run of s1 ended completed at cycle 3 checkpoint={result['checkpoint_id']}"]
    assert result["forwarded_by"] is None


def test_origins_are_read_from_the_reason_metadata():
    def origin(source: str, **meta: Any) -> str:
        return forwarded_by(kr.InterruptReason(source=source, metadata=meta))[0]

    assert origin("system", handler="timeout") == "timer"
    assert origin("system", handler="budget", scope="swarm/b1") == "budget:swarm/b1"
    assert origin("system", handler="escalation", cause="max_restarts") == "escalation:max_restarts"
    assert origin("user", by="kaizen-ray") == "cli"
    assert origin("user", signal="SIGTERM", count=1) == "SIGTERM"
    assert origin("programmatic", supervisor="swarm", cause="restart") == "restart:swarm"
    assert origin("programmatic") == "programmatic"
    assert forwarded_by(None) is None
    # Every result builder carries it: the watcher's "killed" results too.
    reason = kr.InterruptReason(source="system", metadata={"handler": "timeout", "forwarded_by": ["swarm"]})
    assert run_result("swarm/w1", "killed", interrupt_reason=reason)["forwarded_by"] == ["timer", "swarm"]
