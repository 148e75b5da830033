"""How a run ended, in one vocabulary, and the one builder of its result dict.

The loop (a run that returned), the watcher (a run whose actor was killed or
died) and the supervisor (a swarm's run, its own actor's death included) all
build their results here, so every result has the same keys and meanings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from kaizen_ray.core._html import columns_table, rows_table
from kaizen_ray.core.interrupts import InterruptReason

__all__ = ["RunResult", "RunStatus", "run_result", "supervisor_result"]


class RunStatus(StrEnum):
    """How one run ended (the result's ``status``).

    >>> RunStatus("killed") is RunStatus.KILLED
    True
    """

    COMPLETED = "completed"  # done, or max_cycles reached
    INTERRUPTED = "interrupted"  # stopped for an accepted interrupt, checkpointed
    FAILED = "failed"  # a step (or the final checkpoint) raised; the last good state is checkpointed
    KILLED = "killed"  # the actor was killed past its deadline, or died: the last flushed checkpoint stands


class RunResult(dict):
    """A run's result: a plain ``dict`` (same keys, ``==``, ``json.dumps``, pickling) that Jupyter shows as a table.

    Built only by :func:`run_result` and :func:`supervisor_result`. A dict
    subclass rather than a ``display()`` helper, so that every existing use of
    results as dicts keeps working and a result on a cell's last line renders
    by itself; it crosses Ray as any dict does (the class is importable in
    every worker). Every value in the HTML is escaped.

    >>> r = run_result("a<1>", "completed", cycles=2)
    >>> isinstance(r, dict), r["cycles"], "a&lt;1&gt;" in r._repr_html_()
    (True, 2, True)
    """

    __slots__ = ()

    def _repr_html_(self) -> str:
        """An HTML table of the result (a supervisor's: its own rows, then one row per child)."""
        keys = ["status", "cycles", "cost", "checkpoint_id", "mode", "interrupt_reason", "restarts", "error", "output"]
        rows = [(k, self[k]) for k in keys if k in self and (self[k] is not None or k in ("status", "checkpoint_id"))]
        children = self.get("children")
        extra = ""
        if isinstance(children, dict) and children:
            extra = columns_table(
                ["status", "cycles", "cost", "checkpoint_id", "mode", "error"],
                {name: child for name, child in children.items() if isinstance(child, dict)},
                first="child",
            )
        return rows_table(f"{self.get('agent', '?')}: run result", rows, extra_html=extra)


def _stamped(reason: InterruptReason | None, checkpoint_id: str | None) -> InterruptReason | None:
    if reason is not None and checkpoint_id is not None:
        return reason.with_metadata(checkpoint_id=checkpoint_id)
    return reason


def run_result(
    agent: str,
    status: RunStatus | str,
    *,
    state: Any = None,
    output: Any = None,
    cycles: int = 0,
    cost: float = 0.0,
    checkpoint_id: str | None = None,
    interrupt_reason: InterruptReason | None = None,
    mode: str | None = None,
    error: BaseException | None = None,
    **extra: Any,
) -> RunResult:
    """The result dict of one agent's run.

    ``interrupt_reason`` is stamped with ``metadata["checkpoint_id"]`` when
    there is a checkpoint; ``mode`` defaults to the reason's mode.

    >>> r = run_result("a1", "interrupted", cycles=3, checkpoint_id="ck-1",
    ...                interrupt_reason=InterruptReason(source="user", mode="immediate"))
    >>> r["status"], r["mode"], r["interrupt_reason"].metadata["checkpoint_id"]
    ('interrupted', 'immediate', 'ck-1')
    """
    status = RunStatus(status)
    reason = _stamped(interrupt_reason, checkpoint_id)
    if mode is None and reason is not None:
        mode = reason.mode.value
    return RunResult({
        "status": status.value,
        "output": output,
        "state": state,
        "cycles": cycles,
        "cost": float(cost),
        "checkpoint_id": checkpoint_id,
        "interrupt_reason": reason,
        "mode": mode,
        "agent": agent,
        "error": error,
        **extra,
    })


def supervisor_result(
    supervisor: str,
    status: RunStatus | str,
    *,
    children: dict[str, dict[str, Any]],
    checkpoint_id: str | None = None,
    interrupt_reason: InterruptReason | None = None,
    restarts: int = 0,
    error: Any = None,
    **extra: Any,
) -> RunResult:
    """The result dict of a supervisor's run: its children's results under ``children``.

    >>> supervisor_result("swarm", "completed", children={})["children"]
    {}
    """
    status = RunStatus(status)
    return RunResult({
        "status": status.value,
        "children": children,
        "checkpoint_id": checkpoint_id,
        "interrupt_reason": _stamped(interrupt_reason, checkpoint_id),
        "restarts": restarts,
        "agent": supervisor,
        "error": error,
        **extra,
    })
