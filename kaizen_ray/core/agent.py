"""The agent users subclass, what a step returns, and the agent's phases.

The cycle loop itself, with its cancellation semantics, is in
:mod:`kaizen_ray.core._loop`; ``run_autonomous`` runs it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from kaizen_ray.core.checkpoint import FileCheckpointStorage, validate_agent_name
from kaizen_ray.core.config import AutonomousConfig
from kaizen_ray.core.context import BudgetClient, CheckpointSink, FileCheckpointSink, LocalBudgetClient, StepContext
from kaizen_ray.core.hooks import HookManager
from kaizen_ray.core.interrupts import InterruptManager

__all__ = ["AgentPhase", "BaseAutonomousAgent", "StepResult", "TRANSITIONS"]


@dataclass(frozen=True)
class StepResult:
    """What one step returns: the new state, whether the task is done, and its output.

    >>> StepResult({"n": 1}).done
    False
    """

    state: Any
    done: bool = False
    output: Any = None


class AgentPhase(StrEnum):
    """Where an agent is in its life (shown by ``status()`` and the actor's repr)."""

    IDLE = "idle"  # built, not running
    RUNNING = "running"  # the cycle loop is going
    STOPPING = "stopping"  # an interrupt was accepted; finishing, checkpointing
    FINISHED = "finished"  # the last run returned; a new run (resume) may start


TRANSITIONS: dict[AgentPhase, frozenset[AgentPhase]] = {
    AgentPhase.IDLE: frozenset({AgentPhase.RUNNING}),
    AgentPhase.RUNNING: frozenset({AgentPhase.STOPPING, AgentPhase.FINISHED}),
    AgentPhase.STOPPING: frozenset({AgentPhase.FINISHED}),
    AgentPhase.FINISHED: frozenset({AgentPhase.RUNNING}),
}


class BaseAutonomousAgent:
    """Subclass it and write ``step``; ``run_autonomous`` runs the cycle loop.

    >>> class Counter(BaseAutonomousAgent):
    ...     def initial_state(self, task):
    ...         return {"n": 0, "goal": task}
    ...     async def step(self, state, ctx):
    ...         n = state["n"] + 1
    ...         return StepResult({**state, "n": n}, done=n >= state["goal"], output=n)
    >>> import tempfile
    >>> cfg = AutonomousConfig(storage_path=tempfile.mkdtemp())
    >>> result = asyncio.run(Counter(config=cfg).run_autonomous(3))
    >>> result["status"], result["output"], result["cycles"]
    ('completed', 3, 3)
    """

    #: In-process, a step that outlives ``immediate_shutdown_timeout`` is
    #: abandoned; the Ray runtime sets this False and kills the actor instead.
    abandon_stuck_steps: ClassVar[bool] = True

    def __init__(
        self,
        config: AutonomousConfig | None = None,
        *,
        name: str | None = None,
        interrupt_manager: InterruptManager | None = None,
        checkpoint_sink: CheckpointSink | None = None,
        budget: BudgetClient | None = None,
    ) -> None:
        if config is None:
            config = AutonomousConfig()
        elif isinstance(config, dict):
            config = AutonomousConfig(**config)
        elif not isinstance(config, AutonomousConfig):
            raise TypeError(f"config must be an AutonomousConfig or a dict, got {type(config).__name__}: {config!r}")
        self.config = config
        self.name = validate_agent_name(name or type(self).__name__)
        self.interrupt_manager = interrupt_manager or InterruptManager(name=self.name)
        self.hooks = HookManager(timeout_s=config.hook_timeout_s)
        self.storage = FileCheckpointStorage(config.storage_path)
        self._sink = checkpoint_sink or FileCheckpointSink(self.storage)
        self._budget = budget or LocalBudgetClient(self.interrupt_manager)
        self.phase = AgentPhase.IDLE
        self.cycle = 0
        self.cost = 0.0
        self.last_checkpoint_id: str | None = None
        self.cycle_in_flight: int | None = None  # the cycle whose step is running now, if any
        # The manager generation a finished run already stopped for: a new run
        # (a resume) starts clear of it, but not of a request made since.
        self._handled_generation: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, phase={self.phase.value}, cycle={self.cycle})"

    @classmethod
    def spawn(
        cls,
        config: AutonomousConfig | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        namespace: str | None = None,
        lifetime: str | None = None,
        **actor_options: Any,
    ) -> Any:
        """Start this agent in its own Ray actor; returns an ``AgentHandle``.

        ``lifetime="detached"`` keeps it running after the driver exits (in
        ``namespace``, default ``"kaizen"``), to be found with ``kr.get_agent``.
        Other keyword arguments go to Ray's ``.options()`` (``num_cpus``, ...).

        >>> handle = MyAgent.spawn(config=AutonomousConfig(), name="a1")  # doctest: +SKIP
        >>> handle.run("task")["status"]                                   # doctest: +SKIP
        'completed'
        """
        # The Ray shell is imported here, on use: the core itself never imports Ray.
        from kaizen_ray.runtime.handles import spawn_agent

        return spawn_agent(cls, config, name=name, namespace=namespace, lifetime=lifetime, **actor_options)

    # -- what users write ------------------------------------------------------

    def initial_state(self, task: Any) -> Any:
        """The state before the first cycle. Default: ``{"task": task}``."""
        return {"task": task}

    async def step(self, state: Any, ctx: StepContext) -> StepResult:
        """One cycle: return the new state. ``async def`` or plain ``def`` (run in a thread)."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(self, state, ctx)")

    # -- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot of the agent: phase, cycles done, the cycle in flight, cost, interrupt state, budget."""
        mgr = self.interrupt_manager
        return {
            "agent": self.name,
            "phase": self.phase.value,
            "cycle": self.cycle,
            "cycle_in_flight": self.cycle_in_flight,
            "cost": self.cost,
            "interrupted": mgr.is_interrupted(),
            "mode": mgr.mode.value if mgr.mode else None,
            "interrupt_reason": mgr.reason,
            "checkpoint_id": self.last_checkpoint_id,
            "budget": self._budget.snapshot(),
        }

    def _move(self, phase: AgentPhase) -> None:
        if phase is self.phase:
            return
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"agent {self.name!r} cannot go from {self.phase.value} to {phase.value}")
        self.phase = phase

    # -- the loop -------------------------------------------------------------------

    async def run_autonomous(self, task: Any = None, resume_from_checkpoint: str | None = None) -> dict[str, Any]:
        """Run cycles until done, ``max_cycles``, an interrupt or a failure; return the result dict.

        ``resume_from_checkpoint``: a checkpoint id or ``"latest"`` (this agent's
        newest good checkpoint); the run continues from its state, cycle count
        and cost.
        """
        if self.phase in (AgentPhase.RUNNING, AgentPhase.STOPPING):
            raise RuntimeError(f"agent {self.name!r} is already running")
        from kaizen_ray.core._loop import Run  # the loop imports this module's types

        return await Run(self, asyncio.get_running_loop()).execute(task, resume_from_checkpoint)
