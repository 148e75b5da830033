"""The supervisor's public face: ``kr.Supervisor.spawn(...)`` and the handle it returns.

What the actor does (children, interrupts fanned out, restarts, manifests):
:mod:`kaizen_ray.runtime.supervisor_actor`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kaizen_ray.core.checkpoint import FileCheckpointStorage, validate_agent_name
from kaizen_ray.core.config import ChildSpec, SupervisorConfig
from kaizen_ray.core.errors import ConfigError
from kaizen_ray.core.supervision import manifest_storage_path, supervisor_config
from kaizen_ray.runtime._actors import actor_options, create_named, wait_until_up
from kaizen_ray.runtime._children import check_actor_options, resolve_storage
from kaizen_ray.runtime._watch import watch_supervisor_blocking, watch_supervisor_task
from kaizen_ray.runtime.handles import ActorHandleBase
from kaizen_ray.runtime.supervisor_actor import SupervisorActor

__all__ = ["Supervisor", "SupervisorActor", "SupervisorHandle"]


class SupervisorHandle(ActorHandleBase):
    """A handle to a supervisor actor. Made by ``kr.Supervisor.spawn(...)``.

    >>> swarm = kr.Supervisor.spawn("swarm", children=[kr.ChildSpec(Worker, name="w1")])  # doctest: +SKIP
    >>> swarm.run("task")["children"]["w1"]["status"]                                        # doctest: +SKIP
    'completed'
    """

    kind = "supervisor"
    _watch_task = watch_supervisor_task
    _watch = staticmethod(watch_supervisor_blocking)


class Supervisor:
    """Namespace of the supervisor API: ``kr.Supervisor.spawn(name, children=[...], ...)``.

    Also the class of a child that is itself a supervisor:
    ``kr.ChildSpec(kr.Supervisor, name="team", children=[...], config=kr.SupervisorConfig(...))``.

    >>> swarm = kr.Supervisor.spawn(                                   # doctest: +SKIP
    ...     "swarm",
    ...     children=[kr.ChildSpec(Worker, name=f"w{i}") for i in range(3)],
    ...     strategy="one_for_one", max_restarts=3, restart_window_s=5.0,
    ... )
    """

    _kaizen_kind = "supervisor"  # what ChildSpec accepts beside agent classes

    @staticmethod
    def spawn(
        name: str,
        children: list[ChildSpec],
        strategy: str | None = None,
        max_restarts: int | None = None,
        restart_window_s: float | None = None,
        *,
        config: SupervisorConfig | None = None,
        storage_path: Any = None,
        namespace: str | None = None,
        lifetime: str | None = None,
        **extra_options: Any,
    ) -> SupervisorHandle:
        """Start a supervisor actor over ``children`` (their actors start with the run).

        ``strategy``, ``max_restarts`` and ``restart_window_s`` default to
        SupervisorConfig's (``"one_for_one"``, 3, 5.0); with ``config=`` they
        belong in the config and passing them too is a ConfigError. The
        manifest goes to ``storage_path`` (or ``config.storage_path``); without
        one, beside the children when they share one storage path; else the
        default. Returns once the supervisor's actor is up.
        """

        name = validate_agent_name(name)
        config = supervisor_config(
            config, strategy=strategy, max_restarts=max_restarts, restart_window_s=restart_window_s, storage_path=storage_path
        )
        if isinstance(children, (str, bytes)) or not isinstance(children, Iterable):
            raise ConfigError("children", children, "a list of ChildSpec")
        specs = [c if isinstance(c, ChildSpec) else ChildSpec.model_validate(c) for c in children]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"the children of supervisor {name!r}", names, "ChildSpecs with unique names")
        if not specs:
            raise ConfigError(f"the children of supervisor {name!r}", children, "at least one ChildSpec")
        specs = resolve_storage(specs)
        own = None if config.storage_path is None else str(config.storage_path)
        where = manifest_storage_path(own, [str(s.config.storage_path) for s in specs])
        storage = str(FileCheckpointStorage(where).ensure_writable())
        namespace, options = actor_options("supervisor", name, namespace, lifetime, extra_options)
        check_actor_options(name, specs, SupervisorActor)
        actor = create_named(SupervisorActor, "supervisor", options, name, specs, config, storage, namespace)
        wait_until_up(actor, "supervisor", name, namespace)
        handle = SupervisorHandle(actor, name, namespace, storage)
        handle._register()
        return handle
