"""Finding an agent or supervisor by name, from any driver: ``kr.get_agent``.

Its own module because it needs both handle kinds: agents' (``handles``) and
supervisors' (``supervisor``, which builds on ``handles``).
"""

from __future__ import annotations

import ray
from ray.exceptions import RayActorError

from kaizen_ray.core.checkpoint import validate_agent_name
from kaizen_ray.core.errors import AgentGoneError
from kaizen_ray.runtime._actors import CONTROL_TIMEOUT_S, ensure_ray, gone
from kaizen_ray.runtime.handles import ActorHandleBase, AgentHandle
from kaizen_ray.runtime.supervisor import SupervisorHandle

__all__ = ["get_agent"]


def get_agent(name: str, namespace: str | None = None) -> ActorHandleBase:
    """The handle of a running agent or supervisor by name (e.g. a detached one, from another driver).

    >>> handle = kr.get_agent("swarm", namespace="kaizen")  # doctest: +SKIP
    """
    validate_agent_name(name)  # Ray's own refusal of a non-str ("expected bytes, int found") names nothing
    ensure_ray(namespace)
    try:
        actor = ray.get_actor(name, namespace=namespace)
    except ValueError as exc:
        raise AgentGoneError(name, f"no actor of that name in namespace {namespace!r}") from exc
    try:
        described = ray.get(actor.describe.remote(), timeout=CONTROL_TIMEOUT_S)
    except RayActorError as exc:
        raise gone(name, exc) from exc
    cls = AgentHandle if described["kind"] == "agent" else SupervisorHandle
    handle = cls(actor, name, namespace, described["storage_path"])
    handle._made_of = described.get("made_of")  # the agent class, or the children's names
    return handle
