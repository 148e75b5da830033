"""The e2e tier: every subprocess through tests/_support/processes.py, ended with its process group."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._support.processes import Process


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start a :class:`Process` (logs in the test's tmp_path); every one is ended by process group after the test."""
    started: list[Process] = []

    def start(argv: list[Any], **kwargs: Any) -> Process:
        kwargs.setdefault("log_dir", tmp_path)
        kwargs.setdefault("name", f"child{len(started)}")
        started.append(Process(argv, **kwargs))
        return started[-1]

    yield start
    for child in started:
        child.close()
