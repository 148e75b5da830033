"""The timer's pending deadlines outlive its process (a store), and where SYSTEM actors live; no Ray, fake clocks."""

from __future__ import annotations

import pytest

from kaizen_ray.runtime._namespaces import is_anonymous_namespace, system_namespace
from kaizen_ray.runtime.timer import MemoryDeadlineStore, TimerLogic


class FakeClocks:
    """A wall clock shared by every 'process', and a monotonic clock per process with its own origin."""

    def __init__(self, wall: float = 1_000_000.0) -> None:
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.wall += seconds

    def process(self, origin: float) -> tuple:
        start = self.wall
        return (lambda: origin + (self.wall - start)), (lambda: self.wall)


def new_timer(clocks: FakeClocks, store: MemoryDeadlineStore, origin: float, fired: list) -> TimerLogic:
    clock, wall = clocks.process(origin)
    return TimerLogic(lambda key, payload, late: fired.append((key, payload, late)), clock=clock, wall=wall, store=store)


def test_a_restarted_timer_reloads_its_pending_deadlines_and_fires_them_on_the_wall_clock():
    clocks, store, fired = FakeClocks(), MemoryDeadlineStore(), []
    first = new_timer(clocks, store, origin=50.0, fired=fired)
    first.schedule("a1/run", started_at=clocks.wall, timeout_s=10.0, payload={"name": "a1"})
    clocks.advance(4.0)
    assert first.fire_due() == pytest.approx(6.0)

    # The process dies; its successor has a monotonic clock with another origin.
    second = new_timer(clocks, store, origin=7.0, fired=fired)
    assert second.restore() == 1 and len(second) == 1 and second.restored == 1
    assert second.fire_due() == pytest.approx(6.0)  # still due 10 s after the run started
    clocks.advance(6.0)
    assert second.fire_due() is None

    assert fired == [("a1/run", {"name": "a1"}, pytest.approx(0.0))]
    assert store.load() == {}  # a fired deadline is no longer saved



def test_a_refused_deadline_is_never_saved_and_a_bad_saved_one_costs_a_restart_no_other_deadline(caplog):
    clocks, store, fired = FakeClocks(), MemoryDeadlineStore(), []
    first = new_timer(clocks, store, origin=50.0, fired=fired)
    with pytest.raises(ValueError, match="due"):
        first.schedule("bad/run", started_at=clocks.wall, timeout_s=float("nan"), payload=None)
    assert store.load() == {}  # refused before it was saved
    first.schedule("a1/run", started_at=clocks.wall, timeout_s=10.0, payload={"name": "a1"})
    store.save("odd/run", {"started_at": clocks.wall, "timeout_s": "ten", "payload": None})  # as an older timer might

    second = new_timer(clocks, store, origin=7.0, fired=fired)
    assert second.restore() == 1 and len(second) == 1
    assert "odd/run" in caplog.text and set(store.load()) == {"a1/run"}  # named, and dropped for good
    clocks.advance(10.0)
    second.fire_due()
    assert [key for key, _, _ in fired] == ["a1/run"]

def test_a_deadline_that_fell_due_while_the_timer_was_down_fires_at_the_first_pass_after_the_restart():
    clocks, store, fired = FakeClocks(), MemoryDeadlineStore(), []
    new_timer(clocks, store, origin=0.0, fired=fired).schedule("a1/run", started_at=clocks.wall, timeout_s=2.0, payload=None)
    clocks.advance(5.0)  # down for longer than the deadline

    restarted = new_timer(clocks, store, origin=123.0, fired=fired)
    restarted.restore()
    restarted.fire_due()

    assert [(key, late) for key, _, late in fired] == [("a1/run", pytest.approx(3.0))]


def test_a_cancelled_deadline_is_removed_from_the_store_and_never_comes_back():
    clocks, store, fired = FakeClocks(), MemoryDeadlineStore(), []
    timer = new_timer(clocks, store, origin=0.0, fired=fired)
    timer.schedule("a1/run", started_at=clocks.wall, timeout_s=2.0, payload=None)
    timer.schedule("a2/run", started_at=clocks.wall, timeout_s=3.0, payload=None)
    assert sorted(store.load()) == ["a1/run", "a2/run"]

    assert timer.cancel("a1/run") is True
    assert sorted(store.load()) == ["a2/run"]
    clocks.advance(10.0)
    restarted = new_timer(clocks, store, origin=0.0, fired=fired)
    assert restarted.restore() == 1
    restarted.fire_due()
    assert [key for key, _, _ in fired] == ["a2/run"]


def test_a_store_that_fails_to_save_does_not_lose_the_deadline_in_this_process(caplog):
    class Broken(MemoryDeadlineStore):
        def save(self, key, record):
            raise OSError("GCS unreachable")

    clocks, fired = FakeClocks(), []
    timer = new_timer(clocks, Broken(), origin=0.0, fired=fired)
    timer.schedule("a1/run", started_at=clocks.wall, timeout_s=1.0, payload=None)
    clocks.advance(1.0)
    timer.fire_due()

    assert [key for key, _, _ in fired] == ["a1/run"]
    assert "not saved" in caplog.text and "a1/run" in caplog.text


# -- namespaces -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "anonymous"),
    [
        (None, True),
        ("", True),
        ("0b6c2f6e-2f7a-4c1e-9d3b-5a8e1c2d4f60", True),  # what Ray makes up: str(uuid.uuid4())
        ("kaizen", False),
        ("test-1a2b3c4d", False),
        ("0b6c2f6e-2f7a-1c1e-9d3b-5a8e1c2d4f60", False),  # a UUID, but not version 4: the GCS calls it named
    ],
)
def test_an_anonymous_namespace_is_what_the_gcs_calls_one(namespace, anonymous):
    assert is_anonymous_namespace(namespace) is anonymous


def test_a_system_actor_goes_to_the_given_named_namespace_else_kaizen_without_ray():
    assert system_namespace("team-a") == "team-a"
    assert system_namespace(None) == "kaizen"
    assert system_namespace("0b6c2f6e-2f7a-4c1e-9d3b-5a8e1c2d4f60") == "kaizen"
    with pytest.raises(TypeError, match="namespace must be a str or None, got 42"):
        system_namespace(42)  # type: ignore[arg-type]
