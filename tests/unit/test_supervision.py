"""Supervision decisions over plain data: restart bookkeeping, manifest placement, phases, spawn's arguments.

The restart record is driven by a fake clock (plain numbers): no sleeps.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kaizen_ray.core.errors import ConfigError

import kaizen_ray as kr
from kaizen_ray.core.supervision import (
    SUPERVISOR_TRANSITIONS,
    SupervisorPhase,
    add_restart,
    check_transition,
    manifest_storage_path,
    restart_allowed,
    supervisor_config,
)

# -- add_restart (OTP's add_restart) ----------------------------------------------------


def test_add_restart_keeps_only_the_restarts_inside_the_window():
    times: list[float] = []
    for now in range(0, 10_000, 7):  # a long-lived supervisor, one restart every 7 s, window 5 s
        times, allowed = add_restart(times, float(now), max_restarts=3, window_s=5.0)
        assert allowed
        assert times == [float(now)]  # the older ones left the window and are dropped


def test_add_restart_refuses_past_max_restarts_within_the_window_and_records_no_refused_restart():
    times, clock = [], 100.0
    for _ in range(3):
        clock += 1.0
        times, allowed = add_restart(times, clock, max_restarts=3, window_s=5.0)
        assert allowed
    assert times == [101.0, 102.0, 103.0]
    times, allowed = add_restart(times, 104.0, max_restarts=3, window_s=5.0)
    assert (times, allowed) == ([101.0, 102.0, 103.0], False)
    # Once 101 leaves the window (106 - 5 = 101, the window is open at its start), one more is allowed.
    times, allowed = add_restart(times, 106.0, max_restarts=3, window_s=5.0)
    assert (times, allowed) == ([102.0, 103.0, 106.0], True)


@given(
    st.lists(st.floats(min_value=0.0, max_value=50.0, allow_nan=False), max_size=60),
    st.integers(min_value=0, max_value=6),
    st.floats(min_value=0.1, max_value=20.0, allow_nan=False),
)
def test_add_restart_agrees_with_restart_allowed_and_stays_bounded(gaps, max_restarts, window_s):
    times: list[float] = []
    clock = 0.0
    for gap in gaps:
        clock += gap
        expected = restart_allowed(times, clock, max_restarts, window_s)
        times, allowed = add_restart(times, clock, max_restarts, window_s)
        assert allowed is expected
        assert len(times) <= max_restarts
        assert all(clock - window_s < t <= clock for t in times)


def test_add_restart_refuses_bad_numbers():
    with pytest.raises(ValueError, match="max_restarts"):
        add_restart([], 0.0, max_restarts=-1, window_s=5.0)
    with pytest.raises(ValueError, match="now"):
        add_restart([], float("nan"), max_restarts=1, window_s=5.0)


# -- where the manifest goes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("own", "children", "expected"),
    [
        ("/mine", ["/ck", "/ck"], "/mine"),  # its own wins
        ("/mine", ["/a", "/b"], "/mine"),
        (None, ["/ck", "/ck", "/ck"], "/ck"),  # beside children that share one
        (None, ["/ck"], "/ck"),
        (None, ["/a", "/b"], None),  # otherwise the default
    ],
)
def test_manifest_storage_path(own, children, expected):
    assert manifest_storage_path(own, children) == expected


# -- phases ------------------------------------------------------------------------------


def test_every_phase_has_a_row_and_a_run_can_follow_a_finished_one():
    assert set(SUPERVISOR_TRANSITIONS) == set(SupervisorPhase)
    path = ["idle", "starting", "running", "stopping", "finished", "starting", "running", "finished"]
    phase = SupervisorPhase.IDLE
    for nxt in path[1:]:
        phase = check_transition(phase, nxt)
    assert phase is SupervisorPhase.FINISHED


@pytest.mark.parametrize(
    ("current", "new"),
    [("idle", "running"), ("running", "starting"), ("stopping", "running"), ("finished", "stopping"), ("idle", "finished")],
)
def test_a_transition_off_the_table_is_refused_naming_both_phases(current, new):
    with pytest.raises(RuntimeError, match=f"from {current} to {new}"):
        check_transition(current, new)


def test_an_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="sleeping"):
        check_transition("idle", "sleeping")


# -- SupervisorConfig validation -----------------------------------------------------------


@pytest.mark.parametrize("bad", [True, 2.5, "3", -1])
def test_max_restarts_must_be_a_plain_int(bad):
    with pytest.raises(ConfigError, match="max_restarts"):
        kr.SupervisorConfig(max_restarts=bad)


# -- Supervisor.spawn's arguments -----------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("strategy", "rest_for_one"), ("max_restarts", 0), ("restart_window_s", 9.0)])
def test_a_restart_flag_next_to_a_config_is_refused_naming_it(flag, value):
    with pytest.raises(ConfigError, match=f"{flag} must be left out when config= is given") as caught:
        supervisor_config(kr.SupervisorConfig(strategy="one_for_all"), **{flag: value})
    assert caught.value.value == value


def test_restart_flags_alone_build_the_config_with_its_defaults_for_the_rest():
    assert supervisor_config(max_restarts=0) == kr.SupervisorConfig(max_restarts=0)
    assert supervisor_config() == kr.SupervisorConfig()
    assert supervisor_config({"strategy": "one_for_all"}).strategy is kr.RestartStrategy.ONE_FOR_ALL


def test_storage_path_joins_a_config_and_two_different_ones_are_refused(tmp_path):
    joined = supervisor_config(kr.SupervisorConfig(max_restarts=1), storage_path=tmp_path)
    assert (joined.storage_path, joined.max_restarts) == (tmp_path, 1)
    assert supervisor_config(kr.SupervisorConfig(storage_path=tmp_path), storage_path=str(tmp_path)).storage_path == tmp_path
    with pytest.raises(ConfigError, match="storage_path"):
        supervisor_config(kr.SupervisorConfig(storage_path=tmp_path / "a"), storage_path=tmp_path / "b")
