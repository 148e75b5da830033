"""The agent users subclass: its step, its first state, its manager and hooks.

The agent is the user's code and configuration; what one run changes (cycle,
cost, phase, the committed state, the result) lives in its
:class:`~kaizen_ray.core.run.AgentRun`, with the loop and its cancellation
semantics. ``run_autonomous`` runs one in-process; on Ray the agent's actor
runs them, with the checkpoint store and the budget actor as its seams.
"""

from __future__ import annotations

import asyncio  # noqa: F401 - the doctests run agents with asyncio.run
from collections.abc import Callable
from typing import Any, ClassVar

from kaizen_ray.core._local_budget import LocalBudgetClient
from kaizen_ray.core.checkpoint import FileCheckpointStorage, validate_agent_name
from kaizen_ray.core.config import AutonomousConfig, coerce_config
from kaizen_ray.core.context import BudgetClient, CheckpointSink, FileCheckpointSink, StepContext, StepResult
from kaizen_ray.core.hooks import HookManager
from kaizen_ray.core.interrupts import InterruptManager
from kaizen_ray.core.run import TRANSITIONS, AgentPhase, AgentRun

__all__ = ["AgentPhase", "BaseAutonomousAgent", "StepResult", "TRANSITIONS", "set_spawner"]

# How ``spawn`` starts an actor. The core never imports Ray or the runtime:
# the package above both (``kaizen_ray/__init__``) plugs the runtime in here.
_spawner: Callable[..., Any] | None = None


def set_spawner(spawner: Callable[..., Any]) -> None:
    """Install what ``BaseAutonomousAgent.spawn`` calls: ``spawner(agent_cls, config, name=..., **kwargs)``.

    >>> set_spawner(_spawner)  # the package installs the Ray runtime's own at import
    """
    global _spawner
    _spawner = spawner


class BaseAutonomousAgent:
    """Subclass it and write ``step``; ``run_autonomous`` runs the cycle loop in this process.

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

    #: What a ChildSpec may supervise (core.config checks it without importing this module).
    _kaizen_kind: ClassVar[str] = "agent"

    def __init__(
        self,
        config: AutonomousConfig | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        interrupt_manager: InterruptManager | None = None,
    ) -> None:
        self.config = coerce_config(config)
        self.name = validate_agent_name(type(self).__name__ if name is None else name)
        self.interrupt_manager = interrupt_manager or InterruptManager(name=self.name)
        # An agent's handlers act during its runs only (armed at each start).
        self.interrupt_manager.scope_to_runs()
        self.hooks = HookManager(timeout_s=self.config.hook_timeout_s)
        self.storage = FileCheckpointStorage(self.config.storage_path, key=self.config.checkpoint_key)
        self._run: AgentRun | None = None  # the current run, else the last one

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    @property
    def hook_manager(self) -> HookManager:
        """The same object as :attr:`hooks` (the name kailash-kaizen code uses)."""
        return self.hooks

    @classmethod
    def spawn(cls, config: AutonomousConfig | dict[str, Any] | None = None, *, name: str | None = None, **kwargs: Any) -> Any:
        """Start this agent in its own Ray actor; returns an ``AgentHandle`` once the actor is up.

        Keywords: ``namespace=``; ``lifetime="detached"`` (keeps running after
        the driver exits, in namespace ``"kaizen"`` unless given);
        ``actor_options={"num_cpus": 1, ...}`` for Ray's ``.options()``; every
        other keyword (``signature=``, ``tools=``, ...) goes to this class's
        constructor inside the actor.

        >>> handle = MyAgent.spawn(config=AutonomousConfig(), name="a1")  # doctest: +SKIP
        >>> handle.run("task")["status"]                                   # doctest: +SKIP
        'completed'
        """
        if _spawner is None:
            raise RuntimeError("no runtime to spawn into: import kaizen_ray (which installs the Ray runtime)")
        return _spawner(cls, config, name=name, **kwargs)

    # -- what users write ------------------------------------------------------

    def initial_state(self, task: Any) -> Any:
        """The state before the first cycle. Default: ``{"task": task}``."""
        return {"task": task}

    async def step(self, state: Any, ctx: StepContext) -> StepResult:
        """One cycle: return the new state. ``async def`` or plain ``def`` (run in a thread)."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(self, state, ctx)")

    def result_extras(self, state: Any) -> dict[str, Any]:
        """Extra keys for the result dict of a run that ended in ``state`` (an LLM agent adds ``usage``). Default: none."""
        return {}

    # -- runs ----------------------------------------------------------------------

    def new_run(self, *, sink: CheckpointSink, budget: BudgetClient, abandon_stuck_steps: bool = True) -> AgentRun:
        """A new :class:`AgentRun` of this agent, continuing from the last one. Refused while one is going."""
        if self._run is not None and self._run.running:
            raise RuntimeError(f"agent {self.name!r} is already running (a second run must wait for the first to end)")
        self._run = AgentRun(self, sink=sink, budget=budget, previous=self._run, abandon_stuck_steps=abandon_stuck_steps)
        return self._run

    async def run_autonomous(self, task: Any = None, resume_from_checkpoint: str | None = None) -> dict[str, Any]:
        """Run cycles until done, ``max_cycles``, an interrupt or a failure; return the result dict.

        ``resume_from_checkpoint``: a checkpoint id or ``"latest"`` (this agent's
        newest good checkpoint); the run continues from its state, cycle count
        and cost.
        """
        run = self.new_run(sink=FileCheckpointSink(self.storage), budget=LocalBudgetClient(self.interrupt_manager))
        return await run.execute(task, resume_from_checkpoint)

    # -- status ----------------------------------------------------------------------

    @property
    def phase(self) -> AgentPhase:
        """The phase of the current (or last) run; IDLE before the first."""
        return self._run.phase if self._run is not None else AgentPhase.IDLE

    @property
    def cycle(self) -> int:
        """Cycles done by the current (or last) run, resumed cycles included."""
        return self._run.cycle if self._run is not None else 0

    @property
    def cost(self) -> float:
        """Spend of the current (or last) run, resumed spend included."""
        return self._run.cost if self._run is not None else 0.0

    @property
    def last_checkpoint_id(self) -> str | None:
        """The newest checkpoint this agent wrote or resumed from."""
        return self._run.checkpoint_id if self._run is not None else None

    def status(self) -> dict[str, Any]:
        """A snapshot: phase, cycles done, the cycle in flight, cost, interrupt state, budget."""
        if self._run is not None:
            return self._run.status()
        idle = AgentRun(self, sink=FileCheckpointSink(self.storage), budget=LocalBudgetClient(self.interrupt_manager))
        return idle.status()

