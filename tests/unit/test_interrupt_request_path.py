"""The lean request path of InterruptManager: work skipped when nobody is there must not be skipped when someone is.

A request notifies blocked threads only when some wait, and delivers to
listeners and children only when it has some (see ``_accept``): these tests
hold the bookkeeping behind those shortcuts to account.
"""

from __future__ import annotations

import threading

import pytest

from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource
from tests._support.waiting import wait_until

G, I = InterruptMode.GRACEFUL, InterruptMode.IMMEDIATE


def _blocked_in_wait(m: InterruptManager) -> int:
    return len(m._cond._waiters)


def test_a_thread_waiting_after_one_timed_out_is_still_woken() -> None:
    m = InterruptManager()
    assert m.wait(0.01) is False  # a waiter that left on its timeout must not count as one still there
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(m.wait(30)), daemon=True)
    t.start()
    wait_until(lambda: _blocked_in_wait(m) == 1, "the second waiter blocking", timeout=10, poll=0.001)
    assert m.request_interrupt("user", "graceful", "go") is True
    t.join(10)
    assert woke == [True]


def test_a_listener_added_after_an_unheard_request_hears_the_escalation() -> None:
    m = InterruptManager()
    assert m.request_interrupt(InterruptSource.USER, G, "first, with nobody listening")
    heard: list[tuple[str, InterruptMode]] = []
    m.add_listener(lambda reason, mode: heard.append((reason.message, mode)))
    assert m.request_interrupt(InterruptSource.SYSTEM, I, "escalation")
    assert heard == [("escalation", I)]  # delivery was not left half-open by the unheard first request
    assert m.reason.message == "first, with nobody listening"


def test_a_child_added_after_an_unheard_request_gets_it_replayed_then_the_escalation() -> None:
    parent, child = InterruptManager(name="p"), InterruptManager(name="c")
    parent.request_interrupt("programmatic", "graceful", "stop")
    parent.add_child(child)
    assert child.mode is G and child.reason.metadata["propagated_from"] == "p"
    parent.request_interrupt("programmatic", "immediate", "now")
    assert child.mode is I and [r.mode for r in child.history] == [G, I]


@pytest.mark.parametrize(("source", "mode"), [(InterruptSource.USER, I), ("user", "immediate"), ("user", I), (InterruptSource.USER, "immediate")])
def test_enums_and_their_values_are_the_same_request(source, mode) -> None:
    m = InterruptManager()
    assert m.request_interrupt(source, mode, "x")
    assert (m.reason.source, m.mode) == (InterruptSource.USER, I)
    assert type(m.reason.source) is InterruptSource and type(m.mode) is InterruptMode


@pytest.mark.parametrize(("source", "mode", "named"), [(["user"], "graceful", "source"), ("user", {"m": 1}, "mode"), ("me", "graceful", "source")])
def test_unhashable_or_unknown_values_are_named(source, mode, named) -> None:
    with pytest.raises(ValueError, match=f"^{named} .* is not an Interrupt"):
        InterruptManager().request_interrupt(source, mode)
