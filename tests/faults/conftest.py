"""The fault tier: real kills (``ray.kill``, SIGKILL of an actor's worker), real files, a real local Ray.

One Ray head for the whole tier, started on first use; each module connects
its own driver in a fresh namespace, as the integration tier does (its
``SharedHead`` and clean-up are reused from there, not copied). The tier runs
after e2e (``tests/conftest.py``): by then the integration tier's own head is
gone (its ``own_ray`` modules stop it), so two heads never share these cores
in ``make test``.

Helpers for the kills themselves are in ``_kills.py``.
"""

from __future__ import annotations

import pytest

from tests.integration.conftest import SharedHead, module_driver


@pytest.fixture(scope="session")
def fault_head():
    head = SharedHead()
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def ray_cluster(fault_head):
    """This module's driver on the tier's head, in a fresh namespace; yields the namespace."""
    with module_driver(fault_head, "fault") as namespace:
        yield namespace
