"""``MODULE:OBJ``: what ``kaizen-ray run`` runs, resolved without Ray.

OBJ is an agent class (a :class:`BaseAutonomousAgent` subclass), or a list of
:class:`ChildSpec` (or a function that returns one) for a supervised swarm.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from kaizen_ray.core.agent import BaseAutonomousAgent
from kaizen_ray.core.config import ChildSpec
from kaizen_ray.core.errors import ConfigError

__all__ = ["Target", "resolve_target", "with_storage"]


@dataclass(frozen=True)
class Target:
    """A resolved ``MODULE:OBJ``: ``kind`` is ``"agent"`` (``agent_cls`` set) or ``"swarm"`` (``children`` set).

    >>> Target("agent", "Counter", agent_cls=BaseAutonomousAgent).kind
    'agent'
    """

    kind: str
    default_name: str
    agent_cls: type | None = None
    children: tuple[ChildSpec, ...] = ()


def resolve_target(spec: str) -> Target:
    """Import ``MODULE:OBJ`` and say what it is; a :class:`ConfigError` naming the value otherwise.

    >>> resolve_target("kaizen_ray:BaseAutonomousAgent").kind
    'agent'
    >>> resolve_target("kaizen_ray")
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: MODULE:OBJ must be 'package.module:name' (an agent class, or a list of ChildSpec or a function returning one), got 'kaizen_ray'
    """
    what = "MODULE:OBJ"
    expected = "'package.module:name' (an agent class, or a list of ChildSpec or a function returning one)"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(what, spec, expected)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import that raises anything is the user's module failing: say which and why
        raise ConfigError(what, spec, f"an importable module ({type(exc).__name__}: {exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(what, spec, f"a name defined in module {module_name!r} (it has no {part!r})") from exc
    default_name = attr.rsplit(".", 1)[-1]
    if inspect.isclass(obj):
        if issubclass(obj, BaseAutonomousAgent):
            return Target("agent", default_name, agent_cls=obj)
        raise ConfigError(what, spec, f"a BaseAutonomousAgent subclass, not the class {obj.__name__}")
    if callable(obj) and not isinstance(obj, (list, tuple)):
        try:
            obj = obj()
        except Exception as exc:  # the user's factory failed: its own error, on one line
            raise ConfigError(what, spec, f"a function returning a list of ChildSpec (it raised {type(exc).__name__}: {exc})") from exc
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(c, ChildSpec) for c in obj):
        return Target("swarm", default_name, children=tuple(obj))
    raise ConfigError(what, spec, f"{expected}; it is {_describe(obj)}")


def _describe(obj: Any) -> str:
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "an empty list"
        kinds = sorted({type(c).__name__ for c in obj if not isinstance(c, ChildSpec)})
        return f"a list holding {', '.join(kinds)}"
    return f"a {type(obj).__name__}"


def with_storage(specs: tuple[ChildSpec, ...] | list[ChildSpec], storage: Any) -> list[ChildSpec]:
    """``specs`` with ``storage`` as the storage path of every child (down the tree) that names none.

    >>> from kaizen_ray.core.config import AutonomousConfig
    >>> specs = [ChildSpec(BaseAutonomousAgent, name="a"),
    ...          ChildSpec(BaseAutonomousAgent, name="b", config=AutonomousConfig(storage_path="/own"))]
    >>> [str(s.config.storage_path) for s in with_storage(specs, "/shared")]
    ['/shared', '/own']
    """
    if storage is None:
        return list(specs)
    out = []
    for spec in specs:
        update: dict[str, Any] = {}
        if spec.config.storage_path is None:
            # Validated as the config's own field would be (a URI stays a str, a folder a Path).
            path = type(spec.config)(storage_path=storage).storage_path
            update["config"] = spec.config.model_copy(update={"storage_path": path})
        if spec.kind == "supervisor" and spec.children:
            update["children"] = with_storage(spec.children, storage)
        out.append(spec.model_copy(update=update) if update else spec)
    return out
