"""Bad input to every pure public entry point, generated: a clear error naming the value.

A clear error is a ``KaizenError``, ``TypeError`` or ``ValueError`` whose
message names the bad value (its ``repr``) or the field it was given for
(``_bad_values.py``). Configs, ``ChildSpec``, agents, managers, handlers,
hooks and checkpoint look-ups get ~50 examples each, no Ray. The calls that
reach an actor are in test_bad_input_on_ray.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kaizen_ray as kr

from tests._support.ray_agents import Counter
from tests.faults._bad_values import (
    assert_clear,
    bad_bool,
    bad_checkpoint_id,
    bad_enum,
    bad_int,
    bad_name,
    bad_path,
    bad_seconds,
    CLEAR,
    containers,
    PURE,
    words,
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


SUPERVISOR_FIELDS = {
    "strategy": bad_enum,
    "max_restarts": bad_int(0),
    "restart_window_s": st.one_of(bad_seconds, st.just(0.0)),
    "graceful_shutdown_timeout": bad_seconds,
    "immediate_shutdown_timeout": bad_seconds,
    "storage_path": bad_path,
}


CONFIG_FIELDS = [
    *((kr.AutonomousConfig, field, AUTONOMOUS_FIELDS[field]) for field in sorted(AUTONOMOUS_FIELDS)),
    *((kr.SupervisorConfig, field, SUPERVISOR_FIELDS[field]) for field in sorted(SUPERVISOR_FIELDS)),
]


@PURE
@given(data=st.data())
@pytest.mark.parametrize(("model", "field", "bad"), CONFIG_FIELDS, ids=[f"{m.__name__}.{f}" for m, f, _ in CONFIG_FIELDS])
def test_configs_refuse_bad_values_naming_field_and_value(model, field, bad, data):
    value = data.draw(bad, label=field)
    with pytest.raises(kr.ConfigError) as caught:
        model(**{field: value})
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


@PURE
@given(path=st.one_of(st.integers(), st.floats(), containers))
def test_checkpoint_lookups_refuse_a_storage_path_that_is_not_a_path(path):
    for lookup in (lambda: kr.list_checkpoints(path), lambda: kr.load_checkpoint("ck-1", path)):
        with pytest.raises(CLEAR) as caught:
            lookup()
        assert_clear(caught, path, "storage_path")
