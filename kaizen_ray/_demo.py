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
from kaizen_ray.core.handlers import TimeoutInterruptHandler

__all__ = ["Researcher", "run_in_process_demo"]


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
