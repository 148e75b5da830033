"""One run of one agent: the cycle loop, with its state and its result (a resume is a new run).

Cancellation semantics, precisely:

* One cycle is one call of ``step(state, ctx)``. Only the state a step
  *returns* is committed; a cycle that does not return leaves the committed
  state exactly as it was.
* Interrupts are checked at every cycle boundary (before each step).
* PRE_INTERRUPT hooks run as soon as the run learns of its first interrupt,
  on the run's event loop, also while a GRACEFUL cycle is still in flight;
  POST_INTERRUPT hooks run after the stop's checkpoint is durable, with its id.
  Neither ever holds up the checkpoint: each hook is bounded by
  ``hook_timeout_s``.
* GRACEFUL: the cycle in flight runs to its end and is committed; the run then
  checkpoints and stops. If the stop has not finished within
  ``graceful_shutdown_timeout`` of the interrupt, it is escalated to IMMEDIATE
  (SYSTEM, ``metadata["handler"] == "escalation"``) from the shared deadline
  thread, which a blocked event loop cannot delay.
* The cycles of a run share one task, whose context is a copy of the
  caller's: a step that never suspends costs no turn of the event loop, and
  what a step sets in a context variable lasts the run, never reaching the
  caller. Every step gets the same :class:`StepContext`, set to its cycle.
* IMMEDIATE: an async step is cancelled (it sees ``CancelledError`` at its
  next await) and its result, if it returns one anyway, is discarded; the
  run does not wait for it to unwind before it checkpoints. Precisely: a
  cycle is committed only if no IMMEDIATE stop was accepted before its
  result reached the loop (a step that never suspends cannot be cancelled,
  so an IMMEDIATE stop accepted meanwhile in another thread discards its
  result when it returns). A sync step runs in a thread, which
  cannot be cancelled: the run checkpoints first, then waits up to
  ``immediate_shutdown_timeout`` for the thread and discards its result
  (in-process the thread is then abandoned; on Ray the actor is killed).
  The checkpoint holds the state after the last completed cycle.
* A step that raises ends the run ``"failed"``, with the exception (type and
  chain intact) in the result and a checkpoint of the last committed state.
* Every run ends with a checkpoint, durable before :meth:`AgentRun.execute`
  returns, except an interrupted run with ``checkpoint_on_interrupt=False``.
* Handlers on the agent's manager are armed when the run starts and disarmed
  when it ends, whatever its status.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kaizen_ray.core._observer import NULL_OBSERVER, RunObserver
from kaizen_ray.core._run_checkpoints import RunCheckpoints
from kaizen_ray.core._run_cycles import RunCycles, TakenOver
from kaizen_ray.core._saves_behind import SavesBehind
from kaizen_ray.core._threads import DaemonCall
from kaizen_ray.core.context import BudgetClient, CheckpointSink, StepContext
from kaizen_ray.core.deadlines import shared_scheduler
from kaizen_ray.core.hooks import HookContext, HookEvent
from kaizen_ray.core.interrupts import InterruptedError, InterruptManager, InterruptMode, InterruptReason, InterruptSource
from kaizen_ray.core.results import RunStatus, end_line, run_result

if TYPE_CHECKING:  # the agent module imports this one; the type is only for annotations
    from kaizen_ray.core.agent import BaseAutonomousAgent

logger = logging.getLogger("kaizen_ray.agent")

__all__ = ["AgentPhase", "AgentRun", "TRANSITIONS", "clear_if_handled"]


class AgentPhase(StrEnum):
    """Where an agent is in its life (shown by ``status()``)."""

    IDLE = "idle"  # built, never run
    RUNNING = "running"  # the cycle loop is going
    STOPPING = "stopping"  # an interrupt ended the loop; checkpointing, running hooks
    FINISHED = "finished"  # the last run returned; a new run (a resume) may start


TRANSITIONS: dict[AgentPhase, frozenset[AgentPhase]] = {
    AgentPhase.IDLE: frozenset({AgentPhase.RUNNING}),
    AgentPhase.RUNNING: frozenset({AgentPhase.STOPPING, AgentPhase.FINISHED}),
    AgentPhase.STOPPING: frozenset({AgentPhase.FINISHED}),
    AgentPhase.FINISHED: frozenset({AgentPhase.RUNNING}),
}

def clear_if_handled(manager: InterruptManager, handled_generation: int | None) -> None:
    """Start a new run clear of the interrupt the previous run already stopped for.

    A request accepted since (a higher generation) still stops the new run at
    its first boundary: interrupts are level-triggered.

    >>> m = InterruptManager()
    >>> _ = m.request_interrupt("user")
    >>> clear_if_handled(m, m.generation); m.is_interrupted()
    False
    """
    if manager.is_interrupted() and manager.generation == handled_generation:
        manager.reset()


class AgentRun(RunCycles, RunCheckpoints):
    """One run of one agent: its cycle, cost, phase and committed state, the loop, and the result.

    The agent is the user's code (``initial_state``, ``step``, hooks, config);
    everything a run changes lives here. ``sink`` and ``budget`` are where
    checkpoints and spend go: files and local handlers in-process, the store
    and budget actors on Ray. ``previous`` is the agent's last run, whose
    cycle, checkpoint and handled interrupt this one starts from.

    >>> from kaizen_ray.core.agent import BaseAutonomousAgent, StepResult
    >>> class Once(BaseAutonomousAgent):
    ...     async def step(self, state, ctx):
    ...         return StepResult(state, done=True, output="ok")
    >>> import tempfile
    >>> agent = Once(config={"storage_path": tempfile.mkdtemp()})
    >>> asyncio.run(agent.run_autonomous("t"))["output"]
    'ok'
    >>> agent.status()["phase"], agent.status()["cycle"]
    ('finished', 1)
    """

    def __init__(
        self,
        agent: BaseAutonomousAgent,
        *,
        sink: CheckpointSink,
        budget: BudgetClient,
        previous: AgentRun | None = None,
        abandon_stuck_steps: bool = True,
    ) -> None:
        self.agent = agent
        self.name = agent.name
        self.config = agent.config
        self.manager = agent.interrupt_manager
        self.sink = sink
        # Write-behind checkpoints not acknowledged yet: several only where the sink keeps them in order.
        self._behind = SavesBehind(sink, agent.config.checkpoints_in_flight if getattr(sink, "keeps_order", False) else 1)
        self.budget = budget
        # In-process a step that outlives immediate_shutdown_timeout is abandoned;
        # on Ray it costs the actor instead (the watcher kills it).
        self.abandon_stuck_steps = abandon_stuck_steps
        self.phase = AgentPhase.IDLE
        self.cycle = previous.cycle if previous else 0
        self.cost = previous.cost if previous else 0.0
        self.checkpoint_id: str | None = previous.checkpoint_id if previous else None
        self.cycle_in_flight: int | None = None
        self.handled_generation: int | None = None
        # The interrupt the previous run stopped for: cleared as this one starts (see clear_if_handled).
        self.previous_handled_generation = previous.handled_generation if previous else None
        self._parent_id: str | None = None
        self._state: Any = None
        self._output: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pre_interrupt: asyncio.Future[Any] | None = None
        # The cycles run in their own task (one per run); the run waits on _settled: set when that task
        # ends, or when an IMMEDIATE stop cancels the step it is awaiting (the run then goes on without it).
        self._cycles_task: asyncio.Task[Any] | None = None
        self._settled: asyncio.Future[None] | None = None
        self._in_step = False  # the cycles' task is suspended inside a step: only then may IMMEDIATE cancel it
        self._call: DaemonCall | None = None  # a sync step's thread, while it runs
        self._taken_over: TakenOver | None = None
        # A KeyboardInterrupt or SystemExit out of the cycles (a third Ctrl+C while a step held the main
        # thread, a sys.exit() in a step): the run stops, checkpoints and cleans up, then raises it again.
        self._fatal: KeyboardInterrupt | SystemExit | None = None
        self._ctx = StepContext(agent_name=agent.name, cycle=0, manager=agent.interrupt_manager, budget=budget)
        self._escalation_key = ("escalation", id(self))
        self._sync_step = not inspect.iscoroutinefunction(agent.step)
        # Observer seam (metrics on Ray): the runtime sets it on the run before execute().
        self.observer: RunObserver = previous.observer if previous else NULL_OBSERVER

    def __repr__(self) -> str:
        return f"AgentRun({self.name!r}, {self.phase.value}, cycle={self.cycle})"

    @property
    def running(self) -> bool:
        """True from the start of :meth:`execute` until it returns."""
        return self.phase in (AgentPhase.RUNNING, AgentPhase.STOPPING)

    def status(self) -> dict[str, Any]:
        """A snapshot: phase, cycles done, the cycle in flight, cost, interrupt state, budget."""
        mgr = self.manager
        return {
            "agent": self.name,
            "phase": self.phase.value,
            "cycle": self.cycle,
            "cycle_in_flight": self.cycle_in_flight,
            "cost": self.cost,
            "interrupted": mgr.is_interrupted(),
            "mode": mgr.mode.value if mgr.mode else None,
            "interrupt_reason": mgr.reason,
            "checkpoint_id": self.checkpoint_id,
            "budget": self.budget.snapshot(),
        }

    def _move(self, phase: AgentPhase) -> None:
        if phase is self.phase:
            return
        if phase not in TRANSITIONS[self.phase]:
            raise RuntimeError(f"run of {self.name!r} cannot go from {self.phase.value} to {phase.value}")
        old, self.phase = self.phase, phase
        self.observer.on_phase(old.value, phase.value)

    # -- interrupts, from any thread (signal dispatcher, deadline thread, Ray control thread) --

    def _on_interrupt(self, reason: InterruptReason, mode: InterruptMode) -> None:
        loop = self._loop
        assert loop is not None
        try:
            if mode is InterruptMode.IMMEDIATE:
                loop.call_soon_threadsafe(self._on_immediate)
            loop.call_soon_threadsafe(self._start_pre_interrupt)
        except RuntimeError:  # the run's loop is closed: the run is over
            return
        self.observer.on_interrupt(reason.source.value, mode.value)  # after the loop is woken: a metric can wait
        if mode is InterruptMode.IMMEDIATE:
            shared_scheduler().cancel(self._escalation_key)
        else:
            timeout = self.config.graceful_shutdown_timeout
            shared_scheduler().call_later(self._escalation_key, timeout, lambda: self._escalate(timeout))

    def _escalate(self, timeout: float) -> None:
        self.manager.request_interrupt(
            InterruptSource.SYSTEM,
            InterruptMode.IMMEDIATE,
            f"graceful stop of {self.name} did not finish within {timeout}s",
            {"handler": "escalation", "graceful_shutdown_timeout": timeout},
        )

    def _start_pre_interrupt(self) -> None:
        # On the run's loop; once per run, for the first interrupt only.
        if self._pre_interrupt is None and self.manager.is_interrupted():
            self._pre_interrupt = asyncio.ensure_future(self._hook(HookEvent.PRE_INTERRUPT, self._interrupt_data()))

    def _interrupt_data(self, **extra: Any) -> dict[str, Any]:
        reason = self.manager.reason
        if reason is None:
            return dict(extra)
        return {
            "reason": reason.message,
            "source": reason.source.value,
            "mode": (self.manager.mode or reason.mode).value,
            "interrupt_reason": reason,
            **extra,
        }

    # -- the run -------------------------------------------------------------------------

    async def execute(self, task: Any = None, resume_from: str | None = None) -> dict[str, Any]:
        """Run cycles until done, ``max_cycles``, an interrupt or a failure; return the result dict."""
        mgr, cfg = self.manager, self.config
        loop = self._loop = asyncio.get_running_loop()
        clear_if_handled(mgr, self.previous_handled_generation)
        self._move(AgentPhase.RUNNING)
        try:
            if cfg.enable_interrupts:
                mgr.add_listener(self._on_interrupt)
                mgr.arm_handlers()  # a timeout counts from here, the start of this run (all armed, or none)
                if mgr.is_interrupted():  # level-triggered: an earlier request stops this run too
                    self._on_interrupt(mgr.reason, mgr.mode)
            state, output, done = await self._initial(task, resume_from)
        except BaseException:
            # Nothing ran, so there is nothing to checkpoint: undo the start and say why.
            if cfg.enable_interrupts:
                mgr.remove_listener(self._on_interrupt)
            self._end(None)
            raise
        self._state, self._output = state, output
        # One task for all the cycles (its context a copy of this one, as for any task): a step that
        # never suspends costs no turn of the loop, and one that does can be cancelled in place.
        settled = self._settled = loop.create_future()
        cycles = self._cycles_task = loop.create_task(self._cycles(state, output, done))
        cycles.add_done_callback(lambda _: settled.done() or settled.set_result(None))
        cancelled: asyncio.CancelledError | None = None
        try:
            await settled
        except asyncio.CancelledError as exc:
            # The run itself was cancelled (task.cancel(), ray.cancel): stop as
            # IMMEDIATE, checkpoint, then let the cancellation go on.
            cancelled = exc
            mgr.request_interrupt(InterruptSource.PROGRAMMATIC, InterruptMode.IMMEDIATE, "the run was cancelled", {"cancelled": True})
            if self._in_step:
                self._on_immediate()
            elif not cycles.done():
                cycles.cancel()  # at a boundary (a hook, a checkpoint): cut short, as a cancelled run always was
                await asyncio.wait({cycles})
        taken = self._taken_over
        if taken is None:
            status, state, output, done, error = cycles.result()
        else:
            # IMMEDIATE while a step was in flight: the last committed state, whatever the step does now.
            status, state, output, done, error = RunStatus.INTERRUPTED, self._state, self._output, False, None
            self.cycle_in_flight = None
            try:
                await self._account(self._ctx)
            except Exception as exc:  # noqa: BLE001 - a budget that cannot be settled fails the run, as in a cycle
                logger.error("run of %s failed settling cycle %d: %r", self.name, self.cycle + 1, exc, exc_info=exc)
                status, error = RunStatus.FAILED, exc
        return await self._stop(status, state, output, done, error, taken, cancelled)

    async def _stop(
        self,
        status: RunStatus,
        state: Any,
        output: Any,
        done: bool,
        error: BaseException | None,
        taken: TakenOver | None,
        cancelled: asyncio.CancelledError | None,
    ) -> dict[str, Any]:
        mgr, cfg = self.manager, self.config
        if cfg.enable_interrupts:
            mgr.remove_listener(self._on_interrupt)
        if status is RunStatus.INTERRUPTED:
            self._move(AgentPhase.STOPPING)
            self._start_pre_interrupt()
        status, error = await self._settle_behind(status, error)  # before the final checkpoint, every one in flight
        checkpoint_id = None
        if status is not RunStatus.INTERRUPTED or cfg.checkpoint_on_interrupt:
            checkpoint_id, save_error = await self._final_save(state, status, error, output, done)
            if save_error is not None:
                status, error = RunStatus.FAILED, save_error
        if taken is not None:
            # Checkpoint first, then wait for the cancelled step: a step that
            # never ends cannot cost the checkpoint.
            await self._drain(taken)
        if self._pre_interrupt is not None:
            await self._pre_interrupt  # bounded by the hooks' own timeouts
        if status is RunStatus.INTERRUPTED:
            await self._hook(HookEvent.POST_INTERRUPT, self._interrupt_data(checkpoint_id=checkpoint_id))
        self._end(status)
        reason = mgr.reason if status is RunStatus.INTERRUPTED else None
        mode = mgr.mode.value if reason is not None and mgr.mode else None
        # One line per run's end; an interrupted run's names the stop's provenance.
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", end_line(self.name, status, self.cycle, reason, mode, checkpoint_id, error))
        if cancelled is not None:
            raise cancelled
        if self._fatal is not None:
            raise self._fatal  # checkpointed and undone as any stop; then out, as it was on its way
        result = run_result(
            self.name, status, state=state, output=output, cycles=self.cycle, cost=self.cost,
            checkpoint_id=checkpoint_id, interrupt_reason=reason,
            mode=mode, error=error,
            **self.agent.result_extras(state),
        )  # fmt: skip
        if result["interrupt_reason"] is not None and cfg.raise_on_interrupt:
            raise InterruptedError(result["interrupt_reason"], checkpoint_id)
        return result

    async def _initial(self, task: Any, resume_from: str | None) -> tuple[Any, Any, bool]:
        if resume_from is None:
            state = self.agent.initial_state(task)
            if inspect.isawaitable(state):
                state = await state
            self.cycle, self.cost = 0, 0.0
            return state, None, False
        ckpt = await self.sink.load(self.name, resume_from)
        if ckpt.agent != self.name:
            logger.info("agent %s resumes from a checkpoint of %s (%s)", self.name, ckpt.agent, ckpt.id)
        self.cycle = ckpt.cycle
        self.cost = float(ckpt.metadata.get("cost", 0.0))
        self.checkpoint_id = self._parent_id = ckpt.id
        logger.info("agent %s resumes from %s at cycle %d", self.name, ckpt.id, ckpt.cycle)
        return ckpt.state, ckpt.metadata.get("output"), bool(ckpt.metadata.get("done", False))

    async def _hook(self, event: HookEvent, data: dict[str, Any] | None = None) -> None:
        hooks = self.agent.hooks
        if not hooks.hooks_for(event):
            return
        await hooks.trigger(HookContext(event, self.agent, data or {}, cycle=self.cycle, state=self._state))

    def _end(self, status: RunStatus | None) -> None:
        shared_scheduler().cancel(self._escalation_key)
        mgr = self.manager
        if mgr.is_interrupted():
            self.handled_generation = mgr.generation
        if self.config.enable_interrupts:
            try:
                mgr.disarm_handlers()
            except Exception:
                logger.exception("disarming the handlers of %s failed", self.name)
        mgr.run_shutdown_callbacks()
        self._move(AgentPhase.FINISHED)

