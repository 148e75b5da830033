"""The cycles of one run, in their own task, and an IMMEDIATE stop that goes on without the step in flight.

A mixin of :class:`~kaizen_ray.core.run.AgentRun`, apart so that the run's
start and stop read on their own. The semantics are the run's (see
:mod:`kaizen_ray.core.run`): the cycles share one task, so a step that never
suspends costs no turn of the loop; an IMMEDIATE stop cancels a step where it
awaits and *takes the run over*: the run checkpoints its last committed state
at once, then waits (bounded) for the step to unwind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from kaizen_ray.core._observer import RunObserver
from kaizen_ray.core._saves_behind import SavesBehind
from kaizen_ray.core._threads import DaemonCall
from kaizen_ray.core.context import BudgetClient, StepContext, StepResult
from kaizen_ray.core.hooks import HookEvent
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode
from kaizen_ray.core.results import RunStatus

if TYPE_CHECKING:
    from kaizen_ray.core.agent import BaseAutonomousAgent
    from kaizen_ray.core.config import AutonomousConfig

logger = logging.getLogger("kaizen_ray.agent")

__all__ = ["RunCycles", "TakenOver"]


class TakenOver(NamedTuple):
    """An IMMEDIATE stop took the run over while its step was in flight: the cycles' task may still be running it."""

    cycles: asyncio.Task[Any]
    call: DaemonCall | None
    cancelled_at: float


