"""Driver-side handles of agents and supervisors on Ray.

A handle is a small, picklable wrapper over an actor handle (Ray's
``ActorPool`` and ``Queue`` are the model): ``run`` blocks and is Ctrl+C-aware,
``start`` returns an ``ObjectRef`` of the result dict, ``request_interrupt``
reaches the actor within milliseconds even while a step runs, and
``interrupt_manager`` is a proxy with the manager's methods, so manager-style
code works on actors unchanged.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from kaizen_ray.core._html import rows_table
from kaizen_ray.core.checkpoint import FileCheckpointStorage, validate_agent_name
from kaizen_ray.core.checkpoint._paths import shown
from kaizen_ray.core.config import coerce_config
from kaizen_ray.core.errors import AgentGoneError
from kaizen_ray.core.handlers import BudgetInterruptHandler, SignalInterruptHandler, TimeoutInterruptHandler
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode, InterruptSource, coerce_source_mode, pick_message
from kaizen_ray.runtime._actors import (
    CONTROL_TIMEOUT_S,
    actor_options as _actor_options,
    create_named,
    gone,
    register_spawned,
    unregister_spawned,
    wait_until_up,
)
from kaizen_ray.runtime._ctrl_c import signals_to
from kaizen_ray.runtime._progress import wait_bars_drawn
from kaizen_ray.runtime._proxy import InterruptManagerProxy
from kaizen_ray.runtime._watch import opened, watch_blocking, watch_task
from kaizen_ray.runtime.agent_actor import AgentActor
from kaizen_ray.runtime.checkpoints import get_or_create_store

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = [
    "AgentGoneError", "AgentHandle", "InterruptManagerProxy", "ActorHandleBase", "spawn_agent",
]  # fmt: skip

class ActorHandleBase:
    """What agent and supervisor handles share: control calls, the proxy, Ctrl+C-aware run."""

    kind = "agent"
    # How a run of this kind is watched: by start()'s task, and in this driver by run() (see _watch).
    _watch_task = watch_task
    _watch = staticmethod(watch_blocking)

    def __init__(self, actor: Any, name: str, namespace: str | None, storage_path: str) -> None:
        self._actor = actor
        self.name = name
        self.namespace = namespace
        self.storage_path = storage_path
        self._driver_manager: InterruptManager | None = None
        self._remote_handlers: dict[int, tuple[Any, str]] = {}  # id(handler) -> (handler, key in the actor)
        self._made_of: Any = None  # set by get_agent: the actor's agent class, or its children's names

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, namespace={self.namespace!r})"

    def __reduce__(self):
        return (type(self), (self._actor, self.name, self.namespace, self.storage_path))

    def _repr_html_(self) -> str:
        """Jupyter's view: an HTML table of the handle and the actor's live status (or why there is none).

        >>> handle._repr_html_()  # doctest: +SKIP
        '<div class="kaizen-ray"><table><caption>AgentHandle r1</caption><tr><th ...>phase</th><td ...>running</td>...'
        """
        where = shown(str(self.storage_path))  # a URI's keys never on a page
        rows: list[tuple[str, Any]] = [("kind", self.kind), ("namespace", self.namespace), ("storage_path", where)]
        try:
            status = self.status()
        except (AgentGoneError, TimeoutError) as exc:  # a notebook shows why, it never raises from a repr
            rows.append(("status", f"{type(exc).__name__}: {exc}"))
        else:
            keys = ("phase", "cycle", "cost", "interrupted", "mode", "interrupt_reason", "checkpoint_id", "restarts")
            rows += [(k, status[k]) for k in keys if status.get(k) is not None]
            if isinstance(status.get("children"), dict):
                rows.append(("children", ", ".join(map(str, status["children"].values()))))
            budget = status.get("budget")
            if isinstance(budget, dict) and budget.get("max_cost") is not None:
                rows.append(("budget", f"{budget.get('spent', 0.0):g} of {budget['max_cost']:g}"))
        return rows_table(f"{type(self).__name__} {self.name}", rows)

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
        *,
        message: str | None = None,
    ) -> bool:
        """Ask the actor to stop; True if its manager accepted. Raises AgentGoneError if it is gone.

        Same meaning as :meth:`InterruptManager.request_interrupt` (``message=`` for ``reason=`` too).
        """
        return self._call(self.request_interrupt_nowait(source, mode, reason, metadata, message=message))

    def request_interrupt_nowait(
        self,
        source: InterruptSource | str,
        mode: InterruptMode | str = InterruptMode.GRACEFUL,
        reason: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        message: str | None = None,
    ) -> Any:
        """Send the request without waiting (how managers forward to actors: all at once); an ObjectRef of the bool."""
        reason = pick_message(reason, message)
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
                self._driver_manager.scope_to_runs()  # like an agent's: armed for each run() only
                self._driver_manager.add_child(self)
            self._driver_manager.add_handler(handler)
            return
        if not isinstance(handler, (TimeoutInterruptHandler, BudgetInterruptHandler)):
            raise TypeError(f"{handler!r} is not an interrupt handler; expected a Signal-, Timeout- or BudgetInterruptHandler")
        if id(handler) in self._remote_handlers:
            return  # added already: a no-op, as on a manager (a second key would leave the first one unremovable)
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

    def start(self, task: Any = None, resume_from_checkpoint: str | None = None, *, progress: bool = False) -> Any:
        """Start the run; an ObjectRef of the result dict (also when the actor had to be killed).

        ``progress=True`` draws one progress bar per agent (a supervisor's: one
        per child) in this driver while the run goes; see :meth:`run`.
        """
        store = get_or_create_store(self.namespace)
        # The watcher lives beside its caller, not beside the actor: if the
        # actor's node is lost, the watcher must survive to report it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        return self._watch_task.options(scheduling_strategy=here).remote(
            self._actor, self.name, self.storage_path, store, task, resume_from_checkpoint, progress
        )

    def run(self, task: Any = None, resume_from_checkpoint: str | None = None, *, progress: bool = False) -> dict[str, Any]:
        """Run to the end and return the result dict. Ctrl+C: graceful, then immediate, then KeyboardInterrupt.

        The same in Jupyter: the kernel's *interrupt* is a SIGINT, the first one
        stops the run gracefully and the cell returns the ``"interrupted"``
        result with its ``checkpoint_id``. ``progress=True`` draws one
        ``tqdm_ray`` bar per agent (a supervisor's: one per child), labelled
        with its name, counting cycles (and cost against the budget when there
        is one), in a terminal or a notebook; it needs ``ray.init(log_to_driver=True)``
        (Ray's default) and is off by default.

        >>> result = handle.run("task", progress=True)   # doctest: +SKIP
        >>> result["status"], result["cycles"]           # doctest: +SKIP
        ('completed', 10)
        """
        driver = self._driver_manager
        if driver is not None:  # signal handlers added to this handle act for each run()'s duration
            driver.arm_handlers()
        try:
            # Watched here, not by start()'s watcher task: this driver blocks anyway.
            store = lambda: get_or_create_store(self.namespace)  # noqa: E731 - asked for only to report a kill
            with signals_to(self) as wait_any:
                args = (self._actor, self.name, self.storage_path, store, task, resume_from_checkpoint, progress)
                result = opened(self._watch(*args, wait_any))
        finally:
            if driver is not None:
                driver.disarm_handlers()
        if progress:
            wait_bars_drawn()
        return result

    def kill(self) -> None:
        """Kill the actor at once (no checkpoint). Prefer request_interrupt."""
        ray.kill(self._actor, no_restart=True)
        unregister_spawned(self.namespace, self.name)

    def _register(self) -> None:
        register_spawned(self.namespace, self.name, self)


class AgentHandle(ActorHandleBase):
    """A handle to one agent actor. Made by ``MyAgent.spawn(config=..., name=...)``.

    >>> handle = Researcher.spawn(config=kr.AutonomousConfig(), name="r1")  # doctest: +SKIP
    >>> ref = handle.start("interrupts")                                     # doctest: +SKIP
    >>> handle.request_interrupt("programmatic", "graceful", "enough")       # doctest: +SKIP
    True
    >>> ray.get(ref)["status"]                                               # doctest: +SKIP
    'interrupted'
    """


def spawn_agent(
    agent_cls: type,
    config: Any = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    lifetime: str | None = None,
    actor_options: dict[str, Any] | None = None,
    **agent_kwargs: Any,
) -> AgentHandle:
    """Start one agent actor and return its handle once the actor is up; see ``BaseAutonomousAgent.spawn``.

    ``agent_kwargs`` (``signature=``, ``tools=``, any constructor keyword) go
    to the agent inside its actor; ``actor_options`` (``num_cpus``,
    ``resources``, ``scheduling_strategy``, ...) to Ray's ``.options()``.
    """
    config = coerce_config(config)
    name = validate_agent_name(agent_cls.__name__ if name is None else name)  # name="" is refused, not renamed
    _refuse_misplaced_ray_options(agent_cls, agent_kwargs)
    if actor_options is not None and not isinstance(actor_options, dict):
        raise TypeError(f"actor_options must be a dict of Ray actor options, got {actor_options!r}")
    # Fail now, not at the first flush: the folder must be writable.
    storage_path = str(FileCheckpointStorage(config.storage_path).ensure_writable())
    namespace, options = _actor_options("agent", name, namespace, lifetime, dict(actor_options or {}))
    actor = create_named(AgentActor, "agent", options, agent_cls, name, config, storage_path, namespace, agent_kwargs)
    wait_until_up(actor, "agent", name, namespace)
    handle = AgentHandle(actor, name, namespace, storage_path)
    handle._register()
    return handle


# Ray's actor options most often passed where agent keywords go (spawn(..., num_cpus=1)).
_RAY_OPTIONS = frozenset({
    "num_cpus", "num_gpus", "resources", "memory", "accelerator_type", "scheduling_strategy", "runtime_env",
    "max_concurrency", "max_restarts", "max_task_retries", "placement_group", "label_selector",
})  # fmt: skip


def _refuse_misplaced_ray_options(agent_cls: type, agent_kwargs: dict[str, Any]) -> None:
    """A Ray option among the agent's keywords is a TypeError naming where it belongs, unless the agent takes it."""
    try:
        accepted = set(inspect.signature(agent_cls).parameters)
    except (TypeError, ValueError):
        accepted = set()
    misplaced = sorted(k for k in agent_kwargs if k in _RAY_OPTIONS and k not in accepted)
    if misplaced:
        moved = ", ".join(f"{k!r}: {agent_kwargs[k]!r}" for k in misplaced)
        raise TypeError(
            f"{misplaced} are Ray actor options, not {agent_cls.__name__} arguments: pass actor_options={{{moved}}}"
        )
