"""The fault tier: real kills (``ray.kill``, SIGKILL of an actor's worker), real files, a real local Ray.

The integration tier's Ray head (the ``shared_head`` fixture of
tests/conftest.py), started again on first use if an ``own_ray`` module
stopped it; each module connects its own driver in a fresh namespace, as the
integration tier does. The tier runs after e2e (``tests/conftest.py``), so
one head serves both tiers and two heads never share these cores.

Helpers for the kills themselves are in ``_kills.py``.
"""

from __future__ import annotations

import pytest

from tests._support.ray_head import module_driver


@pytest.fixture(scope="module")
def ray_cluster(shared_head):
    """This module's driver on the shared head, in a fresh namespace; yields the namespace."""
    with module_driver(shared_head, "fault") as namespace:
        yield namespace
