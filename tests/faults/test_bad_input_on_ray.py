"""Bad input through Ray, generated: a clear error naming the value, never a hang or a dead actor.

Spawn, ``Supervisor.spawn``, ``get_agent``, the handles' methods and the
actors' own methods get ~10 examples each; after each bad call the actor
must still answer ``status()``. pytest-timeout (pyproject.toml) turns a hang
into a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle
from hypothesis import given
from hypothesis import strategies as st

import kaizen_ray as kr

from tests._support.ray_agents import Counter
from tests.faults._bad_values import (
    assert_clear,
    bad_checkpoint_id,
    bad_enum,
    bad_name,
    CLEAR,
    containers,
    ON_RAY,
    words,
)

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# -- on Ray: spawn, handles, the actors' own methods ---------------------------------------------------


@pytest.fixture(scope="module")
def agent(ray_cluster, tmp_path_factory):
    """One idle agent for the module's bad calls; it must answer ``status()`` after each."""
    storage = tmp_path_factory.mktemp("bad-input")
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=storage), name="target")
    yield handle
    handle.kill()


def assert_alive_and_untouched(handle: Any) -> None:
    status = handle.status()
    assert status["phase"] in ("idle", "finished") and status["interrupted"] is False, status


@ON_RAY
@given(source=bad_enum, mode=st.one_of(bad_enum, st.sampled_from([m.value for m in kr.InterruptMode])))
def test_an_agents_actor_refuses_a_bad_interrupt_and_lives_on(agent, source, mode):
    with pytest.raises(CLEAR) as caught:
        ray.get(agent.actor.request_interrupt.remote(source, mode, "bad", None), timeout=60)
    assert_clear(caught, source, "source")
    with pytest.raises(CLEAR) as caught:
        agent.request_interrupt(source, mode)  # the handle refuses it before it is sent
    assert_clear(caught, source, "source")
    assert_alive_and_untouched(agent)


@pytest.fixture(scope="module")
def supervisor(ray_cluster, tmp_path_factory):
    """One idle supervisor (its children start with a run) for the module's bad calls."""
    storage = tmp_path_factory.mktemp("bad-input-sup")
    spec = kr.ChildSpec(Counter, name="w", config=kr.AutonomousConfig(storage_path=storage))
    handle = kr.Supervisor.spawn("target-sup", children=[spec], storage_path=storage)
    yield handle
    handle.kill()


@ON_RAY
@given(source=bad_enum, handler=st.one_of(st.integers(), words, containers))
def test_a_supervisors_actor_refuses_bad_calls_and_lives_on(supervisor, source, handler):
    with pytest.raises(CLEAR) as caught:
        ray.get(supervisor.actor.request_interrupt.remote(source, "graceful", "bad", None), timeout=60)
    assert_clear(caught, source, "source")
    with pytest.raises(CLEAR) as caught:
        ray.get(supervisor.actor.add_handler.remote(handler), timeout=60)
    assert_clear(caught, handler, "handler")
    assert_alive_and_untouched(supervisor)


@ON_RAY
@given(method=st.one_of(words, st.sampled_from(["__init__", "_children", "request_interrupt_nowait"])))
def test_an_agents_actor_refuses_a_manager_call_it_does_not_forward_and_lives_on(agent, method):
    with pytest.raises((AttributeError, *CLEAR)) as caught:
        ray.get(agent.actor.manager_call.remote(method), timeout=60)
    assert repr(method) in str(caught.value), str(caught.value)
    assert_alive_and_untouched(agent)


@ON_RAY
@given(handler=st.one_of(st.integers(), words, containers, st.just(kr.InterruptManager())))
def test_add_handler_refuses_what_is_not_a_handler_and_the_actor_lives_on(agent, handler):
    with pytest.raises(CLEAR) as caught:
        agent.add_handler(handler)
    assert_clear(caught, handler, "handler")
    with pytest.raises(CLEAR) as caught:
        ray.get(agent.actor.add_handler.remote(handler), timeout=60)
    assert_clear(caught, handler, "handler")
    with pytest.raises(CLEAR) as caught:
        agent.remove_handler(handler)  # never added
    assert_clear(caught, handler, "handler")
    assert_alive_and_untouched(agent)