class RunCycles:
    """The run's cycle loop and its IMMEDIATE takeover; the run provides the attributes below and the hooks."""

    agent: BaseAutonomousAgent
    name: str
    config: AutonomousConfig
    manager: InterruptManager
    budget: BudgetClient
    observer: RunObserver
    cycle: int
    cost: float
    cycle_in_flight: int | None
    abandon_stuck_steps: bool
    _behind: SavesBehind
    _ctx: StepContext
    _state: Any
    _output: Any
    _sync_step: bool
    _cycles_task: asyncio.Task[Any] | None
    _settled: asyncio.Future[None] | None
    _in_step: bool
    _call: DaemonCall | None
    _taken_over: TakenOver | None
    _fatal: KeyboardInterrupt | SystemExit | None

    if TYPE_CHECKING:  # the run's (and RunCheckpoints'); declared here only for the type checker

        async def _hook(self, event: HookEvent, data: dict[str, Any] | None = None) -> None: ...

        async def _save_behind(self, state: Any) -> None: ...

        async def _acknowledge(self, checkpoints: list[Any]) -> None: ...

    def _on_immediate(self) -> None:
        # On the run's loop. Between steps there is nothing to cancel: the next boundary stops the
        # run. Inside one, the step is cancelled where it awaits, and the run goes on without it.
        if self._in_step and self._taken_over is None:
            self._take_over()

    def _take_over(self) -> None:
        cycles, settled = self._cycles_task, self._settled
        assert cycles is not None and settled is not None
        self._taken_over = TakenOver(cycles, self._call, time.monotonic())
        cycles.cancel()
        if not settled.done():
            settled.set_result(None)

    async def _cycles(self, state: Any, output: Any, done: bool) -> tuple[RunStatus, Any, Any, bool, BaseException | None]:
        """The cycle loop, in its own task: ``(status, state, output, done, error)`` (unused once taken over)."""
        try:
            return await self._loop_cycles(state, output, done)
        finally:
            # From inside the task as it ends, not from its done callback: the run resumes one turn of the loop sooner.
            settled = self._settled
            if settled is not None and not settled.done():
                settled.set_result(None)

    async def _loop_cycles(self, state: Any, output: Any, done: bool) -> tuple[RunStatus, Any, Any, bool, BaseException | None]:
        # Locals, not attribute lookups: an empty cycle's cost is counted in tenths of a microsecond.
        # The manager's and the hooks' own lock-free reads (is_interrupted(), has_hooks()) without their call.
        mgr, cfg, on_cycle, ctx, budget = self.manager, self.config, self.observer.on_cycle, self._ctx, self.budget
        step, sync, interrupts, hooks = self.agent.step, self._sync_step, cfg.enable_interrupts, self.agent.hooks._entries
        max_cycles, freq = cfg.max_cycles, cfg.checkpoint_frequency
        pre, post, immediate = HookEvent.PRE_CYCLE, HookEvent.POST_CYCLE, InterruptMode.IMMEDIATE
        status, error = RunStatus.COMPLETED, None
        try:
            while not done:
                if interrupts and mgr._reason is not None:
                    status = RunStatus.INTERRUPTED
                    break
                cycle = self.cycle
                if max_cycles is not None and cycle >= max_cycles:
                    break
                cycle += 1
                ctx.cycle = self.cycle_in_flight = cycle
                ctx._cost_so_far, ctx._cycle_cost, ctx._touched = self.cost, 0.0, False
                if hooks[pre]:
                    await self._hook(pre)
                    if interrupts and mgr._mode is immediate:  # came during the hook: no step
                        self.cycle_in_flight = None
                        status = RunStatus.INTERRUPTED
                        break
                self._in_step = True
                try:
                    result = await (self._sync_call(state, ctx) if sync else step(state, ctx))
                except asyncio.CancelledError:
                    if self._taken_over is not None:  # our own cancellation: the run went on without this step
                        asyncio.current_task().uncancel()  # type: ignore[union-attr]
                        return status, state, output, done, None
                    if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                        await self._account_failed(ctx)  # raised by the step itself: a failed cycle
                    raise
                except Exception:
                    if self._taken_over is None:  # else the takeover settled this cycle already
                        await self._account_failed(ctx)
                    raise
                finally:
                    self._in_step = False
                if interrupts and mgr._mode is immediate:
                    if self._taken_over is not None:
                        asyncio.current_task().uncancel()  # type: ignore[union-attr]
                        logger.info(
                            "IMMEDIATE stop of %s: the step swallowed its cancellation; its result is discarded", self.name
                        )
                        return status, state, output, done, None
                    # Accepted before the result reached the loop (the step never suspended): not committed.
                    self.cycle_in_flight = None
                    await self._account(ctx)
                    status = RunStatus.INTERRUPTED
                    break
                self.cycle_in_flight = None
                if ctx._touched or budget.settles_every_cycle:
                    await self._account(ctx)
                if type(result) is not StepResult and not isinstance(result, StepResult):
                    raise TypeError(
                        f"{type(self.agent).__name__}.step must return a StepResult, got {type(result).__name__}: {result!r:.200}"
                    )
                state, done, output = result.state, result.done, result.output
                self._state, self._output = state, output
                self.cycle = cycle
                on_cycle(cycle)
                if hooks[post]:
                    await self._hook(post)
                if not freq:  # without periodic checkpoints, none is ever in flight
                    continue
                last = max_cycles is not None and cycle >= max_cycles  # the final save follows at once
                if not done and not last and cycle % freq == 0:
                    await self._save_behind(state)
                elif self._behind:
                    await self._acknowledge(self._behind.acknowledged())
        except asyncio.CancelledError as exc:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                # The run was cancelled while this task stood at a boundary (see execute).
                return RunStatus.INTERRUPTED, state, output, done, None
            # Raised by a step that nobody cancelled (it awaited something cancelled): its failure.
            logger.error("run of %s failed at cycle %d: %r", self.name, self.cycle + 1, exc)
            return RunStatus.FAILED, state, output, done, exc
        except Exception as exc:  # noqa: BLE001 - reported in the result with its type and chain
            logger.error("run of %s failed at cycle %d: %r", self.name, self.cycle + 1, exc, exc_info=exc)
            return RunStatus.FAILED, state, output, done, exc
        except (KeyboardInterrupt, SystemExit) as exc:
            # Left to reach Task.__step, it would abort the event loop with this run half done: handlers
            # armed, no checkpoint, the agent "running" for good. Stopped here as an IMMEDIATE stop is
            # (the last committed state checkpointed), and raised again by execute() once all is undone.
            self._fatal = exc
            if self._taken_over is None and self.cycle_in_flight is not None:  # else settled by the takeover
                await self._account_failed(ctx)
            logger.warning("run of %s stopped at cycle %d by %r", self.name, self.cycle + 1, exc)
            status = RunStatus.INTERRUPTED if mgr.is_interrupted() else RunStatus.FAILED
            return status, state, output, done, None if status is RunStatus.INTERRUPTED else exc
        return status, state, output, done, error

    async def _sync_call(self, state: Any, ctx: StepContext) -> Any:
        call = self._call = DaemonCall(self.agent.step, state, ctx, name=f"kaizen-step-{self.name}")
        try:
            return await call.result()
        finally:
            self._call = None

    async def _account(self, ctx: StepContext) -> None:
        """A cycle's spend, committed or not: it is a fact. Settled with the budget before the next cycle."""
        cost = ctx._cycle_cost
        if cost:
            self.cost += cost
            self.observer.on_cost(cost)
        budget = self.budget
        await budget.settle()
        warning = budget.take_warning()
        if warning is not None:
            await self._hook(HookEvent.BUDGET_WARNING, {"budget": warning})

    async def _account_failed(self, ctx: StepContext) -> None:
        """A failed cycle's spend, counted; what is left of its reservations, released. Its error stays the run's."""
        self._in_step = False
        self.cycle_in_flight = None
        try:
            await self._account(ctx)
        except Exception as exc:  # noqa: BLE001 - the step's error is the run's; this one is logged beside it
            logger.error("%s: settling failed cycle %d with its budget failed too: %r", self.name, ctx.cycle, exc, exc_info=exc)

    async def _drain(self, taken: TakenOver) -> None:
        cycles, call = taken.cycles, taken.call
        timeout: float | None = None
        if self.abandon_stuck_steps:
            timeout = max(0.0, self.config.immediate_shutdown_timeout - (time.monotonic() - taken.cancelled_at))
        started = time.monotonic()
        finished = bool((await asyncio.wait({cycles}, timeout=timeout))[0])
        if call is not None and finished:
            left = None if timeout is None else max(0.0, timeout - (time.monotonic() - started))
            finished = await call.wait_finished(left)
        if not finished:
            logger.warning(
                "IMMEDIATE stop of %s: the step did not stop within %.3fs of its cancellation; it is abandoned",
                self.name,
                self.config.immediate_shutdown_timeout,
            )
