"""Checkpoints at ``s3://`` on a real local S3 (moto_server) and a real Ray.

The module starts one moto_server and one driver on the shared Ray head whose
job carries the ``AWS_*`` variables (``runtime_env``), as a cluster without a
shared disk would: the agent actors and the checkpoint store reach S3 by the
standard variables alone. The driver sets them too, and loads checkpoints
without going through Ray.
"""

from __future__ import annotations

import logging
import sys
import uuid

import pytest
import ray
import ray.cloudpickle

import kaizen_ray as kr
from kaizen_ray.core.checkpoint import Checkpoint, FileCheckpointStorage
from tests._support.ray_agents import Counter, Spender, counting

pytestmark = pytest.mark.ray

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def s3_ray(shared_head, s3):
    """This module's driver, its job carrying the S3 variables to every worker; yields the namespace."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    ray.init(
        address=shared_head.address(), namespace=namespace, log_to_driver=False, configure_logging=False,
        runtime_env={"env_vars": dict(s3.env)},
    )
    try:
        yield namespace
    finally:
        try:
            for entry in ray.util.list_named_actors(all_namespaces=True):
                if entry["namespace"] in (namespace, "kaizen"):
                    try:
                        ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]), no_restart=True)
                    except ValueError:  # died meanwhile
                        pass
        finally:
            ray.shutdown()


@pytest.fixture
def uri(s3):
    """A prefix of the test's own in the module's bucket."""
    return f"s3://{s3.bucket}/{uuid.uuid4().hex[:8]}/ckpts"


def _keys(s3, uri: str) -> list[str]:
    prefix = uri.removeprefix(f"s3://{s3.bucket}/") + "/"
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return [obj["Key"].removeprefix(prefix) for obj in listed.get("Contents", [])]


def _truncate(s3, uri: str, key: str, by: int = 5) -> None:
    full = uri.removeprefix(f"s3://{s3.bucket}/") + "/" + key
    client = s3.client()
    body = client.get_object(Bucket=s3.bucket, Key=full)["Body"].read()
    client.put_object(Bucket=s3.bucket, Key=full, Body=body[:-by])


def test_an_agent_actor_checkpoints_to_s3_and_the_driver_loads_them_without_ray(s3_ray, s3, uri, cleanup):
    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=uri), name="s3-counter")
    cleanup(handle)
    assert handle.storage_path == uri  # passed around as the URI, never as a local Path

    result = handle.run(counting(3))

    assert result["status"] == "completed" and result["output"] == 3
    keys = _keys(s3, uri)
    assert f"s3-counter/{result['checkpoint_id']}.ckpt" in keys
    # No temp or probe objects left ("" is the folder marker pyarrow keeps when it deletes the probe).
    assert all(k.startswith("s3-counter/ck-") and k.endswith(".ckpt") for k in keys if k), keys
    # The driver reads S3 itself: no Ray call behind these two.
    loaded = kr.load_checkpoint(result["checkpoint_id"], storage_path=uri)
    assert loaded.cycle == 3 and loaded.state["n"] == 3
    infos = kr.list_checkpoints(uri, agent="s3-counter")
    assert infos[-1].id == result["checkpoint_id"] and all(i.path.startswith(uri + "/") for i in infos)

    # "latest" resumes there (a completed state: nothing left to count); a fresh run of this task ends at n == 1.
    again = handle.run(counting(1), resume_from_checkpoint="latest")
    assert again["status"] == "completed" and again["state"]["n"] == 3


def test_latest_skips_a_truncated_object_in_the_bucket_with_a_warning(s3_ray, s3, uri, cleanup, caplog):
    # Written from the driver, so the store has no copy in memory: "latest" must come from the bucket.
    storage = FileCheckpointStorage(uri)
    # Each state counts to its own goal: the final n says which one the run resumed from.
    good = Checkpoint.new("s3-resumer", 2, "interrupted", Counter.initial_state(None, counting(6)) | {"n": 2})
    bad = Checkpoint.new("s3-resumer", 4, "interrupted", Counter.initial_state(None, counting(9)) | {"n": 4})
    storage.write(good)
    storage.write(bad)
    _truncate(s3, uri, f"s3-resumer/{bad.id}.ckpt")

    with caplog.at_level(logging.WARNING, logger="kaizen_ray"):
        assert storage.load_latest("s3-resumer").id == good.id
    assert any(bad.id in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)

    handle = Counter.spawn(config=kr.AutonomousConfig(storage_path=uri), name="s3-resumer")
    cleanup(handle)
    result = handle.run(counting(1), resume_from_checkpoint="latest")
    assert result["status"] == "completed" and result["state"]["n"] == 6  # good: 6; the truncated one: 9; fresh: 1


def test_the_budget_ledger_of_an_s3_storage_is_an_object_in_the_bucket(s3_ray, s3, uri, cleanup):
    handle = Spender.spawn(config=kr.AutonomousConfig(storage_path=uri, max_cycles=20), name="s3-spender")
    cleanup(handle)
    handle.add_handler(kr.BudgetInterruptHandler(max_cost=0.25))

    result = handle.run({"cost": 0.1, "delay": 0.0})

    assert result["status"] == "interrupted" and result["interrupt_reason"].metadata["handler"] == "budget"
    ledgers = [k for k in _keys(s3, uri) if k.startswith(".budgets/")]
    assert len(ledgers) == 1 and ledgers[0].startswith(".budgets/s3-spender-")
    # The listing of checkpoints is not confused by the ledger beside them.
    assert {i.agent for i in kr.list_checkpoints(uri)} == {"s3-spender"}
