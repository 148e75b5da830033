"""The one bounded wait of the test suite: for an event a test cannot be told about directly.

A file an actor touches, a status a remote agent reaches, a record that
appears: poll for it, and fail with a message naming what was awaited, well
before pytest's own per-test timeout (180 s, see pyproject.toml) would cut the
test off without one.

>>> import itertools
>>> counter = itertools.count()
>>> wait_until(lambda: next(counter) >= 3, "the counter to reach 3", poll=0.001)
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["DEFAULT_TIMEOUT_S", "MAX_TIMEOUT_S", "wait_until"]

DEFAULT_TIMEOUT_S = 60.0  # generous: four other Ray users share these two cores
# A wait must end (and say what it waited for) while the test still has time
# for its other waits and its teardown inside pytest's 180 s.
MAX_TIMEOUT_S = 120.0


def wait_until(
    predicate: Callable[[], Any], what: str, timeout: float = DEFAULT_TIMEOUT_S, poll: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Fails the test after ``timeout`` seconds with ``what`` and the last value
    seen. Exceptions from ``predicate`` propagate at once.

    >>> wait_until(lambda: None, "nothing", timeout=0.01, poll=0.001)
    Traceback (most recent call last):
    ...
    Failed: timed out after 0.01s waiting for nothing (last value: None)
    """
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT_S}] s to fail before pytest's own timeout, got {timeout!r}")
    if not 0 < poll <= timeout:
        raise ValueError(f"poll must be in (0, timeout={timeout!r}] s, got {poll!r}")
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(poll)
