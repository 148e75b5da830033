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

__all__ = ["RunResult", "RunStatus", "end_line", "forwarded_by", "run_result", "supervisor_result"]


class RunStatus(StrEnum):
    """How one run ended (the result's ``status``).

    >>> RunStatus("killed") is RunStatus.KILLED
    True
    """

    COMPLETED = "completed"  # done, or max_cycles reached
    INTERRUPTED = "interrupted"  # stopped for an accepted interrupt, checkpointed
    FAILED = "failed"  # a step (or the final checkpoint) raised; the last good state is checkpointed
    KILLED = "killed"  # the actor was killed past its deadline, or died: the last flushed checkpoint stands


def _origin(reason: InterruptReason) -> str:
    meta = reason.metadata
    handler = meta.get("handler")
    if handler == "timeout":
        return "timer"
    if handler == "budget":
        return f"budget:{meta['scope']}" if meta.get("scope") else "budget"
    if handler == "escalation":
        return f"escalation:{meta['cause']}" if meta.get("cause") else "escalation"
    if meta.get("by") == "kaizen-ray":
        return "cli"
    if meta.get("signal"):
        return str(meta["signal"])
    if meta.get("cause") == "restart" and meta.get("supervisor"):
        return f"restart:{meta['supervisor']}"
    if meta.get("cancelled"):
        return "cancelled"
    return reason.source.value  # a direct request_interrupt call: its source is all we know


def forwarded_by(reason: InterruptReason | None) -> list[str] | None:
    """Where a stop came from, then every manager that forwarded it, in order (None without a stop).

    The first entry is the origin, read from the reason's metadata: ``"timer"``,
    ``"budget:<scope>"``, ``"escalation[:<cause>]"``, ``"cli"``, a signal name
    (``"SIGINT"``: Ctrl+C), ``"restart:<supervisor>"``, ``"cancelled"``, else
    the source. The rest is ``metadata["forwarded_by"]``, appended to by each
    forwarding manager: a driver's Ctrl+C shows ``"driver:<name>"``, a
    supervisor its name.

    >>> r = InterruptReason(source="user", metadata={"signal": "SIGINT", "forwarded_by": ["driver:swarm", "swarm"]})
    >>> forwarded_by(r)
    ['SIGINT', 'driver:swarm', 'swarm']
    """
    if reason is None:
        return None
    return [_origin(reason), *reason.metadata.get("forwarded_by", [])]


def end_line(
    agent: str,
    status: RunStatus | str,
    cycles: int,
    reason: InterruptReason | None = None,
    mode: str | None = None,
    checkpoint_id: str | None = None,
    error: BaseException | str | None = None,
) -> str:
    """The one log line of a run's end; for a stop: its reason, source, mode and who forwarded it.

    >>> r = InterruptReason(source="system", mode="graceful", message="timeout after 5s",
    ...                     metadata={"handler": "timeout", "forwarded_by": ["swarm"]})
    >>> end_line("swarm/w1", "interrupted", 7, r, checkpoint_id="ck-9")
    "run of swarm/w1 ended interrupted at cycle 7: stop 'timeout after 5s' source=system mode=graceful forwarded_by=timer>swarm checkpoint=ck-9"
    """
    line = f"run of {agent} ended {RunStatus(status).value} at cycle {cycles}"
    if reason is not None:
        chain = ">".join(forwarded_by(reason) or [])
        line += f": stop {reason.message!r} source={reason.source.value} mode={mode or reason.mode.value} forwarded_by={chain}"
    if checkpoint_id is not None:
        line += f" checkpoint={checkpoint_id}"
    if error is not None:
        line += f" error={error!r}"
    return line
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
    there is a checkpoint; ``mode`` defaults to the reason's mode;
    ``forwarded_by`` is the stop's provenance (:func:`forwarded_by`).

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
        "forwarded_by": forwarded_by(reason),
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
        "forwarded_by": forwarded_by(interrupt_reason),
        "restarts": restarts,
        "agent": supervisor,
        "error": error,
        **extra,
    })
