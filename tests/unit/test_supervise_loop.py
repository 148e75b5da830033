"""The supervisor's loop over its children's exits, without Ray: the real ``_supervise``, children scripted.

The actor class under ``@ray.remote`` runs here with its Ray-facing seams
(spawning, killing, the checkpoint store) replaced by stand-ins; each child's
run ends only when the test says, so exits that land together (a node lost,
two children at once) are made to land in one turn of the loop.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from kaizen_ray.core._stop_bounds import StopBounds
from kaizen_ray.core.config import RestartPolicy, SupervisorConfig
from kaizen_ray.core.interrupts import InterruptManager
from kaizen_ray.core.supervision import SupervisorPhase
from kaizen_ray.runtime.supervisor_actor import SupervisorActor
from tests._support.agents import WAIT_S

Actor = SupervisorActor.__ray_metadata__.modified_class


class Spec:
    def __init__(self, name: str, restart: str) -> None:
        self.name, self.restart, self.kind, self.task = name, RestartPolicy(restart), "agent", None


class Child:
    """One child: each run waits for the test's ``end(status)``; ``runs`` lists where each run resumed from."""

    def __init__(self, name: str, restart: str = "permanent") -> None:
        self.spec = Spec(name, restart)
        self.full_name, self.storage_path = f"sup/{name}", "/nowhere"
        self.actor: Any = object()
        self.task: asyncio.Task[Any] | None = None
        self.runs: list[str | None] = []
        self._end: asyncio.Future[str] | None = None

    def run(self, resume: str | None) -> None:
        self.runs.append(resume)
        end = self._end = asyncio.get_running_loop().create_future()
        number = len(self.runs)

        async def run() -> dict[str, Any]:
            status = await end
            if status == "raises":
                raise ValueError(f"{self.spec.name}: initial_state failed")
            error = "its node was lost" if status == "killed" else None
            return {"status": status, "checkpoint_id": f"ck-{self.spec.name}-{number}", "error": error, "cycles": 1}

        self.task = asyncio.ensure_future(run())

    def end(self, status: str) -> None:
        if self._end is not None and not self._end.done():
            self._end.set_result(status)


class Store:
    """``candidates`` as the checkpoint store answers it: newest first."""

    def __init__(self) -> None:
        self.ids: dict[str, list[str]] = {}

    @property
    def candidates(self) -> Any:
        ids = self.ids

        class _Remote:
            @staticmethod
            async def remote(storage_path: str, agent: str) -> list[str]:
                return sorted(ids.get(agent, []), reverse=True)

        return _Remote()


def supervisor(strategy: str, children: list[Child], *, max_restarts: int = 3, resume: dict | None = None) -> Any:
    sup = object.__new__(Actor)
    sup._name, sup._progress, sup._phase = "sup", False, SupervisorPhase.RUNNING
    sup._phase_lock = threading.Lock()
    sup._config = SupervisorConfig(strategy=strategy, max_restarts=max_restarts, restart_window_s=60.0)
    sup._manager_ = InterruptManager(name="sup")
    sup._bounds = StopBounds("sup", sup._manager_, sup._config, lambda: None)  # never begun: arms nothing
    sup._manager_.add_listener(sup._on_interrupt)
    sup._children = {c.spec.name: c for c in children}
    sup._restart_times, sup._restarts = [], 0
    sup._store, sup._resume, sup._run_mark = Store(), dict(resume or {}), "ck-20261127T000000000000Z-0000-000000"

    async def nothing(*args: Any) -> None:
        return None

    async def stop_for_restart(child: Child, dead: str) -> dict[str, Any]:
        child.end("interrupted")  # as an IMMEDIATE stop of its run would
        assert child.task is not None
        return await child.task

    sup._release_held = sup._replace = nothing
    sup._stop_for_restart = stop_for_restart
    sup._start = lambda child, task, resume: child.run(resume)
    return sup


async def until_running(*children: Child, runs: int) -> None:
    """Each child's ``runs``-th run has started (its end awaits the test)."""
    async def started() -> None:
        while not all(len(c.runs) >= runs and c.task is not None and not c.task.done() for c in children):
            await asyncio.sleep(0)

    await asyncio.wait_for(started(), WAIT_S)


def test_two_children_lost_together_are_one_incident_and_each_runs_once_more():
    """OTP: after the group restart, the exit of the other's old run is discarded, not a second restart."""
    a, b = Child("a"), Child("b")
    sup = supervisor("one_for_all", [a, b], max_restarts=1)

    async def main():
        a.run(None), b.run(None)
        loop = asyncio.ensure_future(sup._supervise(None))
        await until_running(a, b, runs=1)
        a.end("killed"), b.end("killed")  # both exits land in one turn of the loop
        await until_running(a, b, runs=2)
        a.end("completed"), b.end("completed")
        return await asyncio.wait_for(loop, WAIT_S)

    results, cause = asyncio.run(main())
    assert cause is None and sup._restarts == 1
    assert (len(a.runs), len(b.runs)) == (2, 2)
    assert {n: r["checkpoint_id"] for n, r in results.items()} == {"a": "ck-a-2", "b": "ck-b-2"}


