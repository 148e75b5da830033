"""Signed checkpoints on Ray: the key reaches the agent through its config; "latest" skips a planted unsigned file unpickled."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import KEY_ENV, FileCheckpointStorage
from tests._support.ray_agents import Counter, counting

pytestmark = pytest.mark.ray
# The planted state's class must unpickle in the actor if it ever got that far.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

KEY = "swarm-key-0f9a"


class PlantsAMarker:
    """Unpickling it creates ``path``: what a pickle from a shared bucket could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_an_agent_signs_with_its_config_key_and_resumes_past_a_planted_unsigned_checkpoint(
    ray_cluster, storage, tmp_path, monkeypatch
):
    monkeypatch.delenv(KEY_ENV, raising=False)
    cfg = kr.AutonomousConfig(storage_path=storage, checkpoint_key=KEY)
    handle = Counter.spawn(config=cfg, name="signed")
    first = handle.run(counting(3))
    assert (first["status"], first["cycles"]) == ("completed", 3)
    files = sorted(Path(storage).glob("signed/*.ckpt"))
    assert files and all(json.loads(f.read_bytes().split(b"\n", 2)[1])["signature"] for f in files)
    assert all(KEY.encode() not in f.read_bytes() for f in files)

    # Newer than every signed one, and it would run code when unpickled.
    marker = tmp_path / "code-ran"
    planted = kr.Checkpoint.new("signed", 99, "interrupted", {**first["state"], "n": 99, "evil": PlantsAMarker(str(marker))})
    FileCheckpointStorage(storage).write(planted)  # no key: unsigned

    second = handle.run(None, resume_from_checkpoint="latest")
    assert second["status"] == "completed"
    # Resumed from the last signed checkpoint (the count of 3), never from the planted one.
    assert "evil" not in second["state"] and second["state"]["n"] < 99 and second["cycles"] < 99
    assert not marker.exists()
