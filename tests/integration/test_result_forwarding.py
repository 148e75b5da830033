"""A run's result crosses each hop as the bytes the agent actor pickled once.

The agent actor pickles its result dict once; the watcher behind
``handle.start()`` (and the supervisor, for its children) forwards those bytes
unopened, and only the process that reads the result unpickles it. Counted
here with a result whose pickling and unpickling leave a line in a file, one
per event and process (the actors run on this machine).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_cluster")]


def _unpickled(log: str) -> Counted:
    with open(log, "a") as f:
        f.write(f"unpickled {os.getpid()}\n")
    return Counted(log)


class Counted:
    """An output that writes ``pickled <pid>`` / ``unpickled <pid>`` to ``log`` each time it is."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        with open(self.log, "a") as f:
            f.write(f"pickled {os.getpid()}\n")
        return (_unpickled, (self.log,))


class Outputs(kr.BaseAutonomousAgent):
    """One cycle whose output is a :class:`Counted` (not JSON: it stays out of the checkpoint)."""

    def initial_state(self, task: str) -> dict[str, str]:
        return {"log": task}

    async def step(self, state: dict[str, str], ctx: Any) -> kr.StepResult:
        return kr.StepResult(state, done=True, output=Counted(state["log"]))


def _events(log: Path) -> list[tuple[str, int]]:
    return [(kind, int(pid)) for kind, pid in (line.split() for line in log.read_text().splitlines())]


def test_an_agent_result_is_pickled_once_and_unpickled_only_by_the_driver(storage, cleanup, tmp_path) -> None:
    log = tmp_path / "events"
    handle = Outputs.spawn(config=kr.AutonomousConfig(storage_path=storage), name="outputs")
    cleanup(handle)
    log.write_text("")  # spawning pickles nothing of the output; the run is what is counted
    result = ray.get(handle.start(str(log)), timeout=60)
    assert result["status"] == "completed" and isinstance(result["output"], Counted)
    events = _events(log)
    assert [kind for kind, _ in events] == ["pickled", "unpickled"], events
    assert events[1][1] == os.getpid()  # unpickled here, in the driver, and nowhere on the way


def test_a_child_result_is_pickled_once_and_unpickled_by_its_supervisor(storage, cleanup, tmp_path) -> None:
    log = tmp_path / "events"
    swarm = kr.Supervisor.spawn(
        "forwarding", children=[kr.ChildSpec(Outputs, name="w", config=kr.AutonomousConfig(storage_path=storage), task=str(log))]
    )
    cleanup(swarm)
    log.write_text("")
    result = ray.get(swarm.start(), timeout=60)
    assert result["children"]["w"]["status"] == "completed"
    kinds = [kind for kind, _ in _events(log)]
    # The child pickles once; its supervisor unpickles it, and pickles it into its own result for the driver.
    assert kinds == ["pickled", "unpickled", "pickled", "unpickled"], kinds
