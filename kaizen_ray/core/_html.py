"""Small HTML tables for Jupyter: every value escaped, long values cut.

Used by :class:`~kaizen_ray.core.results.RunResult` and the Ray handles'
``_repr_html_``. Pure string building: no IPython, no Ray.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["cell", "rows_table", "columns_table"]

_MAX_CHARS = 200  # a state or output can be huge: a table cell shows its start


def cell(value: Any) -> str:
    """``value`` as escaped text for one table cell (``None`` is empty; long values are cut).

    >>> cell("<b>&</b>")
    '&lt;b&gt;&amp;&lt;/b&gt;'
    >>> cell(None), cell(0.5)
    ('', '0.5')
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else _describe(value)
    if len(text) > _MAX_CHARS:
        text = text[: _MAX_CHARS - 1] + "…"
    return html.escape(text, quote=True)


def _describe(value: Any) -> str:
    message = getattr(value, "message", None)
    source = getattr(value, "source", None)
    if message is not None and source is not None:  # an InterruptReason: its story, not its pydantic repr
        mode = getattr(value, "mode", None)
        kind = "/".join(str(getattr(v, "value", v)) for v in (source, mode) if v is not None)
        return f"{kind}: {message}" if message else kind
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return repr(value)


def rows_table(title: str, rows: Iterable[tuple[str, Any]], *, extra_html: str = "") -> str:
    """A two-column table (key, value) under an escaped caption; ``extra_html`` (already safe) follows it.

    >>> rows_table("a1 <x>", [("status", "completed")])
    '<div class="kaizen-ray"><table><caption>a1 &lt;x&gt;</caption><tr><th style="text-align:left">status</th><td style="text-align:left">completed</td></tr></table></div>'
    """
    body = "".join(
        f'<tr><th style="text-align:left">{cell(k)}</th><td style="text-align:left">{cell(v)}</td></tr>' for k, v in rows
    )
    return f'<div class="kaizen-ray"><table><caption>{cell(title)}</caption>{body}</table>{extra_html}</div>'


def columns_table(columns: list[str], records: Mapping[str, Mapping[str, Any]], *, first: str = "name") -> str:
    """A table with one row per record (its key first), one column per name in ``columns``.

    >>> columns_table(["status"], {"w<1>": {"status": "completed"}})
    '<table><tr><th>name</th><th>status</th></tr><tr><td>w&lt;1&gt;</td><td>completed</td></tr></table>'
    """
    head = "".join(f"<th>{cell(c)}</th>" for c in [first, *columns])
    body = "".join(
        "<tr>" + f"<td>{cell(key)}</td>" + "".join(f"<td>{cell(rec.get(c))}</td>" for c in columns) + "</tr>"
        for key, rec in records.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"
