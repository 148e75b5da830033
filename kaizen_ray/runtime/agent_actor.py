"""One agent per Ray actor.

The run executes on the actor's default event loop; every control call
(interrupts, status, wiring) runs in the ``control`` concurrency group, which
has its own thread and event loop, so it reaches the actor within milliseconds
while a step runs, whether the step awaits or blocks. The two meet only
through thread-safe objects: the :class:`InterruptManager` and
``loop.call_soon_threadsafe``.

Kill deadline: once an IMMEDIATE stop is accepted during a run, the run has
``immediate_shutdown_timeout`` seconds to return. ``wait_kill_deadline``
resolves when that time is up with the run still going; whoever watches the
run (see :mod:`kaizen_ray.runtime._watch`) then kills the actor. The deadline
is kept by a thread of the actor's process, so a blocked event loop cannot
hold it up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import ray

from kaizen_ray.core._local_budget import LocalBudgetClient
from kaizen_ray.core._observer import NULL_OBSERVER, RunObserver
from kaizen_ray.core.agent import BaseAutonomousAgent
from kaizen_ray.core.checkpoint import CheckpointError
from kaizen_ray.core.config import AutonomousConfig
from kaizen_ray.core.context import FileCheckpointSink
from kaizen_ray.core.deadlines import shared_scheduler
from kaizen_ray.core.interrupts import InterruptMode, InterruptReason
from kaizen_ray.core.run import clear_if_handled
from kaizen_ray.runtime._metrics import RayMetricsObserver
from kaizen_ray.runtime._progress import ProgressBar
from kaizen_ray.runtime._proxy import child_key
from kaizen_ray.runtime._run_control import RunControl, settle
from kaizen_ray.runtime._shipping import pickled_result
from kaizen_ray.runtime._store_sink import StoreSink
from kaizen_ray.runtime._system import SystemHandlers
from kaizen_ray.runtime.budget import RayBudgetClient
from kaizen_ray.runtime.checkpoints import get_or_create_store

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["AgentActor", "AgentRuntime", "ControlMethods", "class_path"]


class AgentRuntime:
    """The agent inside its actor, without Ray: its runs, their status, and the kill deadline.

    >>> from kaizen_ray.core.agent import StepResult
    >>> class Once(BaseAutonomousAgent):
    ...     async def step(self, state, ctx):
    ...         return StepResult(state, done=True)
    >>> import tempfile; cfg = AutonomousConfig(storage_path=tempfile.mkdtemp())
    >>> rt = AgentRuntime(Once, "once", cfg)  # in tests: files and local handlers; the actor passes its own
    >>> asyncio.run(rt.run(None, None))["status"]
    'completed'
    """

    def __init__(
        self,
        agent_cls: type[BaseAutonomousAgent],
        name: str,
        config: AutonomousConfig,
        *,
        sink: Any = None,
        budget: Any = None,
        agent_kwargs: dict[str, Any] | None = None,
        observer: RunObserver = NULL_OBSERVER,
    ) -> None:
        agent = agent_cls(config=config, name=name, **(agent_kwargs or {}))
        if agent.name != name:
            raise TypeError(
                f"{agent_cls.__name__}.__init__ must pass name= on to BaseAutonomousAgent.__init__ "
                f"(expected agent name {name!r}, got {agent.name!r})"
            )
        self.agent = agent
        self.manager = agent.interrupt_manager
        self.sink = sink if sink is not None else FileCheckpointSink(agent.storage)
        self.budget = budget if budget is not None else LocalBudgetClient(self.manager)
        self.observer = observer
        self._lock = threading.Lock()
        self._running = False
        self._kill_key = ("kill", id(self))
        self._kill_snapshot: dict[str, Any] | None = None
        self._kill_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[dict[str, Any] | None]]] = []
        self.manager.add_listener(self._on_interrupt)

    def __repr__(self) -> str:
        return f"AgentRuntime({self.agent.name!r}, {type(self.agent).__name__})"

    def _on_interrupt(self, reason: InterruptReason, mode: InterruptMode) -> None:
        if mode is InterruptMode.IMMEDIATE and self._running:
            self._arm_kill()

    def _arm_kill(self) -> None:
        timeout = self.agent.config.immediate_shutdown_timeout
        shared_scheduler().call_later(self._kill_key, timeout, self._kill_due)

    def _kill_due(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._kill_snapshot = self.status()
            waiters, self._kill_waiters = self._kill_waiters, []
        logger.warning("%s did not stop within immediate_shutdown_timeout: asking for its kill", self.agent.name)
        for loop, fut in waiters:
            _resolve(loop, fut, self._kill_snapshot)

    async def run(self, task: Any, resume_from_checkpoint: str | None) -> dict[str, Any]:
        """One run of the agent (an :class:`AgentRun` on the actor's seams); its result dict."""
        # On Ray a step stuck past its deadline costs the actor (the watcher kills it), not a leaked thread.
        run = self.agent.new_run(sink=self.sink, budget=self.budget, abandon_stuck_steps=False)
        run.observer = self.observer
        with self._lock:
            self._running, self._kill_snapshot = True, None
        # Level-triggered: an IMMEDIATE request still standing stops this run too, its kill deadline
        # counting from now. Not the one the previous run already stopped for: cleared first, as execute()
        # does, or the deadline it armed would kill this run immediate_shutdown_timeout in.
        clear_if_handled(self.manager, run.previous_handled_generation)
        if self.manager.mode is InterruptMode.IMMEDIATE:
            self._arm_kill()
        try:
            result = await run.execute(task, resume_from_checkpoint)
            if isinstance(result.get("error"), CheckpointError) and hasattr(self.sink, "last_durable"):
                await self._name_a_durable_checkpoint(result)
                run.checkpoint_id = result["checkpoint_id"]  # status() and the next run's parent: the one on disk
            return result
        finally:
            shared_scheduler().cancel(self._kill_key)
            with self._lock:
                # The snapshot was this run's: a watcher of the next run must not see it.
                self._running, self._kill_snapshot = False, None
                waiters, self._kill_waiters = self._kill_waiters, []
            for loop, fut in waiters:
                _resolve(loop, fut, None)

    async def _name_a_durable_checkpoint(self, result: dict[str, Any]) -> None:
        # A write-behind checkpoint whose flush failed was still named by the
        # run (its save had returned): the result must name one on disk.
        durable = await self.sink.last_durable(self.agent.name)
        if durable is not None and durable != result["checkpoint_id"]:
            logger.warning(
                "%s: checkpoint %s never reached the disk; the result names %s, the last one that did",
                self.agent.name, result["checkpoint_id"], durable,
            )
            result["checkpoint_id"] = durable

    async def wait_kill_deadline(self) -> dict[str, Any] | None:
        """Resolves with a status snapshot when the kill deadline passes, or None when the run ends first."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        with self._lock:
            if self._kill_snapshot is not None:
                return self._kill_snapshot
            self._kill_waiters.append((loop, fut))
        return await fut

    def status(self) -> dict[str, Any]:
        """The agent's status dict (phase, cycle, cost, interrupt, budget)."""
        return self.agent.status()


def class_path(cls: type) -> str:
    """``module.QualName`` of an agent class: how an actor says what it is made of (``describe()``).

    >>> class_path(AgentRuntime)
    'kaizen_ray.runtime.agent_actor.AgentRuntime'
    """
    return f"{cls.__module__}.{cls.__qualname__}"


def _from_a_stale_deadline(metadata: dict[str, Any] | None, system: SystemHandlers) -> bool:
    """A timeout straight from the timer actor (not forwarded by a parent) for a deadline of no run going now."""
    if not isinstance(metadata, dict) or metadata.get("handler") != "timeout" or metadata.get("forwarded_by"):
        return False
    deadline = metadata.get("deadline")
    return deadline is not None and not system.is_current_deadline(deadline)


def _resolve(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], value: Any) -> None:
    def settle() -> None:
        if not fut.done():
            fut.set_result(value)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass


