"""Supervision decisions as pure functions over plain data (OTP's supervisor, for agents).

How a child's run ended (its *exit*), whether its restart policy restarts it,
which children a restart strategy takes down and brings back, how the record
of recent restarts is kept bounded (:func:`add_restart`), where a supervisor's
manifest goes (:func:`manifest_storage_path`), and the supervisor's phases.
The restart intensity check is :func:`kaizen_ray.core.deadlines.restart_allowed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from kaizen_ray.core.config import RestartPolicy, RestartStrategy, SupervisorConfig
from kaizen_ray.core.deadlines import restart_allowed
from kaizen_ray.core.errors import ConfigError

__all__ = [
    "SUPERVISOR_TRANSITIONS",
    "ChildExit",
    "SupervisorPhase",
    "add_restart",
    "check_transition",
    "children_to_restart",
    "classify_exit",
    "manifest_storage_path",
    "restart_allowed",
    "should_restart",
    "supervisor_config",
    "supervisor_status",
]  # fmt: skip


class SupervisorPhase(StrEnum):
    """Where a supervisor is in its life (shown by ``status()`` and the actor's repr).

    >>> check_transition(SupervisorPhase.IDLE, SupervisorPhase.STARTING)
    <SupervisorPhase.STARTING: 'starting'>
    """

    IDLE = "idle"  # built; no child actor exists yet
    STARTING = "starting"  # creating (or replacing) the children's actors, before any child runs
    RUNNING = "running"  # children run; dead ones are restarted per the strategy
    STOPPING = "stopping"  # interrupted or giving up: waiting for the children to stop
    FINISHED = "finished"  # the manifest is written; a new run (resume) may start


SUPERVISOR_TRANSITIONS: dict[SupervisorPhase, frozenset[SupervisorPhase]] = {
    SupervisorPhase.IDLE: frozenset({SupervisorPhase.STARTING}),
    # Interrupted while spawning: the children start already stopping. A run that fails
    # while spawning (e.g. its manifest cannot be loaded) ends at once.
    SupervisorPhase.STARTING: frozenset({SupervisorPhase.RUNNING, SupervisorPhase.STOPPING, SupervisorPhase.FINISHED}),
    SupervisorPhase.RUNNING: frozenset({SupervisorPhase.STOPPING, SupervisorPhase.FINISHED}),
    SupervisorPhase.STOPPING: frozenset({SupervisorPhase.FINISHED}),
    SupervisorPhase.FINISHED: frozenset({SupervisorPhase.STARTING}),
}


def check_transition(current: SupervisorPhase | str, new: SupervisorPhase | str) -> SupervisorPhase:
    """``new`` if a supervisor may go there from ``current`` (staying put is allowed), else RuntimeError.

    >>> check_transition("finished", "running")
    Traceback (most recent call last):
    ...
    RuntimeError: a supervisor cannot go from finished to running; from finished it may go to: starting
    """
    current, new = SupervisorPhase(current), SupervisorPhase(new)
    if new is current or new in SUPERVISOR_TRANSITIONS[current]:
        return new
    allowed = ", ".join(sorted(p.value for p in SUPERVISOR_TRANSITIONS[current]))
    raise RuntimeError(
        f"a supervisor cannot go from {current.value} to {new.value}; from {current.value} it may go to: {allowed}"
    )


def add_restart(
    restart_times: Sequence[float], now: float, max_restarts: int, window_s: float
) -> tuple[list[float], bool]:
    """OTP's ``add_restart``: whether one more restart may happen at ``now``, and the record to keep.

    The record keeps only the restarts inside the window ``(now - window_s, now]``
    (plus ``now`` itself when allowed), so it never holds more than
    ``max_restarts`` entries however long the supervisor lives. The clock is the
    caller's: any monotonic numbers.

    >>> add_restart([1.0, 2.0], now=9.0, max_restarts=2, window_s=5.0)
    ([9.0], True)
    >>> add_restart([7.0, 8.0], now=9.0, max_restarts=2, window_s=5.0)
    ([7.0, 8.0], False)
    """
    allowed = restart_allowed(restart_times, now, max_restarts, window_s)
    kept = [t for t in restart_times if now - window_s < t <= now]
    if allowed:
        kept.append(float(now))
    return kept, allowed


def manifest_storage_path(own: str | None, children: Sequence[str]) -> str | None:
    """Where a supervisor's manifest goes: its own storage path; else its children's when
    they all share one; else None (the default storage).

    ``children`` are the children's resolved storage paths.

    >>> manifest_storage_path(None, ["/ck", "/ck"]), manifest_storage_path(None, ["/a", "/b"])
    ('/ck', None)
    >>> manifest_storage_path("/mine", ["/ck"])
    '/mine'
    """
    if own is not None:
        return own
    shared = set(children)
    return shared.pop() if len(shared) == 1 else None


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


def supervisor_status(
    results: Mapping[str, Mapping[str, Any]], temporary: set[str] | frozenset[str], *, interrupted: bool, gave_up: bool
) -> str:
    """How a supervisor's run ended, from its children's results: ``"failed"``, ``"interrupted"`` or ``"completed"``.

    Failed when it gave up, or a child it would restart failed or crashed (a
    ``temporary`` child's own failure is reported in its result, not held
    against the supervisor); interrupted when it was, or a child stopped or
    was killed; else completed.

    >>> supervisor_status({"w": {"status": "failed"}}, {"w"}, interrupted=False, gave_up=False)
    'completed'
    >>> supervisor_status({"w": {"status": "killed", "error": "oom"}}, set(), interrupted=False, gave_up=False)
    'failed'
    """
    exits = {classify_exit(r) for r in results.values()}
    held = {classify_exit(r) for name, r in results.items() if name not in temporary}
    if gave_up or ChildExit.FAILED in held or ChildExit.CRASHED in held:
        return "failed"
    if interrupted or exits & {ChildExit.INTERRUPTED, ChildExit.KILLED}:
        return "interrupted"
    return "completed"


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


def supervisor_config(
    config: SupervisorConfig | Mapping[str, Any] | None = None,
    *,
    strategy: RestartStrategy | str | None = None,
    max_restarts: int | None = None,
    restart_window_s: float | None = None,
    storage_path: Any = None,
) -> SupervisorConfig:
    """The one SupervisorConfig of ``Supervisor.spawn``'s arguments, refusing any that would be ignored.

    The restart flags build a config (SupervisorConfig's defaults for those
    left out) or go in ``config``, never both; ``storage_path`` may join a
    config that names no other.

    >>> supervisor_config(strategy="one_for_all").strategy
    <RestartStrategy.ONE_FOR_ALL: 'one_for_all'>
    >>> supervisor_config(SupervisorConfig(), max_restarts=7)
    Traceback (most recent call last):
    ...
    kaizen_ray.core.errors.ConfigError: max_restarts must be left out when config= is given (set it in the SupervisorConfig), got 7
    """
    flags = {"strategy": strategy, "max_restarts": max_restarts, "restart_window_s": restart_window_s}
    if config is None:
        config = SupervisorConfig(**{k: v for k, v in flags.items() if v is not None})
    else:
        config = SupervisorConfig.model_validate(config)
        for field, value in flags.items():
            if value is not None:
                raise ConfigError(field, value, "left out when config= is given (set it in the SupervisorConfig)")
    if storage_path is None:
        return config
    own = SupervisorConfig(storage_path=storage_path).storage_path
    if config.storage_path is not None and config.storage_path != own:
        raise ConfigError("storage_path", storage_path, f"left out or config.storage_path ({str(config.storage_path)!r})")
    return config.model_copy(update={"storage_path": own})
