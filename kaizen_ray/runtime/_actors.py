"""Low-level Ray plumbing shared by handles, the supervisor and the watchers.

Starting or joining Ray, naming actors, waiting until an actor is up, and
turning a Ray actor error into the one line that says why the actor is gone.
Nothing here knows about agents or supervisors beyond their names.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from kaizen_ray.core.errors import AgentGoneError, ConfigError
from kaizen_ray.runtime._namespaces import DEFAULT_NAMESPACE

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = [
    "CONTROL_TIMEOUT_S", "SPAWN_TIMEOUT_S", "actor_options", "create_named", "death_cause", "ensure_ray",
    "gone", "register_spawned", "unregister_spawned", "wait_until_up",
]  # fmt: skip

CONTROL_TIMEOUT_S = 10.0
# Generous: on an autoscaling cluster a new node may take minutes to join.
SPAWN_TIMEOUT_S = 300.0

# Named, non-detached actors die when their creator drops its last handle:
# this registry keeps every handle this process spawned alive until shutdown().
_SPAWNED: dict[tuple[str | None, str], Any] = {}
_SPAWNED_LOCK = threading.Lock()


def register_spawned(namespace: str | None, name: str, handle: Any) -> None:
    """Keep ``handle`` (and so its named actor) alive for the life of this process."""
    with _SPAWNED_LOCK:
        _SPAWNED[(namespace, name)] = handle


def unregister_spawned(namespace: str | None, name: str) -> None:
    """Forget the handle kept by :func:`register_spawned` (the actor was killed)."""
    with _SPAWNED_LOCK:
        _SPAWNED.pop((namespace, name), None)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The line a Python traceback ends with: "KeyError: 'x'", "mod.Error: msg", "StopIteration".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?::(?: .*)?)?$")


def death_cause(exc: BaseException) -> str:
    """The useful line of a Ray actor error: the worker's exception, or why Ray says the actor died.

    Ray puts the whole remote traceback into an ``ActorDiedError``'s text; a
    message wants its last line (``ModuleNotFoundError: No module named 'm'``),
    or, for a death outside Python (``ray.kill``, OOM, a lost node), the
    sentence that says why.

    >>> from ray.exceptions import RayActorError
    >>> text = "The actor died because of an error raised in its creation task, ray::A.__init__()\\n"
    >>> death_cause(RayActorError(error_msg=text + "  File 'm.py', line 3, in __init__\\nKeyError: 'x'"))
    "KeyError: 'x'"
    """
    text = _ANSI.sub("", str(exc)).strip()
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if getattr(exc, "actor_init_failed", False) or "creation task" in lines[0]:
        # The traceback's last exception line, with any continuation of its message.
        for i in range(len(lines) - 1, 0, -1):
            if _EXCEPTION_LINE.match(lines[i]) and not lines[i].lower().startswith("traceback"):
                return _short(" ".join(lines[i:]))
        return _short(lines[0])
    # A system-level death: a header line, tab-indented fields, then Ray's reason.
    reasons = [line for line in lines[1:] if not line.startswith(("\t", " "))]
    return _short(" ".join(reasons) if reasons else lines[0])


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gone(name: str, exc: BaseException, doing: str = "its actor died") -> AgentGoneError:
    """An :class:`AgentGoneError` for ``name`` whose message carries ``exc``'s cause (chain it yourself)."""
    return AgentGoneError(name, f"{doing}: {death_cause(exc)}")


def ensure_ray(namespace: str | None) -> None:
    """Start (or join, per RAY_ADDRESS) Ray if this process has not yet."""
    if not ray.is_initialized():
        ray.init(namespace=namespace or DEFAULT_NAMESPACE, log_to_driver=True)


def actor_options(kind: str, name: str, namespace: str | None, lifetime: str | None, extra: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Start or join Ray and build the ``.options()`` of a named agent or supervisor actor.

    Returns the namespace actually used (a detached actor defaults to
    ``"kaizen"``, so that another driver can find it by name).
    """
    if lifetime not in (None, "detached", "non_detached"):
        raise ConfigError(f"lifetime of the {kind} {name!r}", lifetime, "None, 'detached' or 'non_detached'")
    if lifetime == "detached" and namespace is None:
        namespace = DEFAULT_NAMESPACE
    ensure_ray(namespace)
    namespace = namespace or ray.get_runtime_context().namespace  # the real one, for reprs and lookups
    options: dict[str, Any] = {"name": name, "namespace": namespace, **extra}
    if lifetime is not None:
        options["lifetime"] = lifetime
    return namespace, options


def create_named(actor_cls: Any, kind: str, options: dict[str, Any], *args: Any) -> Any:
    """``actor_cls.options(**options).remote(*args)``, with a :class:`ConfigError` that names a clashing name.

    >>> create_named(AgentActor, "agent", {"name": "a1", "namespace": "kaizen"}, *args)  # doctest: +SKIP
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: name of the agent must be a name no live actor holds in namespace 'kaizen' (...), got 'a1'
    """
    name, namespace = options["name"], options["namespace"]
    try:
        configured = actor_cls.options(**options)
    except ValueError as exc:
        raise ConfigError(f"the Ray actor options of {kind} {name!r}", options, f"valid options ({exc})") from exc
    try:
        return configured.remote(*args)
    except ValueError as exc:
        if "already taken" not in str(exc):  # Ray's ActorAlreadyExistsError; anything else is not about the name
            raise
        expected = (
            f"a name no live actor holds in namespace {namespace!r} "
            "(pick another, or reach the running one with kr.get_agent)"
        )
        raise ConfigError(f"name of the {kind}", name, expected) from exc


def wait_until_up(actor: Any, kind: str, name: str, namespace: str | None, timeout_s: float = SPAWN_TIMEOUT_S) -> None:
    """Return once ``actor`` has finished its ``__init__``; AgentGoneError with the cause if it died doing so.

    >>> wait_until_up(handle.actor, "agent", "a1", "kaizen")  # doctest: +SKIP
    """
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=timeout_s)
    except RayActorError as exc:
        raise gone(name, exc, "its actor could not start") from exc
    except GetTimeoutError as exc:
        ray.kill(actor, no_restart=True)  # not left pending, to start whenever resources free up
        raise TimeoutError(
            f"{kind} {name!r} (namespace {namespace!r}) was not up within {timeout_s}s: does any node "
            "have the resources it asks for? Its pending actor was removed"
        ) from exc
