"""spawn() returns once the actor is up, or fails at once with the real cause; control calls say why an actor is gone.

Real failures on a real local Ray: a class the workers cannot import (its
module is on the driver's sys.path only), an ``__init__`` that raises, an actor
killed with ``ray.kill``, and a name that is already taken.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest
import ray
import ray.cloudpickle
from ray.exceptions import RayActorError

import kaizen_ray as kr
from kaizen_ray.core.errors import ConfigError, KaizenError
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class RefusesToStart(kr.BaseAutonomousAgent):
    """Its ``__init__`` raises, in the actor."""

    def __init__(self, config: Any = None, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        raise KeyError(f"no API key for {name}")

    async def step(self, state: Any, ctx: Any) -> kr.StepResult:
        return kr.StepResult(state, done=True)


class Idle(kr.BaseAutonomousAgent):
    async def step(self, state: Any, ctx: Any) -> kr.StepResult:
        return kr.StepResult(state, done=True)


@pytest.fixture
def driver_only_agent(tmp_path, monkeypatch):
    """An agent class from a module only the driver can import (it is pickled by reference)."""
    module = f"drvonly_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "import kaizen_ray as kr\n\n"
        "class Unshippable(kr.BaseAutonomousAgent):\n"
        "    async def step(self, state, ctx):\n"
        "        return kr.StepResult(state, done=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(module)
    yield mod.Unshippable, module
    sys.modules.pop(module, None)


def test_spawn_of_a_class_the_workers_cannot_import_fails_at_once_with_the_import_error(ray_cluster, storage, driver_only_agent):
    cls, module = driver_only_agent
    with pytest.raises(kr.AgentGoneError) as caught:
        cls.spawn(config=kr.AutonomousConfig(storage_path=storage), name="unshippable")

    message = str(caught.value)
    assert f"ModuleNotFoundError: No module named '{module}'" in message, message
    assert "'unshippable'" in message and "Traceback" not in message and "\n" not in message
    assert isinstance(caught.value.__cause__, RayActorError)


def test_spawn_of_an_agent_whose_init_raises_fails_with_its_exception(ray_cluster, storage):
    with pytest.raises(kr.AgentGoneError) as caught:
        RefusesToStart.spawn(config=kr.AutonomousConfig(storage_path=storage), name="refuses")

    message = str(caught.value)
    assert "KeyError: 'no API key for refuses'" in message, message
    assert "could not start" in message and "Traceback" not in message
    assert isinstance(caught.value, KaizenError) and isinstance(caught.value.__cause__, RayActorError)


def test_supervisor_spawn_with_a_child_the_workers_cannot_import_fails_at_once(ray_cluster, storage, driver_only_agent):
    cls, module = driver_only_agent
    child = kr.ChildSpec(cls, name="w", config=kr.AutonomousConfig(storage_path=storage))
    with pytest.raises(kr.AgentGoneError) as caught:
        kr.Supervisor.spawn("sup-unshippable", children=[child], storage_path=storage)

    assert f"ModuleNotFoundError: No module named '{module}'" in str(caught.value), str(caught.value)
    assert "'sup-unshippable'" in str(caught.value)


def test_a_control_call_on_a_killed_actor_says_it_was_killed(ray_cluster, storage, cleanup):
    handle = Idle.spawn(config=kr.AutonomousConfig(storage_path=storage), name="short-lived")
    cleanup(handle)
    assert handle.status()["agent"] == "short-lived"  # spawn returned with the actor up
    ray.kill(handle.actor, no_restart=True)
    # ray.kill only asks: a call sent at once can still be answered. Ray releases the name with the actor's death.
    wait_until(lambda: not _named(ray_cluster, "short-lived"), "the killed actor's death")

    with pytest.raises(kr.AgentGoneError) as caught:
        handle.status()

    message = str(caught.value)
    assert "killed by `ray.kill`" in message, message
    assert "'short-lived'" in message and "\n" not in message


def test_a_taken_name_is_a_config_error_naming_the_name_and_namespace(ray_cluster, storage, cleanup):
    config = kr.AutonomousConfig(storage_path=storage)
    cleanup(Idle.spawn(config=config, name="taken"))

    with pytest.raises(ConfigError) as caught:
        Idle.spawn(config=config, name="taken")

    assert isinstance(caught.value, ValueError)  # as before: code catching ValueError still does
    assert "'taken'" in str(caught.value) and repr(ray_cluster) in str(caught.value), str(caught.value)


def _named(namespace: str, name: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    return True
