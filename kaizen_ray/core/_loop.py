"""The cycle loop of an agent (one run; a resume is a new run).

Cancellation semantics, precisely:

* One cycle is one call of ``step(state, ctx)``. Only the state a step
  *returns* is committed; a cycle that does not return leaves the committed
  state exactly as it was.
* Interrupts are checked at every cycle boundary (before each step).
* GRACEFUL: the cycle in flight runs to its end and is committed; the run then
  checkpoints and stops. If the stop has not finished within
  ``graceful_shutdown_timeout`` of the interrupt, it is escalated to IMMEDIATE
  (SYSTEM, ``metadata["handler"] == "escalation"``), by a deadline thread that
  a blocked event loop cannot delay.
* IMMEDIATE: an async step is cancelled (it sees ``CancelledError`` at its next
  await) and its result, if it returns one anyway, is discarded. Precisely: a
  cycle is committed only if no IMMEDIATE stop was accepted before its result
  reached the loop, so a step that saw ``ctx.interrupted`` and returned early
  is never half-committed. A sync step
  runs in a thread, which cannot be cancelled: the run waits up to
  ``immediate_shutdown_timeout`` for it, discards its result, and stops either
  way (in-process the thread is abandoned; on Ray the actor is killed).
  The checkpoint holds the state after the last completed cycle.
* A step that raises ends the run ``"failed"``, with the exception (type and
  chain intact) in the result and a checkpoint of the last committed state.
* Every run ends with a checkpoint, durable before ``run_autonomous`` returns,
  except an interrupted run with ``checkpoint_on_interrupt=False``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any

from kaizen_ray.core._threads import DaemonCall
from kaizen_ray.core.agent import AgentPhase, BaseAutonomousAgent, StepResult
from kaizen_ray.core.checkpoint import Checkpoint, CheckpointError, CheckpointStatus
from kaizen_ray.core.context import StepContext
from kaizen_ray.core.deadlines import shared_scheduler
from kaizen_ray.core.hooks import HookContext, HookEvent
from kaizen_ray.core.interrupts import InterruptedError, InterruptMode, InterruptReason, InterruptSource

logger = logging.getLogger("kaizen_ray.agent")

__all__ = ["Run"]


class _CycleCancelled(Exception):
    """The cycle in flight was cancelled by an IMMEDIATE interrupt; it may still be running."""

    def __init__(self, step: asyncio.Future[Any], call: DaemonCall | None, cancelled_at: float) -> None:
        super().__init__("cycle cancelled")
        self.step, self.call, self.cancelled_at = step, call, cancelled_at


class Run:
    """One execution of the cycle loop (a resume is a new _Run)."""

    def __init__(self, agent: BaseAutonomousAgent, loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.cfg = agent.config
        self.mgr = agent.interrupt_manager
        self.loop = loop
        self.immediate = asyncio.Event()
        self.escalation_key = ("escalation", id(self))
        self.parent_id: str | None = None
        self.sync_step = not inspect.iscoroutinefunction(agent.step)

    # Called from any thread (signal dispatcher, timer, Ray control thread).
    def _on_interrupt(self, reason: InterruptReason, mode: InterruptMode) -> None:
        if mode is InterruptMode.IMMEDIATE:
            self.loop.call_soon_threadsafe(self.immediate.set)
            shared_scheduler().cancel(self.escalation_key)
        else:
            timeout = self.cfg.graceful_shutdown_timeout
            shared_scheduler().call_later(self.escalation_key, timeout, lambda: self._escalate(timeout))

    def _escalate(self, timeout: float) -> None:
        self.mgr.request_interrupt(
            InterruptSource.SYSTEM,
            InterruptMode.IMMEDIATE,
            f"graceful stop of {self.agent.name} did not finish within {timeout}s",
            {"handler": "escalation", "graceful_shutdown_timeout": timeout},
        )

    async def execute(self, task: Any, resume_from: str | None) -> dict[str, Any]:
        agent, mgr = self.agent, self.mgr
        if mgr.is_interrupted() and mgr.generation == agent._handled_generation:
            mgr.reset()
        state, output, done = await self._initial(task, resume_from)
        agent._move(AgentPhase.RUNNING)
        if self.cfg.enable_interrupts:
            mgr.add_listener(self._on_interrupt)
            if mgr.is_interrupted():  # level-triggered: arm the deadlines of an earlier request
                self._on_interrupt(mgr.reason, mgr.mode)
            for handler in mgr.handlers:
                handler.run_started(mgr)
        status, error = CheckpointStatus.COMPLETED, None
        cancelled: asyncio.CancelledError | None = None
        in_flight: _CycleCancelled | None = None
        try:
            while not done:
                if self.cfg.enable_interrupts and mgr.is_interrupted():
                    status = CheckpointStatus.INTERRUPTED
                    break
                if self.cfg.max_cycles is not None and agent.cycle >= self.cfg.max_cycles:
                    break
                try:
                    result = await self._cycle(state)
                except _CycleCancelled as exc:
                    status, in_flight = CheckpointStatus.INTERRUPTED, exc
                    break
                state, done, output = result.state, result.done, result.output
                agent.cycle += 1
                await self._hook(HookEvent.POST_CYCLE, state)
                freq = self.cfg.checkpoint_frequency
                if not done and freq and agent.cycle % freq == 0:
                    await self._save(state, CheckpointStatus.RUNNING, durable=False)
        except asyncio.CancelledError as exc:
            # The run itself was cancelled (task.cancel(), ray.cancel): stop as
            # IMMEDIATE, checkpoint, then let the cancellation go on.
            cancelled = exc
            status = CheckpointStatus.INTERRUPTED
            mgr.request_interrupt(InterruptSource.PROGRAMMATIC, InterruptMode.IMMEDIATE, "the run was cancelled", {"cancelled": True})
        except Exception as exc:  # noqa: BLE001 - reported in the result with its type and chain
            status, error = CheckpointStatus.FAILED, exc
            logger.error("run of %s failed at cycle %d: %r", agent.name, agent.cycle + 1, exc, exc_info=exc)
        finally:
            if self.cfg.enable_interrupts:
                mgr.remove_listener(self._on_interrupt)
        if status is CheckpointStatus.INTERRUPTED:
            agent._move(AgentPhase.STOPPING)
            await self._hook(HookEvent.PRE_INTERRUPT, state)
        checkpoint_id = None
        if status is not CheckpointStatus.INTERRUPTED or self.cfg.checkpoint_on_interrupt:
            checkpoint_id, save_error = await self._final_save(state, status, error, output, done)
            if save_error is not None:
                status, error = CheckpointStatus.FAILED, save_error
        if in_flight is not None:
            # Checkpoint first, then wait for the cancelled step: a step that
            # never ends cannot cost the checkpoint.
            await self._drain(in_flight)
        if status is CheckpointStatus.INTERRUPTED:
            await self._hook(HookEvent.POST_INTERRUPT, state, checkpoint_id=checkpoint_id)
        self._end(status)
        if cancelled is not None:
            raise cancelled
        return self._result(status, state, output, checkpoint_id, error)

    async def _initial(self, task: Any, resume_from: str | None) -> tuple[Any, Any, bool]:
        agent = self.agent
        if resume_from is None:
            state = agent.initial_state(task)
            if inspect.isawaitable(state):
                state = await state
            agent.cycle, agent.cost = 0, 0.0
            return state, None, False
        ckpt = await agent._sink.load(agent.name, resume_from)
        if ckpt.agent != agent.name:
            logger.info("agent %s resumes from a checkpoint of %s (%s)", agent.name, ckpt.agent, ckpt.id)
        agent.cycle = ckpt.cycle
        agent.cost = float(ckpt.metadata.get("cost", 0.0))
        agent.last_checkpoint_id = self.parent_id = ckpt.id
        done = bool(ckpt.metadata.get("done", False))
        logger.info("agent %s resumes from %s at cycle %d", agent.name, ckpt.id, ckpt.cycle)
        return ckpt.state, ckpt.metadata.get("output"), done

    async def _cycle(self, state: Any) -> StepResult:
        agent = self.agent
        ctx = StepContext(
            agent_name=agent.name, cycle=agent.cycle + 1, manager=self.mgr, budget=agent._budget, cost_so_far=agent.cost
        )
        await self._hook(HookEvent.PRE_CYCLE, state)
        call: DaemonCall | None = None
        agent.cycle_in_flight = ctx.cycle
        if self.sync_step:
            call = DaemonCall(agent.step, state, ctx, name=f"kaizen-step-{agent.name}")
            step = asyncio.ensure_future(call.result())
        else:
            step = asyncio.ensure_future(agent.step(state, ctx))
        try:
            result = await self._await_step(step, call)
        finally:
            agent.cycle_in_flight = None
            # Spend is a fact even for a cancelled cycle; settle before the next one.
            agent.cost += ctx.cycle_cost
            await agent._budget.settle()
            warning = agent._budget.take_warning()
            if warning is not None:
                await self._hook(HookEvent.BUDGET_WARNING, state, metadata={"budget": warning})
        if not isinstance(result, StepResult):
            raise TypeError(
                f"{type(agent).__name__}.step must return a StepResult, got {type(result).__name__}: {result!r:.200}"
            )
        return result

    async def _await_step(self, step: asyncio.Future[Any], call: DaemonCall | None) -> Any:
        if not self.cfg.enable_interrupts:
            return await step
        immediate = asyncio.ensure_future(self.immediate.wait())
        try:
            await asyncio.wait({step, immediate}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            step.cancel()  # the run is cancelled: so is its cycle
            raise
        finally:
            immediate.cancel()
        if step.done() and self.mgr.mode is not InterruptMode.IMMEDIATE:
            return step.result()  # finished, and no IMMEDIATE came first: a completed cycle
        step.cancel()
        raise _CycleCancelled(step, call, time.monotonic())

    async def _drain(self, cancelled: _CycleCancelled) -> None:
        step, call = cancelled.step, cancelled.call
        timeout: float | None = None
        if self.agent.abandon_stuck_steps:
            timeout = max(0.0, self.cfg.immediate_shutdown_timeout - (time.monotonic() - cancelled.cancelled_at))
        started = time.monotonic()
        finished = bool((await asyncio.wait({step}, timeout=timeout))[0])
        if call is not None and finished:
            finished = await call.wait_finished(None if timeout is None else max(0.0, timeout - (time.monotonic() - started)))
        if not finished:
            logger.warning(
                "IMMEDIATE stop of %s: the step did not stop within %.3fs of its cancellation; it is abandoned",
                self.agent.name,
                self.cfg.immediate_shutdown_timeout,
            )
        elif not step.cancelled() and step.exception() is None:
            logger.info("IMMEDIATE stop of %s: the step swallowed its cancellation; its result is discarded", self.agent.name)

    async def _hook(self, event: HookEvent, state: Any, **extra: Any) -> None:
        if not self.agent.hooks.hooks_for(event):
            return
        ctx = HookContext(
            event=event,
            agent_name=self.agent.name,
            cycle=self.agent.cycle,
            state=state,
            reason=self.mgr.reason,
            manager=self.mgr,
            **extra,
        )
        await self.agent.hooks.trigger(ctx)

    def _checkpoint(self, state: Any, status: CheckpointStatus, output: Any = None, done: bool = False) -> Checkpoint:
        metadata: dict[str, Any] = {"cost": self.agent.cost, "done": done}
        if done and _json_able(output):
            metadata["output"] = output
        return Checkpoint.new(
            self.agent.name,
            self.agent.cycle,
            status,
            state,
            interrupt_reason=self.mgr.reason,
            parent_id=self.parent_id,
            metadata=metadata,
        )

    async def _save(self, state: Any, status: CheckpointStatus, *, durable: bool, output: Any = None, done: bool = False) -> str:
        ckpt = self._checkpoint(state, status, output, done)
        await self._hook(HookEvent.PRE_CHECKPOINT, state)
        checkpoint_id = await self.agent._sink.save(ckpt, durable=durable)
        self.parent_id = self.agent.last_checkpoint_id = checkpoint_id
        await self._hook(HookEvent.POST_CHECKPOINT, state, checkpoint_id=checkpoint_id)
        return checkpoint_id

    async def _final_save(
        self, state: Any, status: CheckpointStatus, error: BaseException | None, output: Any, done: bool
    ) -> tuple[str | None, BaseException | None]:
        if isinstance(error, CheckpointError):
            # The state that could not be saved is still the state: saving it
            # again would fail the same way. The last good checkpoint stands.
            return self.agent.last_checkpoint_id, None
        try:
            return await self._save(state, status, durable=True, output=output, done=done), None
        except Exception as exc:  # noqa: BLE001 - reported in the result, never dropped
            logger.error("final checkpoint of %s failed: %r", self.agent.name, exc, exc_info=exc)
            return self.agent.last_checkpoint_id, exc

    def _end(self, status: CheckpointStatus) -> None:
        shared_scheduler().cancel(self.escalation_key)
        mgr = self.mgr
        if mgr.is_interrupted():
            self.agent._handled_generation = mgr.generation
        if self.cfg.enable_interrupts:
            for handler in mgr.handlers:
                try:
                    handler.run_ended(mgr)
                except Exception:
                    logger.exception("handler %r failed at the end of the run of %s", handler, self.agent.name)
        mgr.run_shutdown_callbacks()
        self.agent._move(AgentPhase.FINISHED)
        logger.info("run of %s ended %s at cycle %d", self.agent.name, status.value, self.agent.cycle)

    def _result(
        self, status: CheckpointStatus, state: Any, output: Any, checkpoint_id: str | None, error: BaseException | None
    ) -> dict[str, Any]:
        reason = self.mgr.reason if status is CheckpointStatus.INTERRUPTED else None
        if reason is not None and checkpoint_id is not None:
            reason = reason.with_metadata(checkpoint_id=checkpoint_id)
        result = {
            "status": status.value,
            "output": output,
            "state": state,
            "cycles": self.agent.cycle,
            "cost": self.agent.cost,
            "checkpoint_id": checkpoint_id,
            "interrupt_reason": reason,
            "mode": self.mgr.mode.value if reason is not None and self.mgr.mode else None,
            "agent": self.agent.name,
            "error": error,
        }
        if reason is not None and self.cfg.raise_on_interrupt:
            raise InterruptedError(reason, checkpoint_id)
        return result


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
