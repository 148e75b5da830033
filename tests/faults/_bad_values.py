"""What is wrong for each kind of field, as hypothesis strategies, and what a clear error is.

Shared by the fault tier's bad-input modules (pure, and on Ray).

>>> isinstance(ValueError("got 3"), CLEAR)
True
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import kaizen_ray as kr

PURE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ON_RAY = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLEAR = (kr.KaizenError, TypeError, ValueError)


def assert_clear(caught: pytest.ExceptionInfo[BaseException], value: Any, field: str | None = None) -> None:
    """The error is of a clear kind and its message names ``value`` (its repr) or ``field``."""
    error = caught.value
    message = str(error)
    assert isinstance(error, CLEAR), f"{type(error).__name__}: {message}"
    named = repr(value) in message or (field is not None and field in message)
    assert named, f"the message names neither {value!r} nor {field!r}: {message}"


# -- what is wrong for each kind of field -------------------------------------------------------

words = st.text(alphabet=string.ascii_letters, min_size=1, max_size=12)
containers = st.one_of(st.lists(st.integers(), max_size=3), st.dictionaries(words, st.integers(), max_size=2))
not_integral = st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: not f.is_integer())


def bad_int(least: int) -> st.SearchStrategy[Any]:
    """Not an int >= ``least``: smaller ints, words, fractions, containers."""
    return st.one_of(st.integers(max_value=least - 1), words, not_integral, containers)


bad_seconds = st.one_of(
    st.floats(max_value=0, exclude_max=True), st.just(float("nan")), st.just(float("inf")), words, containers
)
bad_bool = st.one_of(st.integers().filter(lambda i: i not in (0, 1)), words.filter(
    lambda w: w.lower() not in {"true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"}
), containers)
bad_path = st.one_of(st.integers(), st.floats(), containers, st.just(""))
bad_name = st.one_of(
    st.text(max_size=6).map(lambda s: f"../{s}"), st.text(max_size=6).map(lambda s: f".{s}"), st.just(""),
    st.text(alphabet=" !@#$%^&*()+=?<>|\\", min_size=1, max_size=6), st.integers(), containers,
)
bad_enum = st.one_of(words, st.integers(), containers)
bad_checkpoint_id = st.one_of(
    st.text(max_size=6).map(lambda s: f"../{s}"), st.just(""), st.text(alphabet=" /\\*?", min_size=1, max_size=6),
    st.text(alphabet="a", min_size=129, max_size=140), st.integers(), containers,
)


