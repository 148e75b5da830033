"""Supervision decisions as pure functions over plain data (OTP's supervisor, for agents).

How a child's run ended (its *exit*), whether its restart policy restarts it,
and which children a restart strategy takes down and brings back. The
restart intensity check is :func:`kaizen_ray.core.deadlines.restart_allowed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from kaizen_ray.core.config import RestartPolicy, RestartStrategy
from kaizen_ray.core.deadlines import restart_allowed

__all__ = ["ChildExit", "classify_exit", "should_restart", "children_to_restart", "restart_allowed"]


class ChildExit(StrEnum):
    """How one run of a child ended."""

    COMPLETED = "completed"  # done, or max_cycles reached
    INTERRUPTED = "interrupted"  # stopped on request, checkpointed
    FAILED = "failed"  # its step raised
    KILLED = "killed"  # killed on purpose, past its IMMEDIATE deadline
    CRASHED = "crashed"  # its actor died on its own: OOM, a lost node, a kill from outside


def classify_exit(result: Mapping[str, Any]) -> ChildExit:
    """The exit of a child from its result dict.

    >>> classify_exit({"status": "killed", "error": RuntimeError("actor died")})
    <ChildExit.CRASHED: 'crashed'>
    """
    status = result["status"]
    if status == "killed":
        return ChildExit.CRASHED if result.get("error") is not None else ChildExit.KILLED
    return ChildExit(status)


_RESTARTED_ON: dict[RestartPolicy, frozenset[ChildExit]] = {
    RestartPolicy.PERMANENT: frozenset({ChildExit.CRASHED, ChildExit.FAILED}),
    RestartPolicy.TRANSIENT: frozenset({ChildExit.CRASHED}),
    RestartPolicy.TEMPORARY: frozenset(),
}


def should_restart(policy: RestartPolicy | str, exit_: ChildExit, *, stopping: bool) -> bool:
    """Whether a child is restarted. Never while its supervisor is stopping.

    PERMANENT: after a crash or a failed step. TRANSIENT: after a crash only
    (a failed step is the agent's own verdict). TEMPORARY: never. A completed,
    interrupted or deliberately killed child is never restarted.

    >>> should_restart("transient", ChildExit.FAILED, stopping=False)
    False
    """
    return not stopping and exit_ in _RESTARTED_ON[RestartPolicy(policy)]


def children_to_restart(
    strategy: RestartStrategy | str, order: Sequence[str], dead: str, running: set[str] | frozenset[str]
) -> list[str]:
    """The children to (stop and) restart when ``dead`` died, in start order.

    ONE_FOR_ONE: only ``dead``. ONE_FOR_ALL: ``dead`` and every running child.
    REST_FOR_ONE: ``dead`` and the running children started after it.

    >>> children_to_restart("rest_for_one", ["a", "b", "c"], "b", {"a", "c"})
    ['b', 'c']
    """
    if dead not in order:
        raise ValueError(f"child {dead!r} is not one of the supervised children {list(order)}")
    strategy = RestartStrategy(strategy)
    if strategy is RestartStrategy.ONE_FOR_ONE:
        return [dead]
    start = 0 if strategy is RestartStrategy.ONE_FOR_ALL else order.index(dead)
    return [name for name in order[start:] if name == dead or name in running]
