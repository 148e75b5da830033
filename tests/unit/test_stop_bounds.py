"""A supervisor's bounds on its own stop (core/_stop_bounds.py), without Ray.

The deadlines' timing runs on a real DeadlineScheduler (each test awaits the
event its bound sets); which bound is pending, and what a bound does once its
run is over, are read from a scheduler that only records (a bound is then
fired by hand, as late as the test likes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from types import SimpleNamespace
from typing import Any

import pytest

from kaizen_ray.core._stop_bounds import StopBounds
from kaizen_ray.core.config import SupervisorConfig
from kaizen_ray.core.deadlines import DeadlineScheduler
from kaizen_ray.core.errors import ConfigError
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource

FAR_S = 3600.0


class Recording:
    """A scheduler seam that keeps each key's callback until the test fires it."""

    def __init__(self) -> None:
        self.pending: dict[Hashable, tuple[float, Callable[[], Any]]] = {}

    def call_later(self, key: Hashable, delay_s: float, callback: Callable[[], Any]) -> float:
        self.pending[key] = (delay_s, callback)
        return delay_s

    def cancel(self, key: Hashable) -> bool:
        return self.pending.pop(key, None) is not None

    def fire(self, kind: str) -> None:
        key = next(k for k in self.pending if k[0] == kind)
        self.pending.pop(key)[1]()

    def delays(self) -> dict[str, float]:
        return {key[0]: delay for key, (delay, _) in self.pending.items()}


def config(graceful_s: float = FAR_S, immediate_s: float = FAR_S) -> Any:
    return SimpleNamespace(graceful_shutdown_timeout=graceful_s, immediate_shutdown_timeout=immediate_s)


@pytest.fixture
def scheduler():
    sched = DeadlineScheduler(name="test-stop-bounds")
    yield sched
    sched.close()


def test_a_graceful_stop_is_escalated_to_immediate_at_its_bound_and_the_immediate_one_then_kills(scheduler):
    manager = InterruptManager(name="sup")
    killed = threading.Event()
    bounds = StopBounds("sup", manager, config(graceful_s=0.05, immediate_s=0.05), killed.set, scheduler)
    manager.add_listener(lambda reason, mode: bounds.arm(mode))  # as the supervisor actor wires it
    bounds.begin()

    assert manager.request_interrupt(InterruptSource.PROGRAMMATIC, InterruptMode.GRACEFUL, "wind down")

    assert killed.wait(10), "the escalated stop's bound never killed the stragglers"
    first, escalation = manager.history
    assert first.message == "wind down" and manager.reason.message == "wind down"
    assert (escalation.source, escalation.mode, escalation.metadata) == (
        InterruptSource.SYSTEM, InterruptMode.IMMEDIATE, {"handler": "escalation", "graceful_shutdown_timeout": 0.05},
    )  # fmt: skip
    assert "supervisor sup" in escalation.message and "0.05s" in escalation.message


def test_an_immediate_stop_drops_the_pending_escalation_and_starts_the_kill_bound():
    sched = Recording()
    bounds = StopBounds("sup", InterruptManager(), config(graceful_s=2.0, immediate_s=3.0), lambda: None, sched)
    bounds.begin()

    bounds.arm(InterruptMode.GRACEFUL)
    assert sched.delays() == {"stop-escalation": 2.0}
    bounds.arm(InterruptMode.IMMEDIATE)
    assert sched.delays() == {"stop-kill": 3.0}


def test_outside_a_run_nothing_is_armed_and_after_it_both_bounds_are_dropped():
    sched = Recording()
    bounds = StopBounds("sup", InterruptManager(), config(), lambda: None, sched)

    bounds.arm(InterruptMode.GRACEFUL)  # between runs: the next run arms what still stands
    assert sched.pending == {}
    bounds.begin()
    bounds.arm(None)  # nothing stands as the run starts
    assert sched.pending == {}
    bounds.arm(InterruptMode.GRACEFUL)
    bounds.disarm()
    assert sched.pending == {}


@pytest.mark.parametrize("kind", ["stop-escalation", "stop-kill"])
def test_a_bound_that_fires_after_its_run_does_nothing_even_while_the_next_run_goes(kind):
    # A deadline already taken off the queue still runs: it must not stop (or kill) the next run.
    sched, manager, kills = Recording(), InterruptManager(), []
    bounds = StopBounds("sup", manager, config(), lambda: kills.append(1), sched)
    bounds.begin()
    bounds.arm(InterruptMode.GRACEFUL if kind == "stop-escalation" else InterruptMode.IMMEDIATE)
    stale = dict(sched.pending)
    bounds.disarm()
    bounds.begin()  # the next run

    sched.pending.update(stale)
    sched.fire(kind)

    assert manager.history == [] and kills == []


def test_an_immediate_stop_accepted_first_kills_the_stragglers_at_its_bound(scheduler):
    killed = threading.Event()
    bounds = StopBounds("sup", InterruptManager(), config(immediate_s=0.01), killed.set, scheduler)
    bounds.begin()
    bounds.arm(InterruptMode.IMMEDIATE)
    assert killed.wait(10)


def test_by_default_a_supervisor_has_no_bound_of_its_own_and_arms_none():
    assert (SupervisorConfig().graceful_shutdown_timeout, SupervisorConfig().immediate_shutdown_timeout) == (None, None)
    sched = Recording()
    bounds = StopBounds("sup", InterruptManager(), SupervisorConfig(), lambda: None, sched)
    bounds.begin()
    bounds.arm(InterruptMode.GRACEFUL)
    bounds.arm(InterruptMode.IMMEDIATE)
    assert sched.pending == {}


@pytest.mark.parametrize("field", ["graceful_shutdown_timeout", "immediate_shutdown_timeout"])
@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "soon"])
def test_a_bad_bound_is_refused_with_an_error_naming_the_field_and_the_value(field, bad):
    with pytest.raises(ConfigError) as caught:
        SupervisorConfig(**{field: bad})
    assert field in str(caught.value) and repr(bad).strip("'") in str(caught.value)
