"""Ray access for ``kaizen-ray``: connecting (with one-line errors), finding, listing and removing actors."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kaizen_ray.core.errors import AgentGoneError, KaizenError

logger = logging.getLogger("kaizen_ray.cli")

__all__ = ["CliError", "connect", "find", "gc", "list_rows", "row_of", "wait_result"]

CALL_TIMEOUT_S = 10.0
# A run that ended. Not "idle": an agent spawned and not yet started (`run --detach` between its
# spawn and its start, say) has no run to have ended, and gc must leave it.
ENDED = ("finished",)


def is_system_name(name: str) -> bool:
    """The timer, the checkpoint store, a budget scope: never listed as agents.

    By their exact names, not the ``kaizen-`` prefix alone: ``kaizen-bot`` is a good agent name.

    >>> is_system_name("kaizen-timer"), is_system_name("kaizen-budget/sw/1a2b"), is_system_name("kaizen-bot")
    (True, True, False)
    """
    return name in ("kaizen-timer", "kaizen-checkpoints") or name.startswith("kaizen-budget/")


class CliError(KaizenError):
    """A command that cannot go on: its message is the one line the user sees.

    >>> str(CliError("no agent 'x'"))
    "no agent 'x'"
    """


def _tcp_refused(address: str) -> str | None:
    """Why ``host:port`` refuses a TCP connection, or None if it accepts one (or is not host:port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return None
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5.0):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


@contextmanager
def _native_stderr_captured() -> Iterator[Any]:
    """Ray's C++ client logs each failed attempt on fd 2: keep it in a file, so an error stays one line."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield sink
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect(address: str | None, namespace: str, *, log_to_driver: bool = False) -> None:
    """Join the cluster at ``address`` (default ``RAY_ADDRESS``, else start an embedded local Ray) in ``namespace``.

    A refused or unauthorised connection is a :class:`CliError` saying what to
    do; with Ray's token auth on (Ray ≥ 2.59), a client needs
    ``RAY_AUTH_MODE=token``.

    >>> connect("127.0.0.1:1", "kaizen")  # doctest: +SKIP
    Traceback (most recent call last):
    kaizen_ray._cli.cluster.CliError: cannot connect to Ray at 127.0.0.1:1: Connection refused (is a cluster running there?)
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs = {"namespace": namespace, "logging_level": logging.WARNING, "log_to_driver": log_to_driver}
    if address is None or address == "local":
        ray.init(address="local", include_dashboard=False, **kwargs)  # never a cluster someone else started
        return
    refused = _tcp_refused(address)
    if refused is not None:
        raise CliError(f"cannot connect to Ray at {address}: {refused} (is a cluster running there?)")
    with _native_stderr_captured() as captured:
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionError as exc:
            captured.seek(0)
            native = captured.read().decode("utf-8", "replace")
            failure: Exception = exc
    if "InvalidAuthToken" in native or "Unauthenticated" in native:
        raise CliError(
            f"cannot connect to Ray at {address}: the cluster refused the connection for authentication "
            "(InvalidAuthToken): set RAY_AUTH_MODE=token in this environment (the token is read from "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; `ray get-auth-token` prints it)"
        ) from failure
    raise CliError(f"cannot connect to Ray at {address}: {failure}") from failure


def find(name: str, namespace: str) -> Any:
    """The handle of agent or supervisor ``name``; a one-line :class:`AgentGoneError` if there is none.

    >>> find("nobody", "kaizen")  # doctest: +SKIP
    Traceback (most recent call last):
    kaizen_ray.core.errors.AgentGoneError: agent 'nobody' is gone: no actor of that name in namespace 'kaizen'
    """
    from kaizen_ray.runtime._lookup import get_agent

    if is_system_name(name):
        raise AgentGoneError(name, f"{name!r} is a kaizen_ray system actor, not an agent or supervisor")
    try:
        return get_agent(name, namespace=namespace)
    except AttributeError as exc:  # a named actor of someone else's, without kaizen_ray's control methods
        raise AgentGoneError(name, f"the actor of that name in namespace {namespace!r} is not a kaizen_ray agent") from exc


def _named(namespace: str) -> list[str]:
    import ray

    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace)


def row_of(handle: Any) -> dict[str, Any]:
    """The ``ls`` object of one handle, plus ``running`` (is a run going, as gc needs to know)."""
    import ray

    from kaizen_ray._cli.render import status_row

    status = handle.status()
    checkpoint_id = None
    if handle.kind == "supervisor":  # before its actor saved a manifest, the last one on disk
        checkpoint_id = _last_checkpoint(handle.storage_path, handle.name)
    row = status_row(handle.name, handle.kind, status, checkpoint_id)
    row["running"] = bool(ray.get(handle.actor.running.remote(), timeout=CALL_TIMEOUT_S))
    return row


