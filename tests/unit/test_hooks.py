"""Hooks: the seed's hook code runs as written; order, bounds and validation of the HookManager."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from dataclasses import FrozenInstanceError

import pytest

import kaizen_ray as kr
from kaizen_ray.core.hooks import HookContext, HookEvent, HookManager, HookPriority, HookResult
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource


class TinyAgent:
    """The least an agent must be for a hook: a name and an interrupt manager."""

    def __init__(self, name: str = "a1") -> None:
        self.name = name
        self.interrupt_manager = InterruptManager(name)


# The seed's hook, as the Kaizen interrupt-mechanism guide writes it (with kr's names).
async def dangerous_operation_hook(context: kr.HookContext) -> kr.HookResult:
    tool = context.data.get("tool")
    if tool in {"delete_database", "rm_rf"}:
        context.agent.interrupt_manager.request_interrupt(
            source=kr.InterruptSource.PROGRAMMATIC,
            mode=kr.InterruptMode.IMMEDIATE,
            message=f"Dangerous operation blocked: {tool}",
            metadata={"tool": tool},
        )
        return kr.HookResult(success=False, error=f"blocked {tool}")
    return kr.HookResult(success=True)


def trigger(manager: HookManager, ctx: HookContext) -> list[HookResult]:
    return asyncio.run(manager.trigger(ctx))


def test_the_seeds_dangerous_operation_hook_interrupts_immediately():
    agent = TinyAgent()
    hooks = kr.HookManager()
    hooks.register(kr.HookEvent.PRE_TOOL, dangerous_operation_hook)

    [safe] = trigger(hooks, kr.HookContext(kr.HookEvent.PRE_TOOL, agent, {"tool": "search", "arguments": {}}))
    assert safe.success and safe.error is None
    assert not agent.interrupt_manager.is_interrupted()

    ctx = kr.HookContext(kr.HookEvent.PRE_TOOL, agent, {"tool": "rm_rf", "arguments": {"path": "/"}})
    [blocked] = trigger(hooks, ctx)
    assert (blocked.success, blocked.ok, blocked.error) == (False, False, "blocked rm_rf")
    assert blocked.hook == "dangerous_operation_hook"
    mgr = agent.interrupt_manager
    assert mgr.mode is InterruptMode.IMMEDIATE
    assert mgr.reason.source is InterruptSource.PROGRAMMATIC
    assert mgr.reason.message == "Dangerous operation blocked: rm_rf"
    assert mgr.reason.metadata == {"tool": "rm_rf"}


def test_the_manager_takes_the_message_once():
    m = InterruptManager()
    with pytest.raises(ValueError, match="'a'.*'b'"):
        m.request_interrupt("user", reason="a", message="b")
    assert m.request_interrupt("user", reason="same", message="same")
    assert m.reason.message == "same"


def test_context_request_interrupt_is_programmatic_and_names_the_hook_event():
    agent = TinyAgent()
    ctx = HookContext(HookEvent.POST_CYCLE, agent, cycle=2)
    assert ctx.request_interrupt("enough", mode="immediate", metadata={"hook": "mine", "k": 1})
    reason = agent.interrupt_manager.reason
    assert (reason.source, reason.mode, reason.message) == (InterruptSource.PROGRAMMATIC, InterruptMode.IMMEDIATE, "enough")
    assert reason.metadata == {"hook": "post_cycle", "k": 1}
    assert not ctx.request_interrupt("again")  # GRACEFUL after IMMEDIATE: refused by the manager


def test_context_without_a_manager_refuses_but_still_checks_the_mode():
    ctx = HookContext("pre_cycle", object())
    assert ctx.request_interrupt("stop") is False
    with pytest.raises(ValueError, match="'hard'.*graceful"):
        ctx.request_interrupt("stop", mode="hard")


def test_context_fields_and_kailash_kaizen_aliases():
    agent = TinyAgent("worker")
    ctx = HookContext("post_checkpoint", agent, {"checkpoint_id": "ck-1"}, cycle=4, state={"n": 4})
    assert ctx.event is HookEvent.POST_CHECKPOINT and ctx.event_type is HookEvent.POST_CHECKPOINT
    assert (ctx.agent_name, ctx.agent_id, ctx.agent) == ("worker", "worker", agent)
    assert (ctx.data, ctx.cycle, ctx.state) == ({"checkpoint_id": "ck-1"}, 4, {"n": 4})
    bare = HookContext(HookEvent.PRE_CYCLE, None)
    assert (bare.data, bare.agent_name, bare.cycle, bare.state) == ({}, None, 0, None)
    with pytest.raises(FrozenInstanceError):
        bare.cycle = 1  # type: ignore[misc]


def test_results_are_frozen_and_check_their_fields():
    r = HookResult(success=True, data={"n": 1})
    assert (r.ok, r.error, HookResult().success) == (True, None, True)
    with pytest.raises(FrozenInstanceError):
        r.success = False  # type: ignore[misc]
    with pytest.raises(TypeError, match="success must be a bool.*'yes'"):
        HookResult(success="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="error must be.*42"):
        HookResult(success=False, error=42)  # type: ignore[arg-type]


class AsyncCallable:
    async def __call__(self, ctx: HookContext) -> str:
        await asyncio.sleep(0)
        return f"async object {ctx.cycle}"


class SyncCallable:
    def __call__(self, ctx: HookContext) -> HookResult:
        return HookResult(data=f"sync object {ctx.cycle}")


def test_sync_and_async_hooks_and_what_their_return_values_become():
    hooks = HookManager()
    on_thread: list[str] = []

    def sync_none(ctx):
        on_thread.append(threading.current_thread().name)

    async def async_value(ctx):
        return {"seen": ctx.data["tool"]}

    async def coro(ctx):
        return "from a coroutine"

    for hook in (sync_none, async_value, AsyncCallable(), SyncCallable(), lambda ctx: coro(ctx)):
        hooks.register(HookEvent.POST_TOOL, hook)
    results = trigger(hooks, HookContext(HookEvent.POST_TOOL, data={"tool": "t", "arguments": {}, "result": 1}, cycle=7))
    assert all(r.success for r in results)
    assert [r.data for r in results] == [None, {"seen": "t"}, "async object 7", "sync object 7", "from a coroutine"]
    assert results[0].hook.endswith("sync_none") and results[2].hook == "AsyncCallable object"
    assert all(r.hook for r in results)
    assert on_thread[0].startswith("kaizen-hook-post_tool")  # a sync hook never runs on the loop's thread


def test_priority_order_lower_first_ties_in_registration_order():
    hooks = HookManager()
    order: list[str] = []

    def hook(tag: str):
        return lambda ctx: order.append(tag)

    hooks.register(HookEvent.PRE_CYCLE, hook("default-1"))
    hooks.register(HookEvent.PRE_CYCLE, hook("low"), HookPriority.LOW)  # positional, as kailash-kaizen writes it
    hooks.register(HookEvent.PRE_CYCLE, hook("critical"), priority=HookPriority.CRITICAL)
    hooks.register(HookEvent.PRE_CYCLE, hook("normal"), HookPriority.NORMAL)
    hooks.register(HookEvent.PRE_CYCLE, hook("high"), HookPriority.HIGH)
    hooks.register(HookEvent.PRE_CYCLE, hook("default-2"))
    hooks.register(HookEvent.PRE_CYCLE, hook("int -5"), -5)
    trigger(hooks, HookContext(HookEvent.PRE_CYCLE))
    assert order == ["int -5", "critical", "high", "default-1", "normal", "default-2", "low"]
    assert len(hooks.hooks_for("pre_cycle")) == 7 and hooks.hooks_for(HookEvent.POST_CYCLE) == []


def test_unregister_removes_every_registration_of_that_hook_only():
    class Owner:
        def __init__(self) -> None:
            self.calls = 0

        def on_cycle(self, ctx: HookContext) -> None:
            self.calls += 1

    owner, other = Owner(), Owner()
    hooks = HookManager()
    hooks.register("post_cycle", owner.on_cycle)
    hooks.register("post_cycle", owner.on_cycle, HookPriority.HIGH)
    hooks.register("post_cycle", other.on_cycle)
    assert hooks.unregister("post_cycle", owner.on_cycle) == 2  # a fresh bound method still matches
    assert hooks.unregister("pre_cycle", other.on_cycle) == 0
    trigger(hooks, HookContext("post_cycle"))
    assert (owner.calls, other.calls) == (0, 1)


def test_a_hung_sync_hook_is_abandoned_at_its_timeout_and_the_next_one_runs(caplog):
    release, finished = threading.Event(), threading.Event()

    def hangs(ctx):
        release.wait()
        finished.set()

    hooks = HookManager(timeout_s=60.0)
    hooks.register(HookEvent.PRE_INTERRUPT, hangs, timeout_s=0.05)
    hooks.register(HookEvent.PRE_INTERRUPT, lambda ctx: "after")
    ctx = HookContext(HookEvent.PRE_INTERRUPT, TinyAgent(), {"reason": "stop"})
    try:
        with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
            timed_out, after = trigger(hooks, ctx)
    finally:
        release.set()
    assert (timed_out.success, after.success, after.data) == (False, True, "after")
    assert isinstance(timed_out.error, TimeoutError)
    assert all(word in str(timed_out.error) for word in ("hangs", "pre_interrupt", "0.05s", "'a1'"))
    assert [r.levelno for r in caplog.records if "hangs" in r.getMessage()] == [logging.WARNING]
    assert finished.wait(30)  # abandoned, not killed: the daemon thread went on and ended


def test_an_async_hook_that_swallows_its_cancellation_cannot_hold_up_the_trigger():
    async def main() -> tuple[list[HookResult], int]:
        release, ended = asyncio.Event(), asyncio.Event()
        cancellations = 0

        async def stubborn(ctx):
            nonlocal cancellations
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    cancellations += 1
            ended.set()

        hooks = HookManager(timeout_s=0.05)
        hooks.register(HookEvent.POST_INTERRUPT, stubborn)
        results = await hooks.trigger(HookContext(HookEvent.POST_INTERRUPT, data={"checkpoint_id": "ck"}))
        assert not ended.is_set()  # the trigger returned while the hook still ran
        release.set()
        await ended.wait()
        return results, cancellations

    [result], cancellations = asyncio.run(main())
    assert not result.success and isinstance(result.error, TimeoutError)
    assert cancellations == 1  # it was told to stop, once, and then left alone


@pytest.mark.parametrize("is_async", [False, True])
def test_a_raising_hook_reports_the_exception_itself_with_its_chain(is_async, caplog):
    def fail(ctx):
        try:
            {}["tool"]
        except KeyError as exc:
            raise RuntimeError("hook broke") from exc

    async def afail(ctx):
        fail(ctx)

    hooks = HookManager()
    hooks.register(HookEvent.PRE_TOOL, afail if is_async else fail)
    hooks.register(HookEvent.PRE_TOOL, lambda ctx: None)
    with caplog.at_level(logging.ERROR, logger="kaizen_ray"):
        failed, fine = trigger(hooks, HookContext(HookEvent.PRE_TOOL, TinyAgent()))
    assert fine.success and not failed.success
    assert type(failed.error) is RuntimeError and isinstance(failed.error.__cause__, KeyError)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info[1] is failed.error and "hook broke" in record.getMessage()


def test_a_hooks_own_timeout_error_is_reported_as_raised_not_as_abandoned():
    def own(ctx):
        raise TimeoutError("the hook's upstream timed out")

    hooks = HookManager(timeout_s=60.0)
    hooks.register(HookEvent.POST_TOOL, own)
    [result] = trigger(hooks, HookContext(HookEvent.POST_TOOL))
    assert str(result.error) == "the hook's upstream timed out"


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, True, "5", None])
def test_bad_timeouts_are_refused_with_the_value_named(bad):
    with pytest.raises(ValueError, match=rf"timeout_s must be .*got {bad!r}"):
        HookManager(timeout_s=bad)
    if bad is not None:  # None means "the manager's default" in register
        with pytest.raises(ValueError, match=rf"timeout_s must be .*got {bad!r}"):
            HookManager().register(HookEvent.PRE_CYCLE, print, timeout_s=bad)


def test_unknown_events_non_callables_and_bad_priorities_are_refused():
    hooks = HookManager()
    with pytest.raises(ValueError, match=r"'pre_tool_use' is not a HookEvent; expected one of \[.*'pre_tool'"):
        hooks.register("pre_tool_use", print)
    for call in (lambda: hooks.unregister("nope", print), lambda: hooks.hooks_for("nope"), lambda: HookContext("nope")):
        with pytest.raises(ValueError, match="'nope' is not a HookEvent"):
            call()
    with pytest.raises(TypeError, match="must be callable.*'not a hook'"):
        hooks.register(HookEvent.PRE_CYCLE, "not a hook")  # type: ignore[arg-type]
    for bad in ("high", 1.5, True):
        with pytest.raises(ValueError, match=rf"priority must be .*got {bad!r}"):
            hooks.register(HookEvent.PRE_CYCLE, print, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="HookContext"):
        asyncio.run(hooks.trigger({"event": "pre_cycle"}))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a dict"):
        HookContext(HookEvent.PRE_CYCLE, data=["tool"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cycle must be an int >= 0, got -1"):
        HookContext(HookEvent.PRE_CYCLE, cycle=-1)
    assert hooks.hooks_for(HookEvent.PRE_CYCLE) == []  # nothing half-registered


def test_every_event_the_design_names_exists_with_its_lower_case_value():
    names = {"PRE_CYCLE", "POST_CYCLE", "PRE_CHECKPOINT", "POST_CHECKPOINT", "PRE_INTERRUPT", "POST_INTERRUPT",
             "PRE_TOOL", "POST_TOOL", "BUDGET_WARNING"}  # fmt: skip
    assert {e.name for e in HookEvent} == names
    assert all(e.value == e.name.lower() for e in HookEvent)
