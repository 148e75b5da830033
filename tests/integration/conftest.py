"""One local Ray head for the whole integration tier; a driver of its own, in a fresh namespace, per module.

Starting Ray costs seconds here, connecting a driver about one: the head
(``tests/_support/ray_head.py``, held by the ``shared_head`` fixture of
tests/conftest.py, which the fault tier shares) starts when the first module
needs it, and each module connects to it in a namespace of its own. When the module's driver disconnects, the actors it owns die with it;
its detached SYSTEM actors (checkpoint store, timer) are killed by name, so
modules never see each other's agents, stores or timers.

Modules that need a Ray of their own (a two-node cluster, a Ray restarted
mid-test) are marked ``own_ray``: they run after the others, and the shared
head is stopped before them (two Rays at once would share these two cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from tests._support.moto import moto_s3
from tests._support.ray_head import module_driver


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "own_ray: the module starts and stops its own Ray; runs after the shared head is gone")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Within this tier's slots of ``items``, put the ``own_ray`` modules last (others' order untouched)."""
    here = Path(__file__).resolve().parent
    slots = [i for i, item in enumerate(items) if here in Path(item.path).resolve().parents]
    ours = [items[i] for i in slots]
    ordered = sorted(ours, key=lambda item: item.get_closest_marker("own_ray") is not None)  # stable
    for i, item in zip(slots, ordered, strict=True):
        items[i] = item


@pytest.fixture(scope="module")
def ray_cluster(shared_head):
    """This module's driver on the shared head, in a fresh namespace; yields the namespace."""
    with module_driver(shared_head, "test") as namespace:
        yield namespace


@pytest.fixture(scope="module")
def own_ray(shared_head):
    """For ``own_ray`` modules: no shared head (nor driver) running while the module starts its own Ray."""
    shared_head.stop()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def s3():
    """A moto_server for the module (S3 on loopback), its ``AWS_*`` variables set in the driver too."""
    with moto_s3() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in server.env.items():
            mp.setenv(key, value)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)  # one endpoint variable: AWS_ENDPOINT_URL
        yield server
