"""The lean request path of InterruptManager: work skipped when nobody is there must not be skipped when someone is,
and a reason modelled on first read is the request's own.

A request notifies blocked threads only when some wait, and delivers to
listeners and children only when it has some (see ``_accept``): these tests
hold the bookkeeping behind those shortcuts to account.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

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


def test_a_reason_read_later_is_stamped_when_it_was_requested_and_is_one_object() -> None:
    m = InterruptManager()
    before = datetime.now(UTC)
    m.request_interrupt(InterruptSource.USER, I, "now")
    after = datetime.now(UTC)
    while datetime.now(UTC) <= after:  # the clock moves on before the first read (a clock wait, microseconds)
        pass
    assert before <= m.reason.timestamp <= after
    assert m.reason is m.reason is m.history[0] is m.episode[0]


def test_a_reason_read_first_from_another_thread_is_the_same_object() -> None:
    m = InterruptManager()
    m.request_interrupt("user", "graceful", "x")
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(m.reason))
    t.start()
    t.join(10)
    assert seen == [m.reason] and seen[0] is m.reason


def test_metadata_is_still_checked_at_the_call_and_bad_metadata_leaves_the_manager_untouched() -> None:
    m = InterruptManager()
    with pytest.raises(ValidationError, match="metadata"):
        m.request_interrupt("user", "graceful", "x", {1: "not a str key"})
    assert not m.is_interrupted() and m.history == []
    assert m.request_interrupt("user", "graceful", "x", {"k": 1}) and m.reason.metadata == {"k": 1}


def test_an_escalation_keeps_the_first_reason_and_models_each_request() -> None:
    m = InterruptManager()
    assert m.request_interrupt("user", G, "first") and m.request_interrupt("system", I, "second")
    assert not m.request_interrupt("user", I, "third") and not m.request_interrupt("user", G, "fourth")
    assert (m.reason.message, m.mode) == ("first", I)
    assert [(r.source.value, r.mode, r.message) for r in m.history] == [("user", G, "first"), ("system", I, "second")]
    assert all(r.timestamp.tzinfo is UTC for r in m.history)