class ControlMethods(RunControl):
    """Control calls both actor kinds share, in the ``control`` concurrency group.

    Subclasses set ``self._name``, ``self._storage_path``, ``self._kind`` and
    provide ``_manager()``, ``_status()`` and ``_wait_kill_deadline()``.
    """

    _name: str
    _storage_path: str
    _kind: str

    def _manager(self) -> Any:
        raise NotImplementedError

    @ray.method(concurrency_group="control")
    async def request_interrupt(self, source: str, mode: str, reason: str, metadata: dict[str, Any] | None) -> bool:
        if _from_a_stale_deadline(metadata, self._system):
            logger.info("%s: deadline %s fired after its run ended: not an interrupt of this one", self._name, metadata["deadline"])  # type: ignore[index]
            return False
        return self._manager().request_interrupt(source, mode, reason, metadata)

    @ray.method(concurrency_group="control")
    async def status(self) -> dict[str, Any]:
        return await self._status()

    @ray.method(concurrency_group="control")
    async def add_handler(self, handler: Any) -> str:
        """A Timeout- or BudgetInterruptHandler, carried out by the timer / budget actors; returns its key."""
        key = await self._system.add(handler)
        if key in self._system.scopes:
            await self._use_scope(self._system.scopes[key])
        return key

    @ray.method(concurrency_group="control")
    async def remove_handler(self, key: str) -> None:
        await self._remove_handler(key)

    @ray.method(concurrency_group="control")
    async def remove_handlers(self) -> int:
        """Remove every timeout and budget handler added to this actor; how many.

        What ``kaizen-ray run`` does before it reuses an actor whose run has
        ended: the ``--timeout`` and ``--budget`` of an earlier command are not the new one's.
        """
        keys = [*self._system.timeouts, *self._system.scopes]
        for key in keys:
            await self._remove_handler(key)
        return len(keys)

    async def _remove_handler(self, key: str) -> None:
        scope = await self._system.remove(key)
        if scope is not None:
            await self._drop_scope(scope)

    async def _use_scope(self, scope: Any) -> None:
        raise NotImplementedError

    async def _drop_scope(self, scope: Any) -> None:
        raise NotImplementedError

    @ray.method(concurrency_group="control")
    async def describe(self) -> dict[str, Any]:
        """What a handle needs to be rebuilt from the actor alone (``kr.get_agent``)."""
        return {
            "name": self._name,
            "storage_path": self._storage_path,
            "kind": self._kind,
            "node_id": ray.get_runtime_context().get_node_id(),
            "made_of": self._made_of(),
        }

    def _made_of(self) -> Any:
        raise NotImplementedError

    @ray.method(concurrency_group="control")
    async def wait_kill_deadline(self) -> dict[str, Any] | None:
        return await self._wait_kill_deadline()

    @ray.method(concurrency_group="control")
    async def manager_call(self, method: str, *args: Any) -> Any:
        """The manager methods the driver-side proxy forwards (see handles.InterruptManagerProxy)."""
        if method not in _MANAGER_CALLS:
            raise AttributeError(f"{method!r} is not a forwarded InterruptManager method; expected one of {sorted(_MANAGER_CALLS)}")
        manager = self._manager()
        if method in ("add_child", "remove_child"):
            return self._wire_child(manager, method, args[0])
        if method == "wait":
            timeout = args[0] if args else None
            try:
                await asyncio.wait_for(manager.wait_async(), timeout)
            except TimeoutError:
                return False
            return True
        value = getattr(manager, method)
        return value(*args) if callable(value) else value

    def _wire_child(self, manager: Any, method: str, child: Any) -> None:
        # Every call ships a new copy of the child's handle or proxy, and a
        # manager knows its children by identity: keep the copy first added,
        # per actor, so that adding one twice is one child and removing finds it.
        wired: dict[Any, Any] = self.__dict__.setdefault("_wired_children", {})
        key = child_key(child)
        if method == "add_child":
            manager.add_child(wired.setdefault(key, child))
        elif key in wired:
            manager.remove_child(wired.pop(key))


