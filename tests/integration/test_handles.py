"""Driver-side handles on a real local Ray: the proxy's wiring, a control call that times out, get_agent, bad lifetimes.

``handle.interrupt_manager`` is a proxy whose every call ships its arguments to
the actor, so each call brings a new copy of a child handle: removing a child
must still find the one that was added. A control call whose actor cannot
answer ends with a ``TimeoutError`` naming the agent, not a hang.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray.core.errors import ConfigError
from kaizen_ray.runtime._actors import CONTROL_TIMEOUT_S

from tests._support.ray_agents import BLOCK_S, Counter, counting, deadlines_of
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 60.0  # generous: other Ray tests share these two cores
FOREVER = counting(None, delay=0.02)


def config(storage: Path, **overrides: Any) -> kr.AutonomousConfig:
    return kr.AutonomousConfig(storage_path=storage, **overrides)


def children_of(handle: Any) -> int:
    """How many children the actor's own manager forwards to (read in the actor)."""
    return ray.get(handle.actor.__ray_call__.remote(lambda actor: len(actor._manager().children)), timeout=WAIT_S)


class Note:
    """A shutdown callback that appends its word to a file (it runs in the actor)."""

    def __init__(self, path: Path, word: str) -> None:
        self.path, self.word = str(path), word

    def __call__(self) -> None:
        with open(self.path, "a") as f:
            f.write(f"{self.word}\n")


class HoldsItsControlThread(Counter):
    """A counter whose interrupt listener blocks until ``<storage>/../release`` exists.

    Listeners run inside ``request_interrupt``, on the actor's control thread:
    while this one blocks, no control call of this actor can be answered.
    """

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        release = Path(self.config.storage_path).parent / "release"
        self.interrupt_manager.add_listener(lambda reason, mode: _wait_for(release))


def _wait_for(path: Path) -> None:
    give_up = time.monotonic() + BLOCK_S
    while not path.exists() and time.monotonic() < give_up:
        time.sleep(0.01)


# -- the proxy's wiring ----------------------------------------------------------------------------


def test_remove_child_through_the_proxy_stops_forwarding_to_that_child(ray_cluster, storage, cleanup):
    parent, kept, dropped = (Counter.spawn(config=config(storage), name=f"wiring-{n}") for n in ("parent", "kept", "dropped"))
    for handle in (parent, kept, dropped):
        cleanup(handle)
    proxy = parent.interrupt_manager

    proxy.add_child(dropped)
    proxy.add_child(dropped.interrupt_manager)  # the same actor, named through its proxy: still one child
    proxy.add_child(kept.interrupt_manager)
    assert children_of(parent) == 2
    proxy.remove_child(dropped.interrupt_manager)  # yet another copy of it arrives in the actor
    assert children_of(parent) == 1
    proxy.remove_child(dropped)  # removing a child that is not there is harmless
    assert children_of(parent) == 1

    assert proxy.request_interrupt("user", "graceful", "only the kept one") is True
    assert kept.interrupt_manager.wait(timeout=WAIT_S) is True
    assert kept.interrupt_manager.reason.metadata["propagated_from"] == "wiring-parent"
    assert dropped.interrupt_manager.is_interrupted() is False
    assert dropped.interrupt_manager.history == []


def test_remove_handler_through_the_proxy_cancels_the_runs_deadline(ray_cluster, storage, cleanup):
    handle = Counter.spawn(config=config(storage), name="drops-its-timeout")
    cleanup(handle)
    timeout = kr.TimeoutInterruptHandler(timeout_seconds=600.0)
    handle.interrupt_manager.add_handler(timeout)

    def deadlines() -> list[str]:
        return list(deadlines_of(ray_cluster, handle.name))

    ref = handle.start(FOREVER)
    # Sent as the run starts, not waited for: it reaches the timer, once.
    assert len(wait_until(deadlines, "the run's deadline to reach the timer")) == 1

    handle.interrupt_manager.remove_handler(timeout)
    assert deadlines() == []  # cancelled before remove_handler returned
    with pytest.raises(ValueError, match="was not added to"):
        handle.interrupt_manager.remove_handler(timeout)  # it is gone: removing it again says so

    assert handle.request_interrupt("programmatic", "graceful", "done") is True
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "interrupted" and result["interrupt_reason"].message == "done"