@ON_RAY
@given(child=st.one_of(st.integers(), words, containers))
def test_the_proxy_refuses_a_child_that_cannot_be_interrupted_and_the_actor_lives_on(agent, child):
    with pytest.raises(CLEAR) as caught:
        agent.interrupt_manager.add_child(child)
    assert_clear(caught, child, "child")
    assert_alive_and_untouched(agent)


@ON_RAY
@given(checkpoint_id=bad_checkpoint_id)
def test_a_run_resumed_from_a_bad_checkpoint_id_fails_clearly_and_the_actor_lives_on(agent, checkpoint_id):
    try:
        result = ray.get(agent.start(1, resume_from_checkpoint=checkpoint_id), timeout=60)
    except CLEAR as exc:  # refused by the handle, before any run
        message = str(exc)
    else:
        assert result["status"] == "failed", result
        assert isinstance(result["error"], CLEAR), repr(result["error"])
        message = str(result["error"])
    assert repr(checkpoint_id) in message or "resume_from_checkpoint" in message, message
    assert_alive_and_untouched(agent)


@ON_RAY
@given(
    kwargs=st.one_of(
        st.builds(dict, config=st.one_of(st.integers(), words, st.just(kr.SupervisorConfig()))),
        st.builds(dict, name=bad_name),
        st.builds(dict, actor_options=st.one_of(st.integers(), words, st.lists(st.integers(), max_size=2))),
        st.builds(dict, num_cpus=st.integers(0, 4)),  # a Ray option where the agent's keywords go
    )
)
def test_spawn_refuses_bad_arguments_at_once(ray_cluster, tmp_path, kwargs):
    ((field, value),) = kwargs.items()
    if field == "config":
        call = lambda: Counter.spawn(config=value, name="never")
    else:
        call = lambda: Counter.spawn(config=kr.AutonomousConfig(storage_path=tmp_path), **{"name": "never", **kwargs})
    with pytest.raises(CLEAR) as caught:
        spawned = call()
        spawned.kill()  # accepted: gone before the failure is reported, so the next example starts clean
    assert_clear(caught, value, field)
    with pytest.raises(ValueError):  # nothing was left behind under the name
        ray.get_actor("never", namespace=ray_cluster)


@ON_RAY
@given(
    kwargs=st.one_of(
        st.builds(dict, name=bad_name),
        st.builds(dict, children=st.one_of(st.just([]), st.lists(st.integers(), min_size=1, max_size=2))),
        st.builds(dict, strategy=bad_enum),
    )
)
def test_supervisor_spawn_refuses_bad_arguments_at_once(ray_cluster, tmp_path, kwargs):
    _refuses_at_once(ray_cluster, tmp_path, kwargs)


@ON_RAY
@given(children=st.one_of(st.integers(), st.floats(), st.none()))
def test_supervisor_spawn_refuses_children_that_are_not_a_list(ray_cluster, tmp_path, children):
    _refuses_at_once(ray_cluster, tmp_path, {"children": children})


def _refuses_at_once(namespace: str, storage: Path, kwargs: dict[str, Any]) -> None:
    ((field, value),) = kwargs.items()
    good = [kr.ChildSpec(Counter, name="w", config=kr.AutonomousConfig(storage_path=storage))]
    arguments = {"name": "never-sup", "children": good, **kwargs}
    with pytest.raises(CLEAR) as caught:
        kr.Supervisor.spawn(arguments.pop("name"), **arguments)
    if field == "children" and isinstance(value, list) and value:  # the one bad element is named
        value, field = value[0], "ChildSpec"
    assert_clear(caught, value, field)
    with pytest.raises(ValueError):
        ray.get_actor("never-sup", namespace=namespace)


@ON_RAY
@given(name=st.one_of(bad_name, words.map(lambda w: f"missing-{w}")))
def test_get_agent_of_a_bad_or_missing_name_says_which(ray_cluster, name):
    with pytest.raises(CLEAR) as caught:
        kr.get_agent(name, namespace=ray_cluster)
    assert_clear(caught, name, "name")
