"""The docstring examples of the Ray-side modules run, once (the core's run in tests/unit/test_public_api.py).

Examples that need a running cluster are marked ``+SKIP`` in the modules;
every other example runs here, without a cluster. A module whose examples are
all skipped still counts: the test says how many ran, so a lost example shows.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import kaizen_ray.runtime

RAY_SIDE = sorted(
    [m.name for m in pkgutil.walk_packages(kaizen_ray.runtime.__path__, "kaizen_ray.runtime.")]
    + ["kaizen_ray._demo", "kaizen_ray.cli"]
)
# Modules with examples that run without a cluster: at least this many each.
RUNNABLE = {
    "kaizen_ray.runtime._actors": 3,
    "kaizen_ray.runtime._metrics": 1,
    "kaizen_ray.runtime._namespaces": 3,
    "kaizen_ray.runtime._proxy": 2,
    "kaizen_ray.runtime._shipping": 5,
    "kaizen_ray.runtime.agent_actor": 5,
    "kaizen_ray.runtime.budget": 4,
    "kaizen_ray.runtime.timer": 7,
}


@pytest.mark.parametrize("module", RAY_SIDE)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed (see above)"
    assert result.attempted >= RUNNABLE.get(module, 0), f"only {result.attempted} examples of {module} ran"