def test_adding_the_same_handler_twice_is_a_no_op_as_on_a_manager(ray_cluster, storage, cleanup):
    handle = Counter.spawn(config=config(storage), name="adds-twice")
    cleanup(handle)
    budget = kr.BudgetInterruptHandler(max_cost=5.0)

    def scopes() -> list[str]:  # this agent's budget scope actors
        named = ray.util.list_named_actors(all_namespaces=True)
        return [a["name"] for a in named if a["name"].startswith(f"kaizen-budget/{handle.name}/")]

    handle.add_handler(budget)
    handle.add_handler(budget)
    assert len(scopes()) == 1  # one scope, not a second one the driver could never remove

    handle.remove_handler(budget)
    with pytest.raises(ValueError, match="was not added to"):
        handle.remove_handler(budget)  # one remove undid it


def test_on_shutdown_through_the_proxy_runs_each_callback_once_at_the_end_of_the_next_run(ray_cluster, storage, tmp_path, cleanup):
    log = tmp_path / "shutdown.log"
    handle = Counter.spawn(config=config(storage), name="shuts-down")
    cleanup(handle)
    handle.interrupt_manager.on_shutdown(Note(log, "first"))
    handle.interrupt_manager.on_shutdown(Note(log, "second"))
    with pytest.raises(TypeError, match="on_shutdown expects a callable"):
        handle.interrupt_manager.on_shutdown("not callable")
    assert not log.exists()  # registered, not run

    assert handle.run(counting(2))["status"] == "completed"
    assert log.read_text().split() == ["second", "first"]  # newest first, as a manager runs them

    assert handle.run(counting(1))["status"] == "completed"
    assert log.read_text().split() == ["second", "first"]  # once each: the next run adds nothing


# -- a control call that cannot be answered -------------------------------------------------------


def test_a_control_call_the_actor_cannot_answer_times_out_naming_the_agent(ray_cluster, storage, cleanup):
    handle = HoldsItsControlThread.spawn(config=config(storage), name="control-held")
    cleanup(handle)
    ref = handle.start(FOREVER)
    wait_until(lambda: handle.status()["cycle"] >= 1, "the run to be going")

    # The request is accepted, but the listener holds the control thread: no answer comes.
    with pytest.raises(TimeoutError, match=rf"agent 'control-held' did not answer a control call within {CONTROL_TIMEOUT_S}s"):
        handle.request_interrupt("programmatic", "graceful", "are you there?")

    (Path(storage).parent / "release").touch()
    status = handle.status()  # answered again once the control thread is free
    assert status["interrupted"] is True and status["interrupt_reason"].message == "are you there?"
    result = ray.get(ref, timeout=WAIT_S)
    assert result["status"] == "interrupted" and result["interrupt_reason"].message == "are you there?"


# -- looking handles up by name -------------------------------------------------------------------


def test_get_agent_returns_a_supervisor_handle_for_a_supervisors_name(ray_cluster, storage, cleanup):
    child = kr.ChildSpec(Counter, name="w", config=config(storage), task=counting(2))
    sup = kr.Supervisor.spawn("looked-up", children=[child], storage_path=storage)
    cleanup(sup)

    found = kr.get_agent("looked-up", namespace=ray_cluster)

    assert type(found) is kr.SupervisorHandle
    assert (found.name, found.namespace, found.storage_path) == ("looked-up", ray_cluster, sup.storage_path)
    assert found.status()["kind"] == "supervisor"
    result = found.run()  # it drives the supervisor like the handle spawn() returned
    assert result["status"] == "completed" and result["children"]["w"]["cycles"] == 2
    # Its child is an agent of its own, found under its full name.
    child_handle = kr.get_agent("looked-up/w", namespace=ray_cluster)
    assert type(child_handle) is kr.AgentHandle and child_handle.status()["cycle"] == 2


# -- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lifetime", ["forever", "Detached", ""])
def test_a_bad_lifetime_is_refused_naming_the_value_and_the_choices(ray_cluster, storage, lifetime):
    spec = kr.ChildSpec(Counter, name="w", config=config(storage))
    attempts = {
        "agent": lambda: Counter.spawn(config=config(storage), name="bad-lifetime", lifetime=lifetime),
        "supervisor": lambda: kr.Supervisor.spawn("bad-lifetime-sup", children=[spec], lifetime=lifetime),
    }
    for kind, spawn in attempts.items():
        with pytest.raises(ConfigError) as caught:
            spawn()
        message = str(caught.value)
        assert repr(lifetime) in message and "'detached'" in message and "'non_detached'" in message, message
        assert kind in message, message
    for name in ("bad-lifetime", "bad-lifetime-sup"):
        with pytest.raises(ValueError):
            ray.get_actor(name)  # no actor was started


def test_ray_options_passed_as_agent_keywords_say_where_they_belong(ray_cluster, storage):
    with pytest.raises(TypeError, match=r"\['num_cpus'\] are Ray actor options, not Counter arguments: pass actor_options=\{'num_cpus': 0\}"):
        Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="misplaced", num_cpus=0)
