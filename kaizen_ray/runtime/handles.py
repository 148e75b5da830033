"""Driver-side handles of agents and supervisors on Ray.

A handle is a small, picklable wrapper over an actor handle (Ray's
``ActorPool`` and ``Queue`` are the model): ``run`` blocks and is Ctrl+C-aware,
``start`` returns an ``ObjectRef`` of the result dict, ``request_interrupt``
reaches the actor within milliseconds even while a step runs, and
``interrupt_manager`` is a proxy with the manager's methods, so manager-style
code works on actors unchanged.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from kaizen_ray.core.errors import AgentGoneError, ConfigError
from kaizen_ray.core.handlers import BudgetInterruptHandler, SignalInterruptHandler, TimeoutInterruptHandler
from kaizen_ray.runtime._namespaces import DEFAULT_NAMESPACE
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptReason, InterruptSource, coerce_source_mode

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = [
    "AgentGoneError", "AgentHandle", "InterruptManagerProxy", "ActorHandleBase",
    "actor_options", "create_named", "death_cause", "ensure_ray", "get_agent", "spawn_agent", "wait_until_up",
    "wait_with_signals",
]  # fmt: skip

CONTROL_TIMEOUT_S = 10.0
# Generous: on an autoscaling cluster a new node may take minutes to join.
SPAWN_TIMEOUT_S = 300.0

# Named, non-detached actors die when their creator drops its last handle:
# this registry keeps every handle this process spawned alive until shutdown().
_SPAWNED: dict[tuple[str | None, str], Any] = {}
_SPAWNED_LOCK = threading.Lock()


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
        raise ValueError(f"lifetime {lifetime!r} of {kind} {name!r} is not valid; expected None, 'detached' or 'non_detached'")
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


class ActorHandleBase:
    """What agent and supervisor handles share: control calls, the proxy, Ctrl+C-aware run."""

    kind = "agent"

    def __init__(self, actor: Any, name: str, namespace: str | None, storage_path: str) -> None:
        self._actor = actor
        self.name = name
        self.namespace = namespace
        self.storage_path = storage_path
        self._driver_manager: InterruptManager | None = None
        self._remote_handlers: dict[int, tuple[Any, str]] = {}  # id(handler) -> (handler, key in the actor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, namespace={self.namespace!r})"

    def __reduce__(self):
        return (type(self), (self._actor, self.name, self.namespace, self.storage_path))

    @property
    def actor(self) -> Any:
        """The underlying Ray actor handle."""
        return self._actor

    def _call(self, ref: Any, timeout_s: float = CONTROL_TIMEOUT_S) -> Any:
        try:
            return ray.get(ref, timeout=timeout_s)
        except RayActorError as exc:
            raise gone(self.name, exc) from exc
        except GetTimeoutError as exc:
            raise TimeoutError(f"{self.kind} {self.name!r} did not answer a control call within {timeout_s}s") from exc

    # -- control --------------------------------------------------------------

    def request_interrupt(
        self,
        source: InterruptSource | str,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Ask the actor to stop; True if its manager accepted. Raises AgentGoneError if it is gone."""
        return self._call(self.request_interrupt_nowait(source, mode, reason, metadata))

    def request_interrupt_nowait(
        self,
        source: InterruptSource | str,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Send the request without waiting (how managers forward to actors: all at once)."""
        source, mode = coerce_source_mode(source, mode)
        return self._actor.request_interrupt.remote(source.value, mode.value, reason, metadata)

    def status(self) -> dict[str, Any]:
        """The actor's status dict."""
        return self._call(self._actor.status.remote())

    @property
    def interrupt_manager(self) -> InterruptManagerProxy:
        """A proxy with the InterruptManager's methods, carried out by the actor."""
        return InterruptManagerProxy(self)

    def add_handler(self, handler: Any) -> None:
        """Attach a handler: signals are caught in this (driver) process; others act in the actor."""
        if isinstance(handler, SignalInterruptHandler):
            if self._driver_manager is None:
                self._driver_manager = InterruptManager(name=f"driver:{self.name}")
                self._driver_manager.add_child(self)
            self._driver_manager.add_handler(handler)
            return
        if not isinstance(handler, (TimeoutInterruptHandler, BudgetInterruptHandler)):
            raise TypeError(f"{handler!r} is not an interrupt handler; expected a Signal-, Timeout- or BudgetInterruptHandler")
        # Carried out by the timer actor (timeouts) or a budget actor (budgets).
        self._remote_handlers[id(handler)] = (handler, self._call(self._actor.add_handler.remote(handler)))

    def remove_handler(self, handler: Any) -> None:
        """Detach a handler added with :meth:`add_handler`."""
        if isinstance(handler, SignalInterruptHandler):
            if self._driver_manager is not None:
                self._driver_manager.remove_handler(handler)
            return
        entry = self._remote_handlers.pop(id(handler), None)
        if entry is None:
            raise ValueError(f"{handler!r} was not added to {self!r} (through this handle)")
        self._call(self._actor.remove_handler.remote(entry[1]))

    # -- running ---------------------------------------------------------------

    def start(self, task: Any = None, resume_from_checkpoint: str | None = None) -> Any:
        """Start the run; an ObjectRef of the result dict (also when the actor had to be killed)."""
        raise NotImplementedError

    def run(self, task: Any = None, resume_from_checkpoint: str | None = None) -> dict[str, Any]:
        """Run to the end and return the result dict. Ctrl+C: graceful, then immediate, then KeyboardInterrupt."""
        ref = self.start(task, resume_from_checkpoint)
        try:
            return wait_with_signals(self, ref)
        finally:
            if self._driver_manager is not None:  # a handler added to the handle ends with the run
                for handler in self._driver_manager.handlers:
                    self._driver_manager.remove_handler(handler)

    def kill(self) -> None:
        """Kill the actor at once (no checkpoint). Prefer request_interrupt."""
        ray.kill(self._actor, no_restart=True)
        with _SPAWNED_LOCK:
            _SPAWNED.pop((self.namespace, self.name), None)

    def _register(self) -> None:
        with _SPAWNED_LOCK:
            _SPAWNED[(self.namespace, self.name)] = self


def wait_with_signals(target: Any, ref: Any, poll_s: float = 0.02) -> Any:
    """``ray.get(ref)``, turning Ctrl+C into interrupts of ``target`` while it waits.

    First SIGINT: GRACEFUL USER interrupt; second: IMMEDIATE; third: the
    previous handler is restored and KeyboardInterrupt raised. SIGTERM:
    GRACEFUL. Only the main thread can install it (elsewhere: a warning).
    """
    manager = InterruptManager(name=f"driver:{getattr(target, 'name', target)}")
    manager.add_child(target)
    handler = SignalInterruptHandler()
    manager.add_handler(handler)
    try:
        while True:
            # Short waits: Python runs signal handlers only between them, and
            # two presses within one wait would be folded into one.
            ready, _ = ray.wait([ref], timeout=poll_s)
            if ready:
                return ray.get(ref)
    finally:
        manager.remove_handler(handler)


class InterruptManagerProxy:
    """The manager of an agent or supervisor actor, driven from anywhere.

    ``parent.interrupt_manager.add_child(child.interrupt_manager)`` makes the
    parent actor forward its interrupts to the child actor.
    """

    def __init__(self, handle: ActorHandleBase) -> None:
        self._handle = handle

    def __repr__(self) -> str:
        return f"InterruptManagerProxy({self._handle!r})"

    def __reduce__(self):
        return (type(self), (self._handle,))

    @property
    def name(self) -> str:
        return self._handle.name

    def _manager(self, method: str, *args: Any) -> Any:
        return self._handle._call(self._handle.actor.manager_call.remote(method, *args))

    def request_interrupt(self, source: Any, mode: Any = InterruptMode.GRACEFUL, reason: str = "", metadata: dict[str, Any] | None = None) -> bool:
        return self._handle.request_interrupt(source, mode, reason, metadata)

    def request_interrupt_nowait(self, source: Any, mode: Any = InterruptMode.GRACEFUL, reason: str = "", metadata: dict[str, Any] | None = None) -> Any:
        return self._handle.request_interrupt_nowait(source, mode, reason, metadata)

    def is_interrupted(self) -> bool:
        return self._manager("is_interrupted")

    @property
    def mode(self) -> InterruptMode | None:
        return self._manager("mode")

    @property
    def reason(self) -> InterruptReason | None:
        return self._manager("reason")

    @property
    def history(self) -> list[InterruptReason]:
        return self._manager("history")

    def wait(self, timeout: float | None = None) -> bool:
        call_timeout = None if timeout is None else timeout + CONTROL_TIMEOUT_S
        return self._handle._call(self._handle.actor.manager_call.remote("wait", timeout), call_timeout)

    def reset(self) -> None:
        self._manager("reset")

    def add_handler(self, handler: Any) -> None:
        self._handle.add_handler(handler)

    def remove_handler(self, handler: Any) -> None:
        self._handle.remove_handler(handler)

    def add_child(self, child: Any) -> None:
        if isinstance(child, InterruptManager):
            raise TypeError(
                f"{child!r} lives in this process and cannot be a child of actor {self._handle.name!r}; "
                "pass an agent or supervisor handle (or its interrupt_manager)"
            )
        self._manager("add_child", child)

    def remove_child(self, child: Any) -> None:
        self._manager("remove_child", child)

    def on_shutdown(self, callback: Any) -> None:
        self._manager("on_shutdown", callback)


class AgentHandle(ActorHandleBase):
    """A handle to one agent actor. Made by ``MyAgent.spawn(config=..., name=...)``.

    >>> handle = Researcher.spawn(config=kr.AutonomousConfig(), name="r1")  # doctest: +SKIP
    >>> ref = handle.start("interrupts")                                     # doctest: +SKIP
    >>> handle.request_interrupt("programmatic", "graceful", "enough")       # doctest: +SKIP
    True
    >>> ray.get(ref)["status"]                                               # doctest: +SKIP
    'interrupted'
    """

    def start(self, task: Any = None, resume_from_checkpoint: str | None = None) -> Any:
        from kaizen_ray.runtime._watch import watch_task
        from kaizen_ray.runtime.checkpoints import get_or_create_store

        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        store = get_or_create_store(self.namespace)
        # The watcher lives beside its caller, not beside the agent: if the
        # agent's node is lost, the watcher must survive to report it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        return watch_task.options(scheduling_strategy=here).remote(
            self._actor, self.name, self.storage_path, store, task, resume_from_checkpoint
        )


