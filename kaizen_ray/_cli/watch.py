"""``kaizen-ray ls --watch``: the table redrawn every few seconds until Ctrl+C (no Ray here: the rows come from a callable).

A refresh is drawn on a fixed schedule (start + k * interval), so a slow
listing does not make the table drift; ticks missed while listing are skipped,
not caught up. Ctrl+C ends the watch, which is its normal way out: the caller
returns exit code 0.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable
from typing import Any

import click

from kaizen_ray._cli.render import dumps, table

__all__ = ["CLEAR", "Interval", "frame", "watch"]

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: what `watch` does on a terminal


class Interval(click.ParamType):
    """Seconds between refreshes: a finite number > 0 (click's FloatRange lets ``nan`` through).

    >>> Interval().convert("0.5", None, None)
    0.5
    >>> Interval().convert("nan", None, None)
    Traceback (most recent call last):
    click.exceptions.BadParameter: 'nan' is not a finite number of seconds > 0.
    """

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            self.fail(f"{value!r} is not a finite number of seconds > 0.", param, ctx)
        return seconds


def frame(rows: list[dict[str, Any]], namespace: str, interval_s: float, *, as_json: bool, now: _dt.datetime | None = None) -> str:
    """One refresh as printed: a JSON line (the ``ls --json`` list), or a header line and the table.

    >>> frame([], "kaizen", 1.0, as_json=True)
    '[]'
    >>> print(frame([], "kaizen", 2.0, as_json=False, now=_dt.datetime(2026, 1, 1, 12, 0, 5)))
    every 2s: kaizen-ray ls (namespace 'kaizen')  12:00:05  Ctrl+C to stop
    no agents in namespace 'kaizen'
    """
    if as_json:
        return dumps(rows)
    stamp = (now or _dt.datetime.now()).strftime("%H:%M:%S")
    header = f"every {interval_s:g}s: kaizen-ray ls (namespace {namespace!r})  {stamp}  Ctrl+C to stop"
    return header + "\n" + (table(rows) if rows else f"no agents in namespace {namespace!r}")


def watch(
    refresh: Callable[[], str],
    show: Callable[[str], None],
    interval_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    refreshes: int | None = None,
) -> int:
    """Call ``show(refresh())`` every ``interval_s`` seconds until Ctrl+C (or ``refreshes`` times); how many were shown.

    >>> shown = []
    >>> watch(lambda: "t", shown.append, 0.001, refreshes=3), shown
    (3, ['t', 't', 't'])
    """
    start, shown = clock(), 0
    try:
        while refreshes is None or shown < refreshes:
            show(refresh())
            shown += 1
            if refreshes is not None and shown >= refreshes:
                break
            # The next tick on the fixed schedule that is still ahead.
            ticks = math.floor((clock() - start) / interval_s) + 1
            sleep(max(0.0, start + ticks * interval_s - clock()))
    except KeyboardInterrupt:  # Ctrl+C is how a watch ends: not an error
        pass
    return shown
