"""ChildSpec as plain data: Ray actor options, supervisor children (trees), and what each kind refuses.

No Ray here: a child supervisor is named by its class's ``_kaizen_kind``
marker, which a stand-in carries as ``kr.Supervisor`` does (the integration
tier spawns the real one).
"""

from __future__ import annotations

import pytest

import kaizen_ray as kr
from kaizen_ray.core.config import ChildSpec, SupervisorConfig
from kaizen_ray.core.supervision import supervisor_status


class Worker(kr.BaseAutonomousAgent):
    async def step(self, state, ctx):
        return kr.StepResult(state, done=True)


class SupervisorStandIn:
    """Marked as ``kr.Supervisor`` is (importing that one would import Ray)."""

    _kaizen_kind = "supervisor"


def team(**extra):
    return ChildSpec(SupervisorStandIn, name="team", children=[ChildSpec(Worker, name="w1")], **extra)


def test_actor_options_are_kept_as_given():
    options = {"num_cpus": 0, "resources": {"gpu-x": 1}, "runtime_env": {"env_vars": {"A": "1"}}}
    spec = ChildSpec(Worker, name="w", actor_options=options)
    assert spec.actor_options == options
    assert ChildSpec(Worker, name="w").actor_options == {}


@pytest.mark.parametrize("key", ["name", "namespace", "lifetime"])
def test_actor_options_the_supervisor_sets_are_refused(key):
    with pytest.raises(kr.ConfigError, match=rf"actor_options must not set '{key}': the supervisor sets"):
        ChildSpec(Worker, name="w", actor_options={key: "x"})


def test_actor_options_must_be_a_dict_of_option_names():
    with pytest.raises(kr.ConfigError, match=r"actor_options"):
        ChildSpec(Worker, name="w", actor_options={1: "x"})
    with pytest.raises(kr.ConfigError, match=r"actor_options"):
        ChildSpec(Worker, name="w", actor_options=["num_cpus", 1])


def test_a_supervisor_child_takes_children_and_a_supervisor_config():
    spec = team(config={"strategy": "one_for_all", "max_restarts": 1})
    assert spec.kind == "supervisor" and ChildSpec(Worker, name="w").kind == "agent"
    assert isinstance(spec.config, SupervisorConfig)
    assert (spec.config.strategy.value, spec.config.max_restarts) == ("one_for_all", 1)
    assert [c.name for c in spec.children] == ["w1"]
    assert isinstance(team().config, SupervisorConfig)  # the default follows the kind


def test_a_tree_may_be_given_as_nested_dicts():
    spec = ChildSpec.model_validate(
        {"agent_cls": SupervisorStandIn, "name": "a", "children": [
            {"agent_cls": SupervisorStandIn, "name": "b", "children": [{"agent_cls": Worker, "name": "leaf"}]},
        ]}
    )  # fmt: skip
    leaf = spec.children[0].children[0]
    assert isinstance(leaf, ChildSpec) and leaf.kind == "agent" and isinstance(leaf.config, kr.AutonomousConfig)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"supervisor child 'team' needs children="),
        ({"children": []}, r"supervisor child 'team' needs children="),
        ({"children": [ChildSpec(Worker, name="w"), ChildSpec(Worker, name="w")]}, r"unique names, got \['w', 'w'\]"),
        ({"children": [ChildSpec(Worker, name="w")], "agent_kwargs": {"x": 1}}, r"takes no agent_kwargs"),
        ({"children": [ChildSpec(Worker, name="w")], "config": kr.AutonomousConfig()}, r"must be given as SupervisorConfig"),
        ({"children": [ChildSpec(Worker, name="w")], "config": {"max_cycles": 3}}, r"SupervisorConfig.max_cycles"),
    ],
)
def test_a_supervisor_child_refuses(kwargs, message):
    with pytest.raises(kr.ConfigError, match=message):
        ChildSpec(SupervisorStandIn, name="team", **kwargs)


def test_an_agent_child_refuses_children_and_a_supervisor_config():
    with pytest.raises(kr.ConfigError, match=r"agent child 'w' must not have children"):
        ChildSpec(Worker, name="w", children=[ChildSpec(Worker, name="x")])
    with pytest.raises(kr.ConfigError, match=r"must be given as AutonomousConfig"):
        ChildSpec(Worker, name="w", config=SupervisorConfig())


def test_a_class_without_the_marker_is_refused():
    class Plain:
        pass

    with pytest.raises(kr.ConfigError, match=r"BaseAutonomousAgent or kr.Supervisor"):
        ChildSpec(Plain, name="w")


@pytest.mark.parametrize("bad", [0, -1, float("inf")])
def test_spawn_timeout_must_be_positive_and_finite(bad):
    with pytest.raises(kr.ConfigError, match=r"spawn_timeout_s"):
        ChildSpec(Worker, name="w", spawn_timeout_s=bad)


@pytest.mark.parametrize(
    ("results", "temporary", "interrupted", "gave_up", "expected"),
    [
        ({"a": {"status": "completed"}}, set(), False, False, "completed"),
        ({"a": {"status": "completed"}}, set(), False, True, "failed"),
        ({"a": {"status": "failed"}}, set(), False, False, "failed"),
        ({"a": {"status": "failed"}}, {"a"}, False, False, "completed"),
        ({"a": {"status": "killed", "error": "x"}}, set(), True, False, "failed"),
        ({"a": {"status": "killed", "error": None}}, set(), False, False, "interrupted"),
        ({"a": {"status": "completed"}}, set(), True, False, "interrupted"),
    ],
)
def test_supervisor_status(results, temporary, interrupted, gave_up, expected):
    assert supervisor_status(results, temporary, interrupted=interrupted, gave_up=gave_up) == expected
