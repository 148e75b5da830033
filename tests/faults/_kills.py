"""Killing actors for real: the pid of an actor's worker, SIGKILL, and waiting for the restart.

>>> callable(sigkill) and callable(restarted)
True
"""

from __future__ import annotations

import os
import signal
from typing import Any

import ray

from tests._support.waiting import wait_until

WAIT_S = 90.0  # generous: other engineers' Ray tests share these two cores


def pid_of(actor: Any, timeout: float = WAIT_S) -> int:
    """The pid of ``actor``'s worker process (the actor answers, so it is up)."""
    return ray.get(actor.__ray_call__.remote(lambda _self: os.getpid()), timeout=timeout)


def pid_or_none(actor: Any) -> int | None:
    """``pid_of``, or None while the actor is dead or restarting."""
    try:
        return pid_of(actor, timeout=10.0)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return None


def restarted(actor: Any, old_pid: int, what: str) -> int:
    """Wait until ``actor`` answers from a process other than ``old_pid``; its new pid."""
    return wait_until(lambda: (pid := pid_or_none(actor)) not in (None, old_pid) and pid, f"{what} to restart in a new process")


def sigkill(actor: Any) -> int:
    """SIGKILL ``actor``'s worker process (no clean-up, no ``__ray_shutdown__``); the pid it had."""
    pid = pid_of(actor)
    os.kill(pid, signal.SIGKILL)
    return pid