@ray.remote(concurrency_groups={"control": 16}, max_restarts=0)
class AgentActor(ControlMethods):
    """The Ray actor of one agent. Made by ``MyAgent.spawn(...)``; use the returned handle."""

    _kind = "agent"

    def __init__(
        self,
        agent_cls: type[BaseAutonomousAgent],
        name: str,
        config: AutonomousConfig,
        storage_path: str,
        namespace: str | None,
        agent_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self._name = name
        self._class_name = agent_cls.__name__
        self._storage_path = storage_path
        observer = RayMetricsObserver(name)
        sink = StoreSink(get_or_create_store(namespace), storage_path, observer, key=config.checkpoint_key)
        self._store_warmed = sink.warm_up(name)  # paid now, not by the stop's durable checkpoint
        self._runtime = AgentRuntime(agent_cls, name, config, sink=sink, agent_kwargs=agent_kwargs, observer=observer)
        observer.on_phase("", "idle")  # counted in kaizen_agents{phase} from birth
        manager = self._runtime.manager
        # Budget scopes on Ray, plus any handler the agent attached to its own manager.
        self._budget = RayBudgetClient(name, manager, local=LocalBudgetClient(manager))
        self._runtime.budget = self._budget
        self._system = SystemHandlers(name, storage_path, namespace)
        self._run_going = False

    def __repr__(self) -> str:
        # Ray shows the repr once, right after __init__, and never again: name
        # and class only. Live state is in status(), `kaizen-ray ls` and metrics.
        return f"AgentActor({getattr(self, '_name', '?')}, {getattr(self, '_class_name', '?')})"

    def _manager(self) -> Any:
        return self._runtime.manager

    async def _status(self) -> dict[str, Any]:
        status = self._runtime.status()
        if self._system.scopes:
            status["budget"] = await self._system.budget_snapshot()
        return status

    async def _wait_kill_deadline(self) -> dict[str, Any] | None:
        return await self._runtime.wait_kill_deadline()

    def _made_of(self) -> str:
        """Its agent class, ``module.QualName``: what ``kaizen-ray run`` checks before it reuses this actor."""
        return class_path(type(self._runtime.agent))

    @ray.method(concurrency_group="control")
    async def use_budget_scope(self, scope: Any) -> None:
        """Charge ``scope`` too (a supervisor's shared budget)."""
        await self._use_scope(scope)

    async def _use_scope(self, scope: Any) -> None:
        # A restarted child has its predecessor's name: what that one died holding is released first.
        await scope.release_held.remote(self._name)
        self._budget.add_scope(scope)

    async def _drop_scope(self, scope: Any) -> None:
        self._budget.remove_scope(scope)

    async def run(self, task: Any, resume_from_checkpoint: str | None, progress: bool = False) -> bytes:
        """The run's result dict, pickled once here: whoever watches the run forwards the bytes, unopened
        (see :class:`kaizen_ray.runtime._watch.PickledResult`); Ray would otherwise pickle it again at each hop.
        """
        # Claimed before the first await (one event loop: no other run() can
        # slip in between), and refused before the deadlines are touched: they
        # belong to the run that goes on.
        if self._run_going:
            raise RuntimeError(f"agent {self._name!r} is already running (a second run must wait for the first to end)")
        self._run_going = True
        done = self._run_began()
        try:
            await self._system.run_started()
            bar = None
            try:
                bar = ProgressBar.attach(self._runtime.agent) if progress else None  # for this run only
                result, data = pickled_result(
                    await self._runtime.run(task, resume_from_checkpoint), getattr(self._runtime.sink, "last_state", None)
                )
            finally:
                if bar is not None:
                    bar.detach()
                await self._system.run_ended()
        except BaseException as exc:
            settle(done, error=exc)
            raise
        finally:
            self._run_going = False
        settle(done, result)
        return data


_MANAGER_CALLS = frozenset(
    {
        "is_interrupted", "mode", "reason", "history", "reset", "wait",
        "add_child", "remove_child", "on_shutdown",
    }
)  # fmt: skip
