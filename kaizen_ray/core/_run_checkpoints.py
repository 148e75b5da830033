"""The checkpoints of one run: each cycle's (write-behind), and the one a run ends with.

A mixin of :class:`~kaizen_ray.core.run.AgentRun`, apart so that the loop
reads as a loop. The semantics are the run's (see :mod:`kaizen_ray.core.run`)
and, for checkpoints in flight, :mod:`kaizen_ray.core._saves_behind`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kaizen_ray.core._saves_behind import SavesBehind
from kaizen_ray.core.checkpoint import Checkpoint, CheckpointStatus
from kaizen_ray.core.checkpoint._json import _json_clean
from kaizen_ray.core.context import CheckpointSink
from kaizen_ray.core.hooks import HookContext, HookEvent
from kaizen_ray.core.interrupts import InterruptManager
from kaizen_ray.core.results import RunStatus

if TYPE_CHECKING:
    from kaizen_ray.core.agent import BaseAutonomousAgent

logger = logging.getLogger("kaizen_ray.agent")

__all__ = ["RunCheckpoints"]

_CHECKPOINT_STATUS = {
    RunStatus.COMPLETED: CheckpointStatus.COMPLETED,
    RunStatus.INTERRUPTED: CheckpointStatus.INTERRUPTED,
    RunStatus.FAILED: CheckpointStatus.FAILED,
}


class RunCheckpoints:
    """What a run does with checkpoints; the run provides the attributes below and ``_hook``."""

    agent: BaseAutonomousAgent
    name: str
    manager: InterruptManager
    sink: CheckpointSink
    cycle: int
    cost: float
    checkpoint_id: str | None
    _parent_id: str | None
    _behind: SavesBehind
    # The exception a save of this run raised (sent, or acknowledged write-behind), if one did.
    _save_failure: BaseException | None = None

    async def _hook(self, event: HookEvent, data: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def _checkpoint(self, state: Any, status: CheckpointStatus, output: Any, done: bool) -> Checkpoint:
        metadata: dict[str, Any] = {"cost": self.cost, "done": done}
        # Only an output that comes back equal from JSON (the metadata rule): a tuple, an int-keyed dict
        # or a NaN would fail the checkpoint, and with it the run. The state keeps whatever the step made.
        if done and _json_clean(output):
            metadata["output"] = output
        return Checkpoint.new(
            self.name, self.cycle, status, state,
            interrupt_reason=self.manager.reason, parent_id=self._parent_id, metadata=metadata,
        )  # fmt: skip

    async def _save(
        self, state: Any, status: CheckpointStatus, *, durable: bool, output: Any = None, done: bool = False
    ) -> str:
        ckpt = self._checkpoint(state, status, output, done)
        await self._hook(HookEvent.PRE_CHECKPOINT, {"checkpoint_id": ckpt.id, "durable": durable})
        try:
            checkpoint_id = await self.sink.save(ckpt, durable=durable)
        except Exception as exc:
            self._save_failure = exc
            raise
        self._parent_id = self.checkpoint_id = checkpoint_id
        await self._hook(HookEvent.POST_CHECKPOINT, {"checkpoint_id": checkpoint_id, "durable": durable})
        return checkpoint_id

    async def _save_behind(self, state: Any) -> None:
        """A periodic checkpoint, sent write-behind (see :mod:`kaizen_ray.core._saves_behind`)."""
        ckpt = self._checkpoint(state, CheckpointStatus.RUNNING, None, False)
        await self._hook(HookEvent.PRE_CHECKPOINT, {"checkpoint_id": ckpt.id, "durable": False})
        self._behind.send(ckpt)
        self._parent_id = ckpt.id
        # Room for the next one before the next cycle: with a limit of 1, this waits for this very save.
        await self._acknowledge(await self._behind.room())

    async def _acknowledge(self, checkpoints: list[Checkpoint]) -> None:
        """Write-behind checkpoints the sink now holds, in order: each becomes the run's, then its POST_CHECKPOINT hooks run.

        Then raises the oldest unsettled send's exception, if it failed.
        """
        for ckpt in checkpoints:
            self.checkpoint_id = ckpt.id
            hooks = self.agent.hooks
            if hooks.hooks_for(HookEvent.POST_CHECKPOINT):  # with the checkpoint's own cycle and state
                data = {"checkpoint_id": ckpt.id, "durable": False}
                await hooks.trigger(HookContext(HookEvent.POST_CHECKPOINT, self.agent, data, cycle=ckpt.cycle, state=ckpt.state))
        if (failure := self._behind.failure()) is not None:
            self._save_failure = failure
            raise failure

    async def _final_save(
        self, state: Any, status: RunStatus, error: BaseException | None, output: Any, done: bool
    ) -> tuple[str | None, BaseException | None]:
        if error is not None and error is self._save_failure:
            # The state that could not be saved is still the state: saving it
            # again would fail the same way. The last good checkpoint stands.
            # (A CheckpointError the step itself raised is a step's failure: saved as any other.)
            return self.checkpoint_id, None
        try:
            return await self._save(state, _CHECKPOINT_STATUS[status], durable=True, output=output, done=done), None
        except Exception as exc:  # noqa: BLE001 - reported in the result, never dropped
            logger.error("final checkpoint of %s failed: %r", self.name, exc, exc_info=exc)
            return self.checkpoint_id, exc

    async def _settle_behind(self, status: RunStatus, error: BaseException | None) -> tuple[RunStatus, BaseException | None]:
        """Wait for every write-behind checkpoint still in flight; a failed one fails a run that had not failed yet."""
        if not self._behind:
            return status, error
        acknowledged, failure = await self._behind.settle()
        await self._acknowledge(acknowledged)
        if failure is not None:
            self._save_failure = failure
        if failure is not None and error is None:
            logger.error("a write-behind checkpoint of %s failed: %r", self.name, failure, exc_info=failure)
            return RunStatus.FAILED, failure
        return status, error
