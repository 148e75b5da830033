"""How a run ended, in one vocabulary, and the one builder of its result dict.

The loop (a run that returned), the watcher (a run whose actor was killed or
died) and the supervisor (a swarm's run, its own actor's death included) all
build their results here, so every result has the same keys and meanings.
"""

from __future__ import annotations

import reprlib
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
class _BoundedRepr(reprlib.Repr):
    """reprlib with limits a person reads whole, and bytes cut before they are rendered.

    reprlib renders an unknown value whole and only then cuts it: for 64 MB of
    bytes that is a 256 MB string and about a second. Bytes are cut first here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 8
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = 200
        self.maxstring = self.maxother = 4000
        self.maxlong = 400

    def repr_bytes(self, x: bytes | bytearray, level: int) -> str:
        if len(x) <= self.maxstring // 4:
            return repr(x)
        half = self.maxstring // 16  # a byte renders as up to 4 characters
        return f"{repr(x[:half])}...{repr(x[-half:])} ({len(x)} bytes)"

    repr_bytearray = repr_bytes

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        """In insertion order, as ``dict.__repr__`` (reprlib sorts the keys)."""
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in list(x.items())[: self.maxdict]]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"


_REPR = _BoundedRepr()
_CONTAINERS = (dict, list, tuple, set, frozenset)


def _renders_small(value: Any, limit: int = 2000) -> bool:
    """True if no str or bytes inside ``value``'s containers is long, and there are few of them.

    Then ``dict.__repr__`` (in C) renders the result as the bounded repr would, several times faster.
    """
    todo, seen = [value], 0
    while todo:
        x = todo.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(x, (str, bytes, bytearray)):
            if len(x) > _REPR.maxstring // 4:
                return False
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, _CONTAINERS):
            todo.extend(x)
    return True


class RunResult(dict):
    """A run's result: a plain ``dict`` (same keys, ``==``, ``json.dumps``, pickling) that Jupyter shows as a table.

    Built only by :func:`run_result` and :func:`supervisor_result`. A dict
    subclass rather than a ``display()`` helper, so that every existing use of
    results as dicts keeps working and a result on a cell's last line renders
    by itself; it crosses Ray as any dict does (the class is importable in
    every worker). Every value in the HTML is escaped.

    Its repr is a dict's, bounded: a value of more than a few thousand
    characters (a state of many megabytes) is shown cut in the middle with its
    size, so printing a result, or asyncio rendering the finished task of
    ``asyncio.run(agent.run_autonomous(...))`` (Python 3.11 does, as the run
    returns), never renders the whole state.

    >>> r = run_result("a<1>", "completed", cycles=2)
    >>> isinstance(r, dict), r["cycles"], "a&lt;1&gt;" in r._repr_html_()
    (True, 2, True)
    >>> len(repr(run_result("a1", "completed", state=bytes(1 << 20)))) < 5000
    True
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return dict.__repr__(self) if _renders_small(self) else _REPR.repr_dict(self, _REPR.maxlevel)

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
