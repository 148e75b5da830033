"""The timer loop and the budget scope without Ray (their actors are tested on Ray in integration)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from kaizen_ray.core._local_budget import LocalBudgetClient
from kaizen_ray.core.handlers import BudgetInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager
from kaizen_ray.runtime.budget import BudgetActor, BudgetScope, RayBudgetClient
from kaizen_ray.runtime.timer import TimerLogic


WAIT_S = 10.0  # bound on waiting for the loop; never reached when all is well


class Clock:
    """One fake clock for both of the timer's clocks (wall and monotonic): only the test moves it."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_timer(fired: list) -> tuple[TimerLogic, Clock]:
    clock = Clock()
    return TimerLogic(lambda key, payload, late: fired.append((key, late)), clock=clock, wall=clock), clock


def test_deadlines_fire_in_due_order_and_cancelled_ones_never():
    fired: list = []
    timer, clock = fake_timer(fired)
    for key, timeout in (("c", 0.06), ("a", 0.02), ("x", 0.04), ("b", 0.04)):
        timer.schedule(key, started_at=clock.now, timeout_s=timeout, payload=None)
    assert timer.cancel("x") and not timer.cancel("never")
    clock.now += 0.05
    assert timer.fire_due() == pytest.approx(0.01)  # "c" is due in 10 ms
    assert [key for key, _ in fired] == ["a", "b"]
    clock.now += 0.01
    assert timer.fire_due() is None
    assert [key for key, _ in fired] == ["a", "b", "c"] and len(timer) == 0


def test_a_deadline_counts_from_the_run_start_not_from_its_arrival():
    fired: list = []
    timer, clock = fake_timer(fired)
    # The run started 10 s ago with a 10.05 s timeout: 50 ms are left, not 10.05 s.
    left = timer.schedule("late-start", started_at=clock.now - 10.0, timeout_s=10.05, payload=None)
    assert left == pytest.approx(0.05)
    assert timer.fire_due() == pytest.approx(0.05) and fired == []
    clock.now += 0.05
    assert timer.fire_due() is None
    assert fired == [("late-start", pytest.approx(0.0))]


def test_a_deadline_already_past_fires_at_once_and_a_failing_target_does_not_stop_the_loop(caplog):
    fired: list = []

    def fire(key, payload, late):
        fired.append((key, late))
        if key == "boom":
            raise RuntimeError("target gone")

    clock = Clock()
    timer = TimerLogic(fire, clock=clock, wall=clock)
    timer.schedule("boom", started_at=clock.now - 5, timeout_s=1, payload=None)  # 4 s past already
    timer.schedule("next", started_at=clock.now, timeout_s=0, payload=None)
    assert timer.fire_due() is None
    assert fired == [("boom", pytest.approx(4.0)), ("next", pytest.approx(0.0))]
    assert "firing 'boom' failed" in caplog.text and "target gone" in caplog.text


def test_the_loop_sleeps_until_a_deadline_and_fires_it_on_its_own():
    async def main():
        arrived = asyncio.Event()
        timer = TimerLogic(lambda key, payload, late: arrived.set())
        loop_task = asyncio.ensure_future(timer.loop())
        await asyncio.sleep(0)  # the loop is waiting, with nothing pending
        timer.schedule("k", started_at=time.time(), timeout_s=0.01, payload=None)
        try:
            await asyncio.wait_for(arrived.wait(), WAIT_S)
        finally:
            loop_task.cancel()
        return timer.fired, len(timer)

    assert asyncio.run(main()) == (1, 0)


def test_a_thousand_pending_deadlines_are_heap_entries_not_tasks():
    async def settled_task_count() -> int:
        for _ in range(5):  # let the loop take every wake-up and go back to waiting
            await asyncio.sleep(0)
        return len(asyncio.all_tasks())

    async def main():
        timer = TimerLogic(lambda *a: None)
        loop_task = asyncio.ensure_future(timer.loop())
        timer.schedule("first", started_at=time.time(), timeout_s=3600, payload=None)
        with_one = await settled_task_count()
        for i in range(1000):
            timer.schedule(i, started_at=time.time(), timeout_s=3600, payload=None)
        with_many = await settled_task_count()
        loop_task.cancel()
        return with_one, with_many, len(timer)

    with_one, with_many, pending = asyncio.run(main())
    assert (with_many, pending) == (with_one, 1001)