def test_a_sibling_that_completed_in_the_same_turn_is_not_restarted_and_every_run_is_awaited():
    a, b = Child("a"), Child("b")
    sup = supervisor("one_for_all", [a, b])

    async def main():
        a.run(None), b.run(None)
        loop = asyncio.ensure_future(sup._supervise(None))
        await until_running(a, b, runs=1)
        a.end("killed"), b.end("completed")
        await until_running(a, runs=2)
        for child in (a, b):  # whichever was restarted with the group ends now
            child.end("completed")
        results = await asyncio.wait_for(loop, WAIT_S)
        return results, [c.task.done() for c in (a, b)]

    (results, cause), done = asyncio.run(main())
    assert cause is None and done == [True, True]  # nothing left running when the loop returns
    assert results["a"]["checkpoint_id"] == "ck-a-2"
    assert results["b"]["checkpoint_id"] == f"ck-b-{len(b.runs)}"  # its last run's, whichever it was


def test_a_temporary_child_is_stopped_with_its_group_but_never_restarted():
    a, t = Child("a"), Child("t", "temporary")
    sup = supervisor("one_for_all", [a, t])

    async def main():
        a.run(None), t.run(None)
        loop = asyncio.ensure_future(sup._supervise(None))
        await until_running(a, t, runs=1)
        a.end("killed")
        await until_running(a, runs=2)
        a.end("completed")
        return await asyncio.wait_for(loop, WAIT_S)

    results, cause = asyncio.run(main())
    assert len(t.runs) == 1 and results["t"]["status"] == "interrupted"
    assert results["a"]["checkpoint_id"] == "ck-a-2" and sup._restarts == 1


def test_a_child_whose_run_raises_fails_alone_and_its_siblings_go_on():
    a, b = Child("a", "temporary"), Child("b")
    sup = supervisor("one_for_one", [a, b])

    async def main():
        a.run(None), b.run(None)
        loop = asyncio.ensure_future(sup._supervise(None))
        await until_running(a, b, runs=1)
        a.end("raises")
        b.end("completed")
        return await asyncio.wait_for(loop, WAIT_S)

    results, cause = asyncio.run(main())
    assert results["a"]["status"] == "failed" and type(results["a"]["error"]) is ValueError
    assert results["b"]["status"] == "completed"


@pytest.mark.parametrize(("saved", "expected"), [
    (["ck-20261126T000000000000Z-0000-aaaaaa"], "ck-from-the-manifest"),  # only an older run's: where this run began
    (["ck-20261126T000000000000Z-0000-aaaaaa", "ck-20261127T000001000000Z-0000-bbbbbb"],
     "ck-20261127T000001000000Z-0000-bbbbbb"),  # this run's newest
], ids=["older-run-only", "this-run"])  # fmt: skip
def test_a_restarted_child_resumes_from_this_runs_newest_checkpoint_else_where_this_run_started_it(saved, expected):
    a = Child("a")
    sup = supervisor("one_for_one", [a], resume={"a": "ck-from-the-manifest"})
    sup._store.ids["sup/a"] = saved

    async def main():
        a.run("ck-from-the-manifest")
        loop = asyncio.ensure_future(sup._supervise(None))
        await until_running(a, runs=1)
        a.end("killed")
        await until_running(a, runs=2)
        a.end("completed")
        return await asyncio.wait_for(loop, WAIT_S)

    asyncio.run(main())
    assert a.runs == ["ck-from-the-manifest", expected]


def test_a_restarted_child_supervisor_with_no_manifest_of_this_run_resumes_latest():
    """It writes its manifest only as its run ends: its children each resume from their own newest."""
    team = Child("team")
    team.spec.kind = "supervisor"
    sup = supervisor("one_for_one", [team])

    async def main():
        team.run(None)
        loop = asyncio.ensure_future(sup._supervise(None))
        await until_running(team, runs=1)
        team.end("killed")
        await until_running(team, runs=2)
        team.end("completed")
        return await asyncio.wait_for(loop, WAIT_S)

    asyncio.run(main())
    assert team.runs == [None, "latest"]


def test_a_start_that_fails_keeps_every_childs_resume_point_for_the_manifest(monkeypatch):
    """Resuming the manifest written then resumes each child from where it was to start, not from scratch."""
    import kaizen_ray.runtime.supervisor_actor as module

    killed: list[Any] = []
    monkeypatch.setattr(module.ray, "kill", lambda actor, no_restart: killed.append(actor))
    bad, fine = Child("bad"), Child("fine")
    sup = supervisor("one_for_one", [bad, fine], resume={"bad": "ck-bad-7", "fine": "ck-fine-7"})
    sup._manager_.remove_child = lambda child: None

    async def finish(results, cause):
        return {"children": results, "error": cause}

    sup._finish = finish
    result = asyncio.run(sup._give_up_at_start({"bad": TimeoutError("no node for it")}))
    assert {n: (r["status"], r["checkpoint_id"]) for n, r in result["children"].items()} == {
        "bad": ("failed", "ck-bad-7"), "fine": ("killed", "ck-fine-7"),
    }
    assert "could not start" in result["error"] and len(killed) == 1
