"""kaizen_ray's Ray metrics: the definitions, and the run observer that records them.

Recorded with :mod:`ray.util.metrics` in the process where things happen (an
agent's actor, the timer actor) and exported by that node's metrics agent on
its Prometheus port, with Ray's ``ray_`` prefix: ``kaizen_cycles_total`` is
scraped as ``ray_kaizen_cycles_total``. Ray tags each series with the
recording process (``WorkerId``); a dead actor's series leave the export by
themselves (about 20 s after its death here), so ``sum by (phase)
(ray_kaizen_agents)`` counts live agents only.

The metric objects are made once per process, on first use (making one
registers it with the process's Ray worker). Cycles and cost, the per-cycle
figures, are counted in plain attributes and handed to Ray by a flusher
thread every :data:`FLUSH_S` and at each phase change: a Ray ``inc`` costs a
few microseconds, a large share of an empty cycle, while Ray reports only
every ``metrics_report_interval_ms`` (1 s at the least in practice) anyway.
See ``benchmarks/metrics_overhead.py``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from kaizen_ray.core._observer import RunObserver

logger = logging.getLogger("kaizen_ray.metrics")

__all__ = ["METRICS", "RayMetricsObserver", "exported_names", "metric", "record_timer_lateness"]

_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]

#: name -> (kind, tag keys, description, histogram boundaries). The one list: the dashboard test checks against it.
METRICS: dict[str, tuple[str, tuple[str, ...], str, list[float] | None]] = {
    "kaizen_cycles_total": ("counter", ("agent",), "Cycles completed and committed, per agent.", None),
    "kaizen_interrupts_total": (
        "counter", ("agent", "source", "mode"), "Interrupt requests an agent accepted (first, or escalation).", None,
    ),
    "kaizen_cost_total": ("counter", ("agent",), "Spend charged by an agent's cycles (cancelled ones too).", None),
    "kaizen_checkpoint_seconds": (
        "histogram", ("agent",), "Seconds from a checkpoint's save to the store's acknowledgement.", _SECONDS,
    ),
    "kaizen_checkpoint_bytes_total": ("counter", ("agent",), "Encoded checkpoint bytes an agent saved.", None),
    "kaizen_agents": ("gauge", ("phase",), "Live agents by phase (idle, running, stopping, finished).", None),
    "kaizen_timer_lateness_seconds": (
        "histogram", (), "How late the timer actor fired a deadline, in seconds.",
        [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0],
    ),
}  # fmt: skip

FLUSH_S = 0.25  # well inside Ray's shortest useful report interval

_lock = threading.Lock()
_made: dict[str, Any] = {}
_phase_counts: Counter[str] = Counter()  # this process's agents by phase
_flush_lock = threading.Lock()
_observers: weakref.WeakSet[RayMetricsObserver] = weakref.WeakSet()
_flusher: threading.Thread | None = None


def exported_names() -> set[str]:
    """Every series name Prometheus scrapes for :data:`METRICS` (``ray_`` prefix, histogram suffixes).

    >>> sorted(n for n in exported_names() if "timer" in n)
    ['ray_kaizen_timer_lateness_seconds_bucket', 'ray_kaizen_timer_lateness_seconds_count', 'ray_kaizen_timer_lateness_seconds_sum']
    """
    names: set[str] = set()
    for name, (kind, *_rest) in METRICS.items():
        if kind == "histogram":
            names |= {f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"}
        else:
            names.add(f"ray_{name}")
    return names


def metric(name: str) -> Any:
    """This process's :mod:`ray.util.metrics` object for ``name`` (made on first use).

    >>> metric("kaizen_cycles_total").inc(1.0, tags={"agent": "a1"})  # doctest: +SKIP
    """
    found = _made.get(name)
    if found is not None:
        return found
    if name not in METRICS:
        raise KeyError(f"{name!r} is not a kaizen_ray metric; expected one of {sorted(METRICS)}")
    from ray.util import metrics as ray_metrics

    kind, tags, description, boundaries = METRICS[name]
    with _lock:
        if name not in _made:
            if kind == "counter":
                _made[name] = ray_metrics.Counter(name, description=description, tag_keys=tags)
            elif kind == "gauge":
                _made[name] = ray_metrics.Gauge(name, description=description, tag_keys=tags)
            else:
                _made[name] = ray_metrics.Histogram(name, description=description, boundaries=boundaries, tag_keys=tags)
        return _made[name]


def record_timer_lateness(seconds: float) -> None:
    """Record how late a deadline fired (the timer actor calls this as it fires one).

    >>> record_timer_lateness(0.003)  # doctest: +SKIP
    """
    try:
        metric("kaizen_timer_lateness_seconds").observe(max(0.0, seconds))
    except Exception:  # noqa: BLE001 - a metric must never cost a deadline
        logger.exception("recording the timer's lateness failed")


def _move_phase(old: str | None, new: str | None) -> None:
    gauge = metric("kaizen_agents")
    with _lock:
        for phase, step in ((old, -1), (new, 1)):
            if phase is not None:
                _phase_counts[phase] += step
        values = {p: _phase_counts[p] for p in (old, new) if p is not None}
    for phase, value in values.items():
        gauge.set(value, tags={"phase": phase})


def _never_raises(method: Callable[..., None]) -> Callable[..., None]:
    # The observer runs inside the run's loop and its interrupt listener: a
    # failing metric must cost a log line, never a run.
    @functools.wraps(method)
    def safe(self: Any, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception:  # noqa: BLE001 - logged, and the run goes on
            logger.exception("recording %s for %s failed", method.__name__, getattr(self, "agent", "?"))

    return safe


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_S)
        with _flush_lock:
            observers = list(_observers)
        for obs in observers:
            obs.flush()


def _watch(observer: RayMetricsObserver) -> None:
    global _flusher
    with _flush_lock:
        _observers.add(observer)
        if _flusher is None or not _flusher.is_alive():
            _flusher = threading.Thread(target=_flush_forever, name="kaizen-metrics-flush", daemon=True)
            _flusher.start()


class RayMetricsObserver(RunObserver):
    """Records one agent's runs as kaizen_ray's Ray metrics (see :data:`METRICS`).

    It keeps the agent's phase itself, so ``kaizen_agents{phase}`` stays
    right across runs (each run starts its own phase at idle) and on
    :meth:`close`.

    >>> obs = RayMetricsObserver("swarm/w1")  # doctest: +SKIP
    >>> obs.on_phase("", "idle"); obs.on_cycle(1)  # doctest: +SKIP
    """

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self._tags = {"agent": agent}
        self._phase: str | None = None
        self._cycles = metric("kaizen_cycles_total")
        self._cost = metric("kaizen_cost_total")
        # Made now, not by the first stop: making a metric costs its first use about a millisecond.
        self._interrupts = metric("kaizen_interrupts_total")
        self._checkpoint_seconds = metric("kaizen_checkpoint_seconds")
        self._checkpoint_bytes = metric("kaizen_checkpoint_bytes_total")
        # Written by the run's loop only; the flusher hands the difference to Ray.
        self._cycles_seen, self._cost_seen = 0, 0.0
        self._cycles_sent, self._cost_sent = 0, 0.0
        self._sending = threading.Lock()
        _watch(self)

    def __repr__(self) -> str:
        return f"RayMetricsObserver({self.agent!r}, {self._phase})"

    @_never_raises
    def flush(self) -> None:
        """Hand the cycles and cost counted since the last flush to Ray (the flusher thread calls it too)."""
        with self._sending:
            cycles, cost = self._cycles_seen, self._cost_seen
            if cycles != self._cycles_sent:
                self._cycles.inc(float(cycles - self._cycles_sent), tags=self._tags)
                self._cycles_sent = cycles
            if cost > self._cost_sent:
                self._cost.inc(cost - self._cost_sent, tags=self._tags)
                self._cost_sent = cost

    @_never_raises
    def on_phase(self, old: str, new: str) -> None:
        self.flush()  # a run's last cycles are exported with its end, not a flush period later
        if new != self._phase:
            _move_phase(self._phase, new)
            self._phase = new

    def on_cycle(self, cycle: int) -> None:
        self._cycles_seen += 1

    def on_cost(self, amount: float) -> None:
        self._cost_seen += amount

    @_never_raises
    def on_interrupt(self, source: str, mode: str) -> None:
        self._interrupts.inc(1.0, tags={"agent": self.agent, "source": source, "mode": mode})

    @_never_raises
    def on_checkpoint(self, seconds: float, nbytes: int) -> None:
        self._checkpoint_seconds.observe(seconds, tags=self._tags)
        if nbytes > 0:
            self._checkpoint_bytes.inc(float(nbytes), tags=self._tags)

    @_never_raises
    def close(self) -> None:
        self.flush()
        if self._phase is not None:
            _move_phase(self._phase, None)
            self._phase = None
