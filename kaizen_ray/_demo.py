"""The README's main job: agents that stop on time and resume losing nothing.

The demo speaks through a ``say`` callable (the CLI passes ``print``), so the
library itself never prints.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from typing import Any

from kaizen_ray.core.agent import BaseAutonomousAgent, StepResult
from kaizen_ray.core.config import AutonomousConfig
from kaizen_ray.core.context import StepContext
from kaizen_ray.core.checkpoint import list_checkpoints
from kaizen_ray.core.config import ChildSpec, SupervisorConfig
from kaizen_ray.core.handlers import TimeoutInterruptHandler

__all__ = ["Researcher", "run_in_process_demo", "run_swarm_demo"]


class Researcher(BaseAutonomousAgent):
    """Writes one note per cycle on its topic, blocking (a plain ``def`` step) for ``pause_s``."""

    pause_s = 0.25
    notes_needed = 8

    def initial_state(self, task: Any) -> dict[str, Any]:
        return {"topic": task, "notes": []}

    def step(self, state: dict[str, Any], ctx: StepContext) -> StepResult:
        time.sleep(self.pause_s)  # stands for a blocking LLM or tool call
        ctx.charge(0.01)
        notes = [*state["notes"], f"note {ctx.cycle} on {state['topic']}"]
        return StepResult({**state, "notes": notes}, done=len(notes) >= self.notes_needed, output=notes)


def run_in_process_demo(say: Callable[[str], Any], storage_path: str | None = None) -> dict[str, Any]:
    """Interrupt an agent with a 1 s timeout, then resume it from its checkpoint."""
    storage_path = storage_path or tempfile.mkdtemp(prefix="kaizen-demo-")
    config = AutonomousConfig(storage_path=storage_path, checkpoint_frequency=1)

    say(f"checkpoints go to {storage_path}")
    agent = Researcher(config=config, name="researcher")
    agent.interrupt_manager.add_handler(TimeoutInterruptHandler(timeout_seconds=1.0))
    say("run 1: a researcher that needs 8 notes, with a 1 s timeout ...")
    first = asyncio.run(agent.run_autonomous("interrupts"))
    reason = first["interrupt_reason"]
    say(
        f"  {first['status']} after {first['cycles']} cycles by {reason.source.value}/{reason.metadata['handler']}"
        f" ({reason.mode.value}): {reason.message}"
    )
    say(f"  checkpoint {first['checkpoint_id']} holds {len(first['state']['notes'])} notes")

    say("run 2: a fresh agent resumes from that checkpoint, no timeout ...")
    resumed = Researcher(config=config, name="researcher")
    second = asyncio.run(resumed.run_autonomous(resume_from_checkpoint=first["checkpoint_id"]))
    say(f"  {second['status']} after {second['cycles']} cycles in all, cost {second['cost']:.2f}")
    say(f"  final checkpoint {second['checkpoint_id']}; notes: {len(second['output'])}")
    return {"first": first, "second": second}


TOPICS = ("interrupts", "checkpoints", "supervision")


def _notes(result: dict[str, Any]) -> int:
    state = result.get("state") or {}
    return len(state.get("notes", []))


def run_swarm_demo(say: Callable[[str], Any], storage_path: str | None = None, *, dashboard: bool = False) -> dict[str, Any]:
    """A supervised swarm of three researchers on an embedded local Ray: interrupt, then resume."""
    import ray

    from kaizen_ray.runtime.supervisor import Supervisor

    storage_path = storage_path or tempfile.mkdtemp(prefix="kaizen-demo-")
    config = AutonomousConfig(storage_path=storage_path, checkpoint_frequency=1)
    say(f"starting a local Ray (2 CPUs); checkpoints go to {storage_path}")
    context = ray.init(address="local", num_cpus=2, namespace="kaizen-demo", include_dashboard=dashboard, log_to_driver=False)
    if dashboard and getattr(context, "dashboard_url", None):
        say(f"dashboard: http://{context.dashboard_url}")
    try:
        swarm = Supervisor.spawn(
            "swarm",
            children=[ChildSpec(Researcher, name=topic, config=config, task=topic) for topic in TOPICS],
            config=SupervisorConfig(storage_path=storage_path),
        )
        say(f"1. {swarm!r} starts {len(TOPICS)} researchers, each needing {Researcher.notes_needed} notes")
        ref = swarm.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until every researcher has checkpointed twice
            counts = [len(list_checkpoints(storage_path, agent=f"swarm/{t}")) for t in TOPICS]
            if min(counts) >= 2:
                break
            time.sleep(0.1)
        say("2. every researcher is under way: interrupting the swarm (PROGRAMMATIC, GRACEFUL) ...")
        accepted = swarm.request_interrupt("programmatic", "graceful", "demo: stop the swarm")
        first = ray.get(ref)
        say(f"   accepted={accepted}; swarm {first['status']}, manifest {first['checkpoint_id']}")
        for name, child in first["children"].items():
            reason = child["interrupt_reason"]
            via = reason.metadata.get("propagated_from") if reason else None
            say(f"   - {name}: {child['status']} after {child['cycles']} cycles, {_notes(child)} notes (forwarded from {via})")
        say("3. resuming the whole swarm from its manifest checkpoint ...")
        second = swarm.run(resume_from_checkpoint=first["checkpoint_id"])
        say(f"   swarm {second['status']}, restarts {second['restarts']}, manifest {second['checkpoint_id']}")
        for name, child in second["children"].items():
            say(f"   - {name}: {child['status']} after {child['cycles']} cycles in all, {_notes(child)} notes, cost {child['cost']:.2f}")
        say("4. nothing was lost: every researcher finished from where it stopped. (Ctrl+C during swarm.run(): graceful, then immediate.)")
        return {"first": first, "second": second}
    finally:
        ray.shutdown()