class _Recorder:
    """Stands for an actor handle: ``request_interrupt.remote(...)`` records the call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        outer = self

        class _Method:
            def remote(self, *args):
                outer.calls.append(args)

        self.request_interrupt = _Method()


def test_the_budget_scope_persists_every_change_and_reloads_it(tmp_path):
    path = tmp_path / ".budgets" / "scope.json"
    scope = BudgetScope("s", BudgetInterruptHandler(1.0), path)
    answer = scope.settle("a1", [(0.3, None), (0.2, None)], [])
    assert answer["spent"] == pytest.approx(0.5) and "stop" not in answer
    assert json.loads(path.read_text())["ledger"]["spent"] == pytest.approx(0.5)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = BudgetScope("s", BudgetInterruptHandler(1.0), path)  # what a restarted actor does
    assert again.snapshot()["spent"] == pytest.approx(0.5)


def test_a_settle_that_spends_the_budget_interrupts_every_subscriber_and_says_stop(tmp_path):
    scope = BudgetScope("s", BudgetInterruptHandler(1.0, mode="immediate"), tmp_path / "s.json")
    sup, other = _Recorder(), _Recorder()
    scope.subscribe(sup, "sup")
    scope.subscribe(other, "other")
    answer = scope.settle("a1", [(0.6, None), (0.4, None)], [])
    assert answer["stop"]["mode"] == "immediate"
    assert answer["stop"]["metadata"].items() >= {"handler": "budget", "max_cost": 1.0}.items()
    for recorder in (sup, other):
        [(source, mode, message, metadata)] = recorder.calls
        assert (source, mode, metadata["handler"]) == ("system", "immediate", "budget")
        assert metadata["spent"] == pytest.approx(1.0)


def test_a_subscriber_joining_a_spent_budget_is_interrupted_at_once(tmp_path):
    scope = BudgetScope("s", BudgetInterruptHandler(0.5), tmp_path / "s.json")
    scope.settle("a1", [(0.5, None)], [])
    late = _Recorder()
    scope.subscribe(late, "late")
    assert late.calls and late.calls[0][3]["handler"] == "budget"


def test_the_warning_comes_back_once_in_the_settle_that_crossed_it(tmp_path):
    scope = BudgetScope("s", BudgetInterruptHandler(1.0, warning_threshold=0.5), tmp_path / "s.json")
    assert [scope.settle("a", [(0.3, None)], [])["warning"] for _ in range(3)] == [False, True, False]


def test_reservations_bound_the_spend_and_a_refusal_says_stop(tmp_path):
    scope = BudgetScope("s", BudgetInterruptHandler(1.0), tmp_path / "s.json")
    first = scope.reserve("a1", 0.7)
    assert first is not None and scope.reserve("a2", 0.4) is None
    answer = scope.settle("a1", [(0.5, first)], [first])
    assert answer["spent"] == pytest.approx(0.5) and answer["reserved"] == 0.0
    assert answer["stop"]["metadata"]["handler"] == "budget"  # the refusal exhausted the scope


class InProcessActor:
    """The real actor class, instantiated here and called the way a Ray handle is: ``actor.method.remote(*args)``.

    No signature of its own: a client call the actor's method does not accept
    fails here exactly as it would on Ray.
    """

    def __init__(self, actor_class, *args) -> None:
        self._instance = actor_class.__ray_actor_class__(*args)  # the class under @ray.remote

    def __getattr__(self, name: str):
        method = getattr(self._instance, name)

        class _Remote:
            @staticmethod
            def remote(*args, **kwargs):
                fut = asyncio.get_running_loop().create_future()
                try:
                    fut.set_result(method(*args, **kwargs))
                except Exception as exc:  # noqa: BLE001 - delivered to the awaiting client, as Ray would
                    fut.set_exception(exc)
                return fut

        return _Remote()


def test_the_ray_client_stops_its_own_agent_when_a_settle_finds_the_budget_spent(tmp_path):
    scope = InProcessActor(BudgetActor, "s", BudgetInterruptHandler(0.25), str(tmp_path / "s.json"))
    manager = InterruptManager(name="a1")
    client = RayBudgetClient("a1", manager)
    client.add_scope(scope)

    async def main():
        client.charge(0.1)
        await client.settle()
        assert not manager.is_interrupted()
        client.charge(0.2)
        await client.settle()

    asyncio.run(main())
    assert manager.is_interrupted() and manager.reason.metadata["handler"] == "budget"
    assert client.snapshot()["spent"] == pytest.approx(0.3)


def test_the_ray_client_reserves_settles_the_reservation_and_a_refusal_stops_its_agent(tmp_path):
    scope = InProcessActor(BudgetActor, "s", BudgetInterruptHandler(1.0), str(tmp_path / "s.json"))
    manager = InterruptManager(name="a1")
    client = RayBudgetClient("a1", manager)
    client.add_scope(scope)

    async def main():
        assert await client.reserve(0.6) is True
        assert client.snapshot()["reserved"] == pytest.approx(0.6)
        client.charge(0.5)  # consumes the reservation
        await client.settle()  # and releases what is left of it
        after_settle = dict(client.snapshot())
        refused = await client.reserve(0.6)  # 0.5 spent: 0.6 more does not fit
        return after_settle, refused

    after_settle, refused = asyncio.run(main())
    assert (after_settle["spent"], after_settle["reserved"]) == (pytest.approx(0.5), 0.0)
    assert refused is False
    assert manager.is_interrupted() and manager.reason.metadata["handler"] == "budget"
    assert manager.reason.message == "budget exhausted: spent 0.5 of 1"


def test_a_retried_settle_or_reserve_is_answered_again_not_applied_twice(tmp_path):
    path = tmp_path / "s.json"
    scope = BudgetScope("s", BudgetInterruptHandler(1.0), path)
    first = scope.settle("a1", [(0.3, None)], [], call_id="call-1")
    rid = scope.reserve("a1", 0.2, call_id="call-2")
    # The actor dies after writing, before answering; Ray restarts it and retries both calls.
    again = BudgetScope("s", BudgetInterruptHandler(1.0), path)
    assert again.settle("a1", [(0.3, None)], [], call_id="call-1") == first
    assert again.reserve("a1", 0.2, call_id="call-2") == rid
    assert again.snapshot()["spent"] == pytest.approx(0.3) and again.snapshot()["reserved"] == pytest.approx(0.2)
    again.settle("a1", [(0.3, None)], [], call_id="call-3")  # a new call is applied
    assert again.snapshot()["spent"] == pytest.approx(0.6)


class AnsweredLate(InProcessActor):
    """A scope whose ``late`` method (settle, reserve) is applied at once but answered only when the test says."""

    def __init__(self, late: str, actor_class, *args) -> None:
        super().__init__(actor_class, *args)
        self.late = late
        self.arrived = asyncio.Event()
        self.answer = asyncio.Event()

    def __getattr__(self, name: str):
        if name != self.__dict__.get("late"):
            return super().__getattr__(name)
        method, held = getattr(self._instance, name), self

        class _Remote:
            @staticmethod
            def remote(*args):
                result = method(*args)
                held.arrived.set()

                async def later():
                    await held.answer.wait()
                    return result

                return asyncio.ensure_future(later())

        return _Remote()


def test_a_scope_removed_while_a_settle_awaits_it_costs_the_other_scope_nothing(tmp_path):
    """remove_handler runs on the control group's thread, a settle on the run's loop: B still gets its charges."""
    a = AnsweredLate("settle", BudgetActor, "a", BudgetInterruptHandler(10.0), str(tmp_path / "a.json"))
    b = InProcessActor(BudgetActor, "b", BudgetInterruptHandler(10.0), str(tmp_path / "b.json"))
    client = RayBudgetClient("a1", InterruptManager(name="a1"))
    client.add_scope(a)
    client.add_scope(b)

    async def main():
        assert await client.reserve(1.0)
        client.charge(1.0)
        settle = asyncio.ensure_future(client.settle())
        await asyncio.wait_for(a.arrived.wait(), WAIT_S)  # the settle now awaits scope a's answer
        client.remove_scope(a)
        a.answer.set()
        await asyncio.wait_for(settle, WAIT_S)
        return a.snapshot.remote().result(), b.snapshot.remote().result()

    in_a, in_b = asyncio.run(main())
    assert (in_a["spent"], in_a["reserved"]) == (pytest.approx(1.0), 0.0)
    assert (in_b["spent"], in_b["reserved"]) == (pytest.approx(1.0), 0.0)


def test_in_process_a_charge_consumes_the_reservation_made_just_before_it():
    """reserve, charge, reserve, charge: each charge uses its own reservation, so nothing is held twice."""
    manager = InterruptManager(name="a1")
    handler = BudgetInterruptHandler(2.0)
    manager.add_handler(handler)
    client = LocalBudgetClient(manager)

    async def main():
        for _ in range(2):
            assert await client.reserve(0.5)
            client.charge(0.5)
        held = (handler.snapshot()["spent"], handler.snapshot()["reserved"])
        return held, await client.reserve(0.6)  # 1.0 really left

    (spent, reserved), third = asyncio.run(main())
    assert (spent, reserved) == (pytest.approx(1.0), pytest.approx(0.0))
    assert third is True and not manager.is_interrupted()


def test_a_reservation_whose_answer_the_cancelled_step_never_saw_is_released_by_the_cycles_settle(tmp_path):
    """IMMEDIATE cancels ``await ctx.reserve(...)``; the actor granted it anyway: the takeover's settle gives it back."""
    first = InProcessActor(BudgetActor, "first", BudgetInterruptHandler(1.0), str(tmp_path / "first.json"))
    late = AnsweredLate("reserve", BudgetActor, "late", BudgetInterruptHandler(1.0), str(tmp_path / "late.json"))
    client = RayBudgetClient("sup/a1", InterruptManager(name="a1"))
    client.add_scope(first)
    client.add_scope(late)

    async def main():
        step = asyncio.ensure_future(client.reserve(0.6))
        await asyncio.wait_for(late.arrived.wait(), WAIT_S)  # granted by both; the second answer not yet back
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
        await client.settle()  # what an IMMEDIATE takeover does with the cycle
        return first.snapshot.remote().result(), late.snapshot.remote().result()

    in_first, in_late = asyncio.run(main())
    assert in_first["reserved"] == 0.0 and in_late["reserved"] == 0.0
    assert in_first["spent"] == 0.0 and in_late["spent"] == 0.0


def test_what_an_agent_died_holding_is_released_by_name_and_the_holders_outlive_a_restart(tmp_path):
    path = tmp_path / "shared.json"
    scope = BudgetScope("shared", BudgetInterruptHandler(1.0), path)
    held = scope.reserve("sup/a1", 0.6, "c1")
    kept = scope.reserve("sup/a2", 0.3, "c2")
    assert held and kept and scope.reserve("sup/a3", 0.5, "c3") is None  # 0.9 held: 0.5 more is refused
    again = BudgetScope("shared", BudgetInterruptHandler(1.0), path)  # the actor restarted: ledger reloaded
    assert again.release_held("sup/a1") == pytest.approx(0.6)
    assert again.snapshot()["reserved"] == pytest.approx(0.3)  # a2's own is untouched
    assert again.release_held("sup/a1") == 0.0  # nothing twice
    assert BudgetScope("shared", BudgetInterruptHandler(1.0), path).snapshot()["reserved"] == pytest.approx(0.3)
