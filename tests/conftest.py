"""Test-wide settings: no usage stats, quiet Ray; tiers run fast to slow (unit, integration, e2e), then faults."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TIERS = ("unit", "integration", "e2e", "faults")  # `pytest tests` collects e2e first (alphabetical): a quick failure waits
_HERE = Path(__file__).resolve().parent


def _tier(item: pytest.Item) -> int:
    try:
        first = Path(str(item.path)).resolve().relative_to(_HERE).parts[0]
    except ValueError:  # a test outside tests/ (a doctest module, say): after the tiers
        return len(TIERS)
    return TIERS.index(first) if first in TIERS else len(TIERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit, then integration, then e2e, then faults (real kills, after the integration head is gone); a stable sort, so each module's tests stay together and in order."""
    items.sort(key=_tier)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """In a process that was a Ray driver, end it here, with the session's exit status, once every result is out.

    Ray's native threads can outlive ``ray.shutdown()`` and crash the
    interpreter's finalization after a process has been a driver of several
    sessions (ray-project/ray#31145): a whole suite passed, then "Segmentation
    fault" and a failed run. Nothing of ours runs in that finalization (every
    result, report and fixture teardown is done by now), so the process ends
    without it: Ray is shut down in order first, then ``os._exit``.
    """
    if "ray" not in sys.modules:
        return  # never a driver: the ordinary exit
    import ray

    if ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash.get(_EXIT_STATUS, 0))


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A checkpoint folder of the test's own."""
    path = tmp_path / "checkpoints"
    path.mkdir()
    return path


@pytest.fixture
def cleanup() -> Iterator[Callable[[Any], None]]:
    """Collects the handles a test spawned and kills them after it (children and budget actors die with their owner)."""
    spawned: list[Any] = []
    yield spawned.append
    for handle in spawned:
        handle.kill()


@pytest.fixture(scope="session")
def shared_head() -> Iterator[Any]:
    """The Ray head of the integration and fault tiers (tests/_support/ray_head.py), stopped at the session's end."""
    from tests._support.ray_head import SharedHead  # imports ray: only for the tiers that use it

    head = SharedHead()
    try:
        yield head
    finally:
        head.stop()
