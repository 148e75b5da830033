"""Bad input to every public entry point, generated: a clear error naming the value, never a hang or a dead actor.

A clear error is a ``KaizenError``, ``TypeError`` or ``ValueError`` whose
message names the bad value (its ``repr``) or the field it was given for.
Pure entry points (configs, ``ChildSpec``, managers, handlers, hooks,
checkpoint look-ups) get ~50 examples each; calls that reach an actor ~10,
after each of which the actor must still answer ``status()``. pytest-timeout
(pyproject.toml) turns a hang into a failure.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kaizen_ray as kr

from tests._support.ray_agents import Counter

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

PURE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ON_RAY = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLEAR = (kr.KaizenError, TypeError, ValueError)


def assert_clear(caught: pytest.ExceptionInfo[BaseException], value: Any, field: str | None = None) -> None:
    """The error is of a clear kind and its message names ``value`` (its repr) or ``field``."""
    error = caught.value
    message = str(error)
    assert isinstance(error, CLEAR), f"{type(error).__name__}: {message}"
    named = repr(value) in message or (field is not None and field in message)
    assert named, f"the message names neither {value!r} nor {field!r}: {message}"


# -- what is wrong for each kind of field -------------------------------------------------------

words = st.text(alphabet=string.ascii_letters, min_size=1, max_size=12)
containers = st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(words, st.integers(), max_size=2))
not_integral = st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not f.is_integer())


def bad_int(least: int) -> st.SearchStrategy[Any]:
    """Not an int >= ``least``: smaller ints, words, fractions, containers."""
    return st.one_of(st.integers(max_value=least - 1), words, not_integral, containers)


bad_seconds = st.one_of(
    st.floats(max_value=0, exclude_max=True), st.just(float("nan")), st.just(float("inf")), words, containers
)
bad_bool = st.one_of(st.integers().filter(lambda i: i not in (0, 1)), words.filter(
    lambda w: w.lower() not in {"true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"}
), containers)
bad_path = st.one_of(st.integers(), st.floats(), containers, st.just(""))
bad_name = st.one_of(
    st.text(max_size=6).map(lambda s: f"../{s}"), st.text(max_size=6).map(lambda s: f".{s}"), st.just(""),
    st.text(alphabet=" !@#$%^&*()+=?<>|\\", min_size=1, max_size=6), st.integers(), containers,
)
bad_enum = st.one_of(words, st.integers(), containers)
bad_checkpoint_id = st.one_of(
    st.text(max_size=6).map(lambda s: f"../{s}"), st.just(""), st.text(alphabet=" /\\*?", min_size=1, max_size=6),
    st.text(alphabet="a", min_size=129, max_size=140), st.integers(), containers,
)


# -- configs ---------------------------------------------------------------------------------------

AUTONOMOUS_FIELDS = {
    "max_cycles": bad_int(1),
    "checkpoint_frequency": bad_int(0),
    "max_tokens": bad_int(1),
    "llm_max_retries": bad_int(0),
    "graceful_shutdown_timeout": bad_seconds,
    "immediate_shutdown_timeout": bad_seconds,
    "hook_timeout_s": bad_seconds,
    "llm_timeout_s": bad_seconds,
    "enable_interrupts": bad_bool,
    "raise_on_interrupt": bad_bool,
    "storage_path": bad_path,
    "temperature": st.one_of(st.floats(max_value=0, exclude_max=True), st.floats(min_value=2, exclude_min=True), words),
    "no_such_field": st.integers(),
}


@PURE
@given(data=st.data())
@pytest.mark.parametrize("field", sorted(AUTONOMOUS_FIELDS))
def test_autonomous_config_refuses_bad_values_naming_field_and_value(field, data):
    value = data.draw(AUTONOMOUS_FIELDS[field], label=field)
    with pytest.raises(kr.ConfigError) as caught:
        kr.AutonomousConfig(**{field: value})
    assert_clear(caught, value, field)
    assert field in str(caught.value)


SUPERVISOR_FIELDS = {
    "strategy": bad_enum,
    "max_restarts": bad_int(0),
    "restart_window_s": st.one_of(bad_seconds, st.just(0.0)),
    "graceful_shutdown_timeout": bad_seconds,
    "immediate_shutdown_timeout": bad_seconds,
    "storage_path": bad_path,
}


@PURE
@given(data=st.data())
@pytest.mark.parametrize("field", sorted(SUPERVISOR_FIELDS))
def test_supervisor_config_refuses_bad_values_naming_field_and_value(field, data):
    value = data.draw(SUPERVISOR_FIELDS[field], label=field)
    with pytest.raises(kr.ConfigError) as caught:
        kr.SupervisorConfig(**{field: value})
    assert_clear(caught, value, field)
    assert field in str(caught.value)


CHILD_FIELDS = {
    "name": bad_name,
    "restart": bad_enum,
    "config": st.one_of(st.integers(), words, st.just(kr.SupervisorConfig())),
    "actor_options": st.one_of(st.integers(), words, st.sampled_from([{"name": "x"}, {"namespace": "y"}, {"lifetime": "detached"}])),
    "spawn_timeout_s": st.one_of(bad_seconds, st.just(0.0)),
    "children": st.one_of(st.integers(), words),
}


@PURE
@given(data=st.data())
@pytest.mark.parametrize("field", sorted(CHILD_FIELDS))
def test_child_spec_refuses_bad_values_naming_field_and_value(field, data):
    value = data.draw(CHILD_FIELDS[field], label=field)
    kwargs = {"name": "w", field: value}
    with pytest.raises(CLEAR) as caught:
        kr.ChildSpec(Counter, **kwargs)
    assert_clear(caught, value, field)


@PURE
@given(agent_cls=st.one_of(st.integers(), words, st.sampled_from([object, int, kr.InterruptManager, Path])))
def test_child_spec_refuses_what_is_not_an_agent_class(agent_cls):
    with pytest.raises(CLEAR) as caught:
        kr.ChildSpec(agent_cls, name="w")
    assert_clear(caught, agent_cls, "agent_cls")


@PURE
@given(name=bad_name)
def test_an_agent_refuses_a_bad_name_instead_of_taking_its_class_name(name):
    with pytest.raises(CLEAR) as caught:
        Counter(name=name)
    assert_clear(caught, name, "name")


# -- interrupts, handlers, hooks -------------------------------------------------------------------


@PURE
@given(source=bad_enum, mode=st.sampled_from(list(kr.InterruptMode)))
def test_request_interrupt_refuses_a_bad_source(source, mode):
    manager = kr.InterruptManager(name="m")
    with pytest.raises(CLEAR) as caught:
        manager.request_interrupt(source, mode, "bad source")
    assert_clear(caught, source, "source")
    assert not manager.is_interrupted()  # refused input changes nothing


@PURE
@given(mode=bad_enum, source=st.sampled_from(list(kr.InterruptSource)))
def test_request_interrupt_refuses_a_bad_mode(mode, source):
    manager = kr.InterruptManager(name="m")
    with pytest.raises(CLEAR) as caught:
        manager.request_interrupt(source, mode=mode)
    assert_clear(caught, mode, "mode")
    assert not manager.is_interrupted()


@PURE
@given(source=bad_enum)
def test_an_interrupt_reason_refuses_a_bad_source(source):
    with pytest.raises(CLEAR) as caught:
        kr.InterruptReason(source=source, mode=kr.InterruptMode.GRACEFUL, message="x")
    assert_clear(caught, source, "source")


@PURE
@given(seconds=bad_seconds)
def test_a_timeout_handler_refuses_bad_seconds(seconds):
    with pytest.raises(CLEAR) as caught:
        kr.TimeoutInterruptHandler(timeout_seconds=seconds)
    assert_clear(caught, seconds, "timeout_seconds")


@PURE
@given(cost=st.one_of(st.floats(max_value=0, exclude_max=True), st.just(float("nan")), st.just(float("inf")), words, containers))
def test_a_budget_handler_refuses_a_bad_max_cost(cost):
    with pytest.raises(CLEAR) as caught:
        kr.BudgetInterruptHandler(max_cost=cost)
    assert_clear(caught, cost, "max_cost")


@PURE
@given(mode=bad_enum)
def test_handlers_refuse_a_bad_mode(mode):
    for make in (lambda: kr.TimeoutInterruptHandler(1.0, mode=mode), lambda: kr.BudgetInterruptHandler(1.0, mode=mode)):
        with pytest.raises(CLEAR) as caught:
            make()
        assert_clear(caught, mode, "mode")


@PURE
@given(signals=st.one_of(st.integers(min_value=65, max_value=10**6), st.just([0]), words, st.lists(words, min_size=1, max_size=2)))
def test_a_signal_handler_refuses_what_is_not_a_signal(signals):
    with pytest.raises(CLEAR) as caught:
        kr.SignalInterruptHandler(signals=signals)
    assert_clear(caught, signals, "signal")


@PURE
@given(event=bad_enum)
def test_hook_registration_refuses_a_bad_event(event):
    hooks = kr.HookManager()
    with pytest.raises(CLEAR) as caught:
        hooks.register(event, repr)
    assert_clear(caught, event, "event")


@PURE
@given(hook=st.one_of(st.integers(), words, containers, st.none()))
def test_hook_registration_refuses_what_cannot_be_called(hook):
    hooks = kr.HookManager()
    with pytest.raises(CLEAR) as caught:
        hooks.register(kr.HookEvent.PRE_CYCLE, hook)
    assert_clear(caught, hook, "hook")


@PURE
@given(child=st.one_of(st.integers(), words, containers, st.none()))
def test_add_child_refuses_what_cannot_be_interrupted(child):
    manager = kr.InterruptManager(name="m")
    with pytest.raises(CLEAR) as caught:
        manager.add_child(child)
    assert_clear(caught, child, "child")


# -- checkpoints without Ray -------------------------------------------------------------------------


@PURE
@given(checkpoint_id=bad_checkpoint_id)
def test_load_checkpoint_refuses_a_bad_id(tmp_path, checkpoint_id):
    with pytest.raises(CLEAR) as caught:
        kr.load_checkpoint(checkpoint_id, tmp_path)
    assert_clear(caught, checkpoint_id, "checkpoint id")


@PURE
@given(agent=bad_name)
def test_list_checkpoints_refuses_a_bad_agent(tmp_path, agent):
    with pytest.raises(CLEAR) as caught:
        kr.list_checkpoints(tmp_path, agent=agent)
    assert_clear(caught, agent, "agent")


@PURE
@given(scheme=words.filter(lambda w: w.lower() not in {"file", "s3", "gs", "gcs", "hdfs"} and len(w) > 1))
def test_checkpoint_lookups_refuse_an_unsupported_uri_scheme(tmp_path, scheme):
    path = f"{scheme}://bucket/x"
    for lookup in (lambda: kr.list_checkpoints(path), lambda: kr.load_checkpoint("ck-1", path)):
        with pytest.raises(CLEAR) as caught:
            lookup()
        assert_clear(caught, path, "storage_path")


@pytest.mark.xfail(
    strict=True,
    reason="bug: kr.list_checkpoints/load_checkpoint given a storage_path that is not a path (0, [], 1.5) raise "
    "os.fspath's bare TypeError 'expected str, bytes or os.PathLike object, not int', naming neither the value "
    "nor storage_path (core/checkpoint/_model.py resolve_storage_path; that package is being rewritten)",
)
@PURE
@given(path=st.one_of(st.integers(), st.floats(), containers))
def test_checkpoint_lookups_refuse_a_storage_path_that_is_not_a_path(path):
    for lookup in (lambda: kr.list_checkpoints(path), lambda: kr.load_checkpoint("ck-1", path)):
        with pytest.raises(CLEAR) as caught:
            lookup()
        assert_clear(caught, path, "storage_path")


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


@pytest.mark.xfail(
    strict=True,
    reason="bug: kr.Supervisor.spawn(name, children=0) (children not a list) fails with \"'int' object is not "
    "iterable\", naming neither the value nor children (runtime/supervisor.py spawn; that file is being rewritten)",
)
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