def _last_checkpoint(storage_path: str, agent: str) -> str | None:
    from kaizen_ray.core.checkpoint import list_checkpoints

    try:
        listed = list_checkpoints(storage_path, agent=agent)
    except KaizenError as exc:
        logger.info("no checkpoint listed for %s: %s", agent, exc)
        return None
    return listed[-1].id if listed else None


def list_rows(namespace: str) -> list[dict[str, Any]]:
    """Every agent and supervisor in ``namespace`` (system actors and foreign actors skipped), by name."""
    rows = []
    for name in _named(namespace):
        if is_system_name(name):
            continue
        try:
            rows.append(row_of(find(name, namespace)))
        except (AgentGoneError, TimeoutError) as exc:  # gone since it was listed, or not one of ours
            logger.info("not listed: %s", exc)
    return rows


def wait_result(handle: Any, timeout_s: float | None = None) -> dict[str, Any]:
    """The result of ``handle``'s current run once it has ended (its last run's if none is going).

    An agent killed past its deadline (or dead) gives the ``"killed"`` result
    built from its last flushed checkpoint, as a watcher would.
    """
    import asyncio

    import ray
    from ray.exceptions import RayActorError

    from kaizen_ray.runtime._actors import gone

    try:
        result = ray.get(handle.actor.wait_run.remote(timeout_s))
    except RayActorError as exc:
        if handle.kind != "agent":
            raise gone(handle.name, exc) from exc
        from kaizen_ray.runtime._watch import killed_result
        from kaizen_ray.runtime.checkpoints import get_or_create_store

        store = get_or_create_store(handle.namespace)
        return asyncio.run(killed_result(handle.name, handle.storage_path, store, None, exc))
    if result is None:
        raise CliError(f"{handle.kind} {handle.name!r} has never run: there is no run to wait for")
    return result


def gc(namespace: str, timeout_s: float = 30.0) -> list[dict[str, str]]:
    """Remove the agents and supervisors whose runs have ended, then the system actors nothing uses; what went.

    A child (``swarm/w1``) is never removed on its own: it goes with its
    supervisor. Budget scopes go when their owner has; the timer and the
    checkpoint store when no agent or supervisor is left in the namespace
    (nor in an anonymous one, whose system actors live in ``"kaizen"``).
    """
    import ray

    from kaizen_ray.runtime._namespaces import is_anonymous_namespace
    from kaizen_ray.runtime.checkpoints import STORE_NAME
    from kaizen_ray.runtime.timer import TIMER_NAME

    removed: list[dict[str, str]] = []
    names = _named(namespace)
    for row in list_rows(namespace):
        if "/" in row["name"] or row["running"] or row["phase"] not in ENDED:
            continue
        ray.kill(ray.get_actor(row["name"], namespace=namespace), no_restart=True)
        removed.append({"name": row["name"], "kind": row["kind"]})
        removed.extend({"name": n, "kind": "child"} for n in names if n.startswith(row["name"] + "/"))
    _await_released(namespace, {r["name"] for r in removed}, timeout_s)

    everyone = ray.util.list_named_actors(all_namespaces=True)
    users = {
        a["name"] for a in everyone
        if not is_system_name(a["name"]) and (a["namespace"] == namespace or is_anonymous_namespace(a["namespace"]))
    }  # fmt: skip
    system = [a["name"] for a in everyone if a["namespace"] == namespace and is_system_name(a["name"])]
    gone_now: set[str] = set()
    for name in system:
        if name.startswith("kaizen-budget/"):
            owner = name.removeprefix("kaizen-budget/").rsplit("/", 1)[0]
            unused = owner not in users
        else:
            unused = not users and name in (TIMER_NAME, STORE_NAME)
        if not unused:
            continue
        actor = ray.get_actor(name, namespace=namespace)
        if name == STORE_NAME:  # what it still holds in memory reaches the disk first
            ray.get(actor.flush.remote(), timeout=60.0)
        ray.kill(actor, no_restart=True)
        removed.append({"name": name, "kind": "system"})
        gone_now.add(name)
    _await_released(namespace, gone_now, timeout_s)
    return removed


def _await_released(namespace: str, names: set[str], timeout_s: float) -> None:
    # Ray gives no event for an actor's death: its name is released with it (bounded poll).
    deadline = time.monotonic() + timeout_s
    while names & set(_named(namespace)):
        if time.monotonic() > deadline:
            logger.warning("still listed %ss after their kill: %s", timeout_s, sorted(names & set(_named(namespace))))
            return
        time.sleep(0.1)
