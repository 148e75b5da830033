"""``kaizen-ray ls --watch`` without Ray: the interval's checks, the frames, and the refresh schedule on a fake clock.

The end-to-end watch (a real SIGINT to a real ``ls --watch --json`` against a
``ray start`` cluster) is in tests/e2e/test_cli_cluster.py.
"""

from __future__ import annotations

import datetime as dt
import doctest
import json

import click
import pytest

import kaizen_ray._cli.watch as watch_module
from kaizen_ray._cli.watch import CLEAR, Interval, frame, watch
from kaizen_ray.cli import main

ROW = {"name": "w1", "kind": "agent", "phase": "running", "cycle": 3, "cost": 0.03, "checkpoint_id": "ck-1"}


class FakeClock:
    """A monotonic clock that moves only when slept on, or when a refresh says it took time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "soon", ""])
def test_an_interval_that_is_not_a_finite_positive_number_is_refused_naming_the_value(value: str) -> None:
    with pytest.raises(click.BadParameter) as caught:
        Interval().convert(value, None, None)
    assert repr(value) in str(caught.value) and "seconds > 0" in str(caught.value)


def test_the_command_refuses_a_bad_interval_with_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--watch", "--interval", "nan"]) == 2  # refused by click, before any Ray starts
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == ["kaizen-ray: error: Invalid value for '--interval': 'nan' is not a finite number of seconds > 0."]


def test_an_interval_without_watch_is_refused_not_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--interval", "2"]) == 2  # before any Ray starts
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == ["kaizen-ray: error: --interval applies to --watch only: add --watch, or drop --interval"]


def test_a_json_frame_is_one_line_holding_the_ls_json_list() -> None:
    line = frame([ROW, {**ROW, "name": "w2", "checkpoint_id": None}], "ns", 1.0, as_json=True)
    assert "\n" not in line and json.loads(line) == [ROW, {**ROW, "name": "w2", "checkpoint_id": None}]


def test_a_text_frame_is_a_header_and_the_table() -> None:
    text = frame([ROW], "ns", 0.5, as_json=False, now=dt.datetime(2026, 1, 1, 9, 30, 0))
    header, columns, row = text.splitlines()
    assert header == "every 0.5s: kaizen-ray ls (namespace 'ns')  09:30:00  Ctrl+C to stop"
    assert columns.split() == ["NAME", "KIND", "PHASE", "CYCLE", "COST", "CHECKPOINT_ID"]
    assert row.split() == ["w1", "agent", "running", "3", "0.03", "ck-1"]
    noisy = frame([{**ROW, "cost": 0.01 * 163}], "ns", 0.5, as_json=False)  # 1.6300000000000001 as summed
    assert noisy.splitlines()[2].split()[4] == "1.63"
    assert CLEAR not in text  # the command adds it, on a terminal only


def test_refreshes_keep_to_a_fixed_schedule_and_skip_the_ticks_a_slow_refresh_missed() -> None:
    clock = FakeClock()
    took = iter([0.25, 0.0, 2.5, 0.0])  # the third refresh overruns two ticks

    def refresh() -> str:
        clock.now += next(took)
        return "frame"

    shown: list[float] = []
    assert watch(refresh, lambda _: shown.append(clock.now), 1.0, clock=clock, sleep=clock.sleep, refreshes=4) == 4
    assert shown == [100.25, 101.0, 104.5, 105.0]  # shown as each refresh returned; started on 100, 101, 102, 105
    assert clock.slept == [0.75, 1.0, 0.5]


def test_ctrl_c_ends_the_watch_quietly_wherever_it_lands() -> None:
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 2:
            raise KeyboardInterrupt  # pressed while waiting for the third refresh

    assert watch(lambda: "f", lambda _: None, 1.0, clock=clock, sleep=sleep) == 2

    def refresh() -> str:
        raise KeyboardInterrupt  # pressed while the cluster was being asked

    assert watch(refresh, lambda _: None, 1.0, clock=clock, sleep=clock.sleep) == 0


def test_the_watch_module_doctests_pass() -> None:
    result = doctest.testmod(watch_module)
    assert result.attempted >= 4 and result.failed == 0
