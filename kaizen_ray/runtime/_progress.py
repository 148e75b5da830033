"""Progress bars: one ``ray.experimental.tqdm_ray`` bar per agent, for the duration of a run.

``handle.run(..., progress=True)`` asks the agent actor (or, for a
supervisor, every child's actor) to attach a :class:`ProgressBar` to its
agent's POST_CYCLE hook for that run. The bar lives in the actor; Ray ships
its state through the worker's stdout to the driver, where ``tqdm`` draws it
(in a terminal, or in a notebook cell). So bars need the driver's
``log_to_driver=True`` (Ray's default) and the ``tqdm`` package there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kaizen_ray.core.hooks import HookContext, HookEvent

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["ProgressBar", "bar_label", "open_bars", "wait_bars_drawn"]

_LABEL_EVERY_S = 0.5  # the label (cost against budget) is refreshed this often; the count on every cycle


def bar_label(name: str, cost: float, budget: dict[str, Any] | None) -> str:
    """The bar's label: the agent's name, and its spend against its budget when it has one.

    >>> bar_label("swarm/w1", 0.5, None)
    'swarm/w1'
    >>> bar_label("a1", 0.25, {"max_cost": 1.0, "spent": 0.3})
    'a1 $0.25/$1.00'
    """
    if isinstance(budget, dict) and budget.get("max_cost") is not None:
        return f"{name} ${cost:.2f}/${float(budget['max_cost']):.2f}"
    return name


class ProgressBar:
    """A run's progress bar: counts committed cycles, labelled with the agent's name (and cost/budget).

    Register it as the agent's POST_CYCLE hook for one run and :meth:`close`
    it when the run ends; the last state is always drawn on close.

    >>> bar = ProgressBar.attach(agent)   # doctest: +SKIP
    >>> bar.detach()                      # doctest: +SKIP
    """

    @classmethod
    def attach(cls, agent: Any) -> ProgressBar:
        """A bar for ``agent``'s next run, on its POST_CYCLE hook, counting to ``config.max_cycles``."""
        bar = cls(agent, total=agent.config.max_cycles)
        agent.hook_manager.register(HookEvent.POST_CYCLE, bar)
        return bar

    def detach(self) -> None:
        """Unregister the hook and close the bar (its final count is drawn)."""
        self._agent.hook_manager.unregister(HookEvent.POST_CYCLE, self)
        self.close()

    def __init__(self, agent: Any, total: int | None = None) -> None:
        from ray.experimental.tqdm_ray import tqdm  # the one place the bar's backend is named

        self._agent = agent
        self._closed = False
        status = agent.status()
        self._label_shown = self._label(status)
        self._label_at = time.monotonic()
        self._bar = tqdm(desc=self._label_shown, total=total, unit="cycle")
        # A resumed run starts at its checkpoint's cycle: the bar counts from there.
        self._bar.update(int(status.get("cycle") or 0))

    def _label(self, status: dict[str, Any]) -> str:
        return bar_label(self._agent.name, float(status.get("cost") or 0.0), status.get("budget"))

    async def __call__(self, ctx: HookContext) -> None:
        # Async: it runs on the run's loop (a sync hook would cost a thread per cycle); it never blocks.
        if ctx.event is not HookEvent.POST_CYCLE:
            return
        self._sync()

    def _sync(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._label_at >= _LABEL_EVERY_S:
            # status() builds the whole snapshot (budget included): once in a while, not every cycle.
            self._label_at = now
            label = self._label(self._agent.status())
            if label != self._label_shown:
                self._label_shown = label
                self._bar.set_description(label)
        self._bar.update(self._agent.cycle - self._bar.n)  # drawn at most once a second; close() draws the last state

    def close(self) -> None:
        """Draw the final count and close the bar (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sync(final=True)
        finally:
            self._bar.close()


def open_bars() -> int:
    """How many ``tqdm_ray`` bars this driver is drawing now (0 if it draws none).

    >>> open_bars() >= 0
    True
    """
    from ray.experimental import tqdm_ray

    manager = tqdm_ray._manager  # None until the first bar reached this driver
    if manager is None:
        return 0
    with manager.lock:
        return sum(len(group.bars_by_uuid) for group in manager.bar_groups.values())


def wait_bars_drawn(timeout_s: float = 5.0, first_bar_s: float = 1.0, poll_s: float = 0.05) -> bool:
    """After a run: wait (bounded) until its bars have reached this driver, drawn their final state and closed.

    A bar's states reach the driver through the worker's log stream, which
    lags the run's result: without this wait a notebook cell (or a script)
    would end with its bars short of the final count, or before they show at
    all. Ray offers no event for it, so this polls the driver's bar manager:
    first up to ``first_bar_s`` for a bar to show (none may ever come: a
    driver with ``log_to_driver=False``, an actor another job created), then
    up to ``timeout_s`` for the open ones to close. True if none is left open.

    >>> wait_bars_drawn(first_bar_s=0.1)
    True
    """
    start = time.monotonic()
    while not open_bars():
        if time.monotonic() - start > first_bar_s:
            return True  # none came (or they came and went between two looks): nothing is left to draw
        time.sleep(poll_s)
    while open_bars():
        if time.monotonic() - start > timeout_s:
            logger.debug("progress bars still open %ss after the run ended", timeout_s)
            return False
        time.sleep(poll_s)
    return True
