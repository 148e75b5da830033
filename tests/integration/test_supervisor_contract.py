"""The supervisor's contract on a real local Ray: where its manifest goes, which arguments it refuses,
its shutdown callbacks, one replay per new child. A ``"killed"`` result when its own actor dies is in
the fault tier (tests/faults/test_supervisor_faults.py).

Restarts are in test_supervisor_restarts.py, fan-out and manifests in test_supervisor.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray.core.errors import AgentGoneError, ConfigError
from kaizen_ray.runtime._children import Child as _Child

from tests._support.ray_agents import Counter
from tests._support.waiting import wait_until

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 90.0  # generous: other helpers load this 2-core machine too


class Touch:
    """A shutdown callback that leaves a file behind (it runs in the supervisor's actor)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __call__(self) -> None:
        with open(self.path, "a") as f:
            f.write("ran\n")


class CountsRequests(Counter):
    """A counter that logs every interrupt request its actor receives, accepted or not (``log`` set per test)."""

    log = ""

    def __init__(self, config: Any = None, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(config, name=name, **kwargs)
        manager = self.interrupt_manager
        accept, log = manager.request_interrupt, self.log

        def counted(*args: Any, **kw: Any) -> bool:
            with open(log, "a") as f:
                f.write(f"{name}\n")
            return accept(*args, **kw)

        manager.request_interrupt = counted


def counting(storage: Any, name: str, goal: int, seed: int, *, cls: type = Counter, delay: float = 0.02) -> kr.ChildSpec:
    config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
    return kr.ChildSpec(cls, name=name, config=config, task={"goal": goal, "seed": seed, "delay": delay})


def gone(namespace: str, full_name: str) -> bool:
    try:
        ray.get_actor(full_name, namespace=namespace)
    except ValueError:
        return True
    return False


# -- arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("strategy", "one_for_all"), ("max_restarts", 7), ("restart_window_s", 1.0)])
def test_config_together_with_a_restart_flag_is_refused(ray_cluster, storage, flag, value):
    spec = counting(storage, "w", 1, 1)
    with pytest.raises(ConfigError, match=flag) as caught:
        kr.Supervisor.spawn("refused", children=[spec], config=kr.SupervisorConfig(), **{flag: value})
    assert repr(value) in str(caught.value)


def test_two_different_storage_paths_are_refused(ray_cluster, storage, tmp_path):
    spec = counting(storage, "w", 1, 1)
    config = kr.SupervisorConfig(storage_path=tmp_path / "a")
    with pytest.raises(ConfigError, match="storage_path"):
        kr.Supervisor.spawn("refused", children=[spec], config=config, storage_path=tmp_path / "b")


# -- the manifest's place ------------------------------------------------------------------------------


def test_the_manifest_lands_beside_children_that_share_a_storage_path(ray_cluster, storage, tmp_path, monkeypatch, cleanup):
    default = tmp_path / "default"
    monkeypatch.setenv("KAIZEN_RAY_STORAGE_PATH", str(default))
    sup = kr.Supervisor.spawn("beside", children=[counting(storage, "w", 2, 1)])
    cleanup(sup)

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "completed", result
    manifest = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert manifest.agent == "beside" and manifest.metadata["kind"] == "manifest"
    assert kr.list_checkpoints(default) == []


def test_its_own_storage_path_wins_and_split_children_leave_it_the_default(ray_cluster, storage, tmp_path, monkeypatch, cleanup):
    default = tmp_path / "default"
    monkeypatch.setenv("KAIZEN_RAY_STORAGE_PATH", str(default))
    own = kr.Supervisor.spawn("own", children=[counting(storage, "w", 1, 1)], storage_path=tmp_path / "own")
    cleanup(own)
    split = kr.Supervisor.spawn("split", children=[counting(tmp_path / "a", "a", 1, 1), counting(tmp_path / "b", "b", 1, 1)])
    cleanup(split)

    assert Path(own.storage_path) == (tmp_path / "own").resolve()
    assert Path(split.storage_path) == default.resolve()


# -- callbacks and replays -----------------------------------------------------------------------------


def test_on_shutdown_callbacks_run_at_the_end_of_each_run(ray_cluster, storage, tmp_path, cleanup):
    marker = tmp_path / "shutdown.log"
    sup = kr.Supervisor.spawn("shut", children=[counting(storage, "w", 2, 1)])
    cleanup(sup)
    sup.interrupt_manager.on_shutdown(Touch(marker))

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "completed", result
    assert marker.read_text() == "ran\n"


def test_a_child_spawned_after_the_interrupt_receives_it_once(ray_cluster, storage, tmp_path, cleanup):
    log = tmp_path / "requests.log"
    cls = type("Counted", (CountsRequests,), {"log": str(log)})
    sup = kr.Supervisor.spawn("once", children=[counting(storage, f"w{i}", 10_000, i, cls=cls) for i in range(2)])
    cleanup(sup)
    assert sup.request_interrupt("programmatic", "graceful", "not now") is True

    result = ray.get(sup.start(), timeout=WAIT_S)

    assert result["status"] == "interrupted"
    assert all(child["cycles"] == 0 for child in result["children"].values()), result
    assert sorted(log.read_text().split()) == ["once/w0", "once/w1"]


def test_child_request_interrupt_returns_the_managers_bool(ray_cluster, storage, cleanup):
    spec = counting(storage, "w", 1, 1)
    handle = Counter.spawn(config=spec.config, name="bool-child")
    cleanup(handle)
    child = _Child(spec, "bool-child", str(storage))
    child.actor = handle.actor

    assert child.request_interrupt("programmatic", "graceful", "first") is True
    assert child.request_interrupt("programmatic", "graceful", "second") is False  # the same mode again is refused
    ray.kill(handle.actor, no_restart=True)
    wait_until(lambda: _is_dead(handle.actor), "the killed actor to be dead")  # ray.kill returns before the death
    with pytest.raises(AgentGoneError, match="bool-child"):
        child.request_interrupt("programmatic", "immediate", "third")


def _is_dead(actor) -> bool:
    try:
        ray.get(actor.describe.remote(), timeout=10)
    except ray.exceptions.RayActorError:
        return True
    return False