def spawn_agent(
    agent_cls: type,
    config: Any = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    lifetime: str | None = None,
    **extra_options: Any,
) -> AgentHandle:
    """Start one agent actor; see ``BaseAutonomousAgent.spawn``."""
    from kaizen_ray.core.checkpoint import FileCheckpointStorage, validate_agent_name
    from kaizen_ray.core.config import AutonomousConfig
    from kaizen_ray.runtime.agent_actor import AgentActor

    config = AutonomousConfig() if config is None else AutonomousConfig.model_validate(config)
    name = validate_agent_name(name or agent_cls.__name__)
    # Fail now, not at the first flush: the folder must be writable.
    storage_path = str(FileCheckpointStorage(config.storage_path).ensure_writable())
    namespace, options = actor_options("agent", name, namespace, lifetime, extra_options)
    actor = create_named(AgentActor, "agent", options, agent_cls, name, config, storage_path, namespace)
    wait_until_up(actor, "agent", name, namespace)
    handle = AgentHandle(actor, name, namespace, storage_path)
    handle._register()
    return handle


def get_agent(name: str, namespace: str | None = None) -> ActorHandleBase:
    """The handle of a running agent or supervisor by name (e.g. a detached one, from another driver).

    >>> handle = kr.get_agent("swarm", namespace="kaizen")  # doctest: +SKIP
    """
    ensure_ray(namespace)
    try:
        actor = ray.get_actor(name, namespace=namespace)
    except ValueError as exc:
        raise AgentGoneError(name, f"no actor of that name in namespace {namespace!r}") from exc
    try:
        described = ray.get(actor.describe.remote(), timeout=CONTROL_TIMEOUT_S)
    except RayActorError as exc:
        raise gone(name, exc) from exc
    cls = AgentHandle if described["kind"] == "agent" else _supervisor_handle_cls()
    return cls(actor, name, namespace, described["storage_path"])


def _supervisor_handle_cls() -> type:
    from kaizen_ray.runtime.supervisor import SupervisorHandle

    return SupervisorHandle
