"""A run's write-behind checkpoints in flight: sent at their cycle boundary, acknowledged later, in order.

What a periodic (write-behind) checkpoint means, precisely:

* It is *sent* at the end of its cycle, after its PRE_CHECKPOINT hooks. The
  loop then goes on to the next cycle without waiting for the sink to hold it,
  unless ``limit`` sends are now unacknowledged: then it first waits for the
  oldest (with a limit of 1, for this one).
* Acknowledgements (the sink holds the checkpoint) are taken in send order, at
  cycle boundaries. Each one's POST_CHECKPOINT hooks run then, on the run's
  loop, with the checkpoint's cycle and state, and it becomes the run's
  ``checkpoint_id``: the newest checkpoint the sink is known to hold.
* Before the run's final checkpoint every send has ended, so the final one is
  saved after all of them (the store queues an agent's checkpoints in the
  order they were sent).
* A send that failed fails the run where its acknowledgement is taken, with
  its own exception. The sends after it are still waited for; those that
  succeeded are acknowledged like the others (they are whole checkpoints),
  so the result names the newest checkpoint the sink holds.

The limit is ``AutonomousConfig.checkpoints_in_flight`` for a sink that keeps
its checkpoints in the order sent (``sink.keeps_order``: the store's sink on
Ray), else 1. With 1 (the default) each save is acknowledged before the next
cycle, as if awaited where it was sent: the agent's process dying then loses
no completed cycle's checkpoint. More trades that for speed: on Ray an
acknowledgement is a round trip to the checkpoint store actor (milliseconds),
the floor of a cycle that checkpoints every cycle.

Private: used by :class:`~kaizen_ray.core.run.AgentRun`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from kaizen_ray.core.checkpoint import Checkpoint

logger = logging.getLogger("kaizen_ray.agent")

__all__ = ["SavesBehind"]


class SavesBehind:
    """The write-behind saves of one run that the sink has not acknowledged yet, oldest first.

    >>> class Sink:
    ...     async def save(self, checkpoint, *, durable):
    ...         return checkpoint.id
    >>> async def demo():
    ...     behind = SavesBehind(Sink(), limit=2)
    ...     first, second = Checkpoint.new("a", 1, "running", 1), Checkpoint.new("a", 2, "running", 2)
    ...     behind.send(first)
    ...     early = await behind.room()  # one in flight, under the limit: no wait
    ...     behind.send(second)
    ...     full = await behind.room()  # two in flight: waits for the oldest
    ...     rest, failure = await behind.settle()
    ...     return early, [c.cycle for c in early + full + rest], failure
    >>> asyncio.run(demo())
    ([], [1, 2], None)
    """

    def __init__(self, sink: Any, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        self._sink = sink
        self.limit = limit
        self._sent: deque[tuple[Checkpoint, asyncio.Future[str]]] = deque()

    def __len__(self) -> int:
        return len(self._sent)

    def send(self, checkpoint: Checkpoint) -> None:
        """Hand ``checkpoint`` to the sink (write-behind) without waiting for its acknowledgement."""
        self._sent.append((checkpoint, asyncio.ensure_future(self._sink.save(checkpoint, durable=False))))

    def acknowledged(self) -> list[Checkpoint]:
        """The checkpoints acknowledged since the last call, in send order, up to a failed send (see :meth:`failure`)."""
        done = []
        while self._sent and self._sent[0][1].done() and _succeeded(self._sent[0][1]):
            done.append(self._sent.popleft()[0])
        return done

    def failure(self) -> BaseException | None:
        """The oldest send's exception if it has failed (it is then dropped), else None."""
        if self._sent and not _succeeded(self._sent[0][1]):
            checkpoint, fut = self._sent.popleft()
            return _exception(checkpoint, fut)
        return None

    async def room(self) -> list[Checkpoint]:
        """Wait until fewer than ``limit`` sends are unacknowledged, or the oldest has failed; those acknowledged meanwhile."""
        done = self.acknowledged()
        while len(self._sent) >= self.limit and _succeeded(self._sent[0][1]):
            # asyncio.wait, not await: cancelling the run must not cancel the save's own task (the sink has it).
            await asyncio.wait([self._sent[0][1]])
            done.extend(self.acknowledged())
        return done

    async def settle(self) -> tuple[list[Checkpoint], BaseException | None]:
        """Wait for every send: those acknowledged, in order, and the first failure (or None)."""
        done: list[Checkpoint] = []
        failure: BaseException | None = None
        while self._sent:
            await asyncio.wait([self._sent[0][1]])
            done.extend(self.acknowledged())
            if (failed := self.failure()) is not None:
                if failure is None:
                    failure = failed
                else:
                    logger.debug("a later write-behind checkpoint failed too: %r", failed)
        return done, failure


def _succeeded(fut: asyncio.Future[Any]) -> bool:
    """Not failed (yet): pending, or done with a result."""
    return not fut.done() or (not fut.cancelled() and fut.exception() is None)


def _exception(checkpoint: Checkpoint, fut: asyncio.Future[Any]) -> BaseException:
    if fut.cancelled():
        return RuntimeError(f"the write-behind save of checkpoint {checkpoint.id} was cancelled before the sink held it")
    exc = fut.exception()
    assert exc is not None
    return exc
