"""One local Ray per test module (start-up costs seconds here), torn down with it."""

from __future__ import annotations

import uuid

import pytest
import ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A fresh local Ray (2 CPUs, no dashboard) in a namespace of its own; yields the namespace."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    ray.init(
        address="local",
        num_cpus=2,
        namespace=namespace,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield namespace
    finally:
        ray.shutdown()


@pytest.fixture
def storage(tmp_path):
    """A checkpoint folder of the test's own."""
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path


@pytest.fixture
def cleanup():
    """Collects the handles a test spawned and kills them after it (children and budget actors die with their owner)."""
    spawned: list = []
    yield spawned.append
    for handle in spawned:
        handle.kill()
