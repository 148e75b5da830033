"""The run's observer seam: what a run reports as it goes, for metrics (no Ray here).

An :class:`~kaizen_ray.core.run.AgentRun` calls its ``observer`` at each
phase change, committed cycle, spend, and accepted interrupt; checkpoint
sinks that can measure a save (bytes, time to the store's ack) call
``on_checkpoint``. The default observer does nothing, so an in-process run
pays one attribute lookup and an empty call per event. The Ray runtime plugs
in :class:`kaizen_ray.runtime._metrics.RayMetricsObserver`.

Observers must be quick and must not raise: they run on the run's event loop
(and ``on_interrupt`` on whatever thread accepted the request).
"""

from __future__ import annotations

from typing import Any

__all__ = ["NULL_OBSERVER", "RunObserver"]


class RunObserver:
    """Callbacks of one agent's runs; every method is a no-op here. Subclass what you need.

    >>> class Cycles(RunObserver):
    ...     def __init__(self): self.seen = []
    ...     def on_cycle(self, cycle): self.seen.append(cycle)
    >>> obs = Cycles(); obs.on_cycle(1); obs.on_cost(0.5); obs.seen
    [1]
    """

    def on_phase(self, old: str, new: str) -> None:
        """The run moved from phase ``old`` to ``new`` (AgentPhase values)."""

    def on_cycle(self, cycle: int) -> None:
        """Cycle number ``cycle`` completed and was committed."""

    def on_cost(self, amount: float) -> None:
        """A cycle (committed or cancelled) spent ``amount`` (> 0)."""

    def on_interrupt(self, source: str, mode: str) -> None:
        """The run heard of an accepted interrupt request (the first one, or an escalation)."""

    def on_checkpoint(self, seconds: float, nbytes: int) -> None:
        """A checkpoint of ``nbytes`` encoded bytes was saved; ``seconds`` until the sink acknowledged it."""

    def close(self) -> None:
        """The agent is gone for good (its actor is ending): take it out of any live count."""


NULL_OBSERVER: Any = RunObserver()
