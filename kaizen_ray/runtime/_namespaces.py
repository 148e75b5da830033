"""Where SYSTEM actors live: always a real, named namespace, never an anonymous one.

A driver that calls plain ``ray.init()`` runs in an anonymous namespace: Ray's
``JobConfig`` fills the job's ``ray_namespace`` with ``str(uuid.uuid4())``,
and the GCS treats a namespace as anonymous exactly when it matches the
UUID-4 pattern (``gcs_actor_manager.cc``: ``is_uuid(actor->GetRayNamespace())``
before it publishes the "detached actor in an anonymous namespace" warning).
A detached actor created there can never be found by another driver, and Ray
prints that warning. So the timer, the checkpoint store and the budget scopes
go to the first named namespace of: the one the caller gave, the driver's
(job's) own, ``"kaizen"``. The same rule everywhere means every process finds
the same system actors, and a later ``kaizen-ray gc`` knows where to look.
"""

from __future__ import annotations

import logging
import re

import ray

logger = logging.getLogger("kaizen_ray.runtime")

__all__ = ["DEFAULT_NAMESPACE", "is_anonymous_namespace", "system_namespace"]

DEFAULT_NAMESPACE = "kaizen"  # where detached agents and system actors go when no namespace is named

# The GCS's own test (src/ray/util/util.h, is_uuid), so both agree on what is anonymous.
_ANONYMOUS = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-4[a-f0-9]{3}-[89aAbB][a-f0-9]{3}-[a-f0-9]{12}")


def is_anonymous_namespace(namespace: str | None) -> bool:
    """True for ``None``, ``""`` and the UUIDs Ray makes up for a driver that named no namespace.

    >>> is_anonymous_namespace("kaizen"), is_anonymous_namespace("0b6c2f6e-2f7a-4c1e-9d3b-5a8e1c2d4f60")
    (False, True)
    >>> is_anonymous_namespace(None)
    True
    """
    return not namespace or _ANONYMOUS.fullmatch(namespace) is not None


def system_namespace(namespace: str | None = None) -> str:
    """The named namespace a SYSTEM actor goes to: ``namespace``, else this job's, else ``"kaizen"``.

    Anonymous candidates are skipped. Call it with Ray connected (it reads this
    job's namespace); without Ray it skips that step.

    >>> system_namespace("team-a")
    'team-a'
    >>> system_namespace("0b6c2f6e-2f7a-4c1e-9d3b-5a8e1c2d4f60")  # with no named job namespace  # doctest: +SKIP
    'kaizen'
    """
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str or None, got {namespace!r}")
    if not is_anonymous_namespace(namespace):
        return namespace  # type: ignore[return-value]
    if ray.is_initialized():
        job_namespace = ray.get_runtime_context().namespace
        if not is_anonymous_namespace(job_namespace):
            return job_namespace
    return DEFAULT_NAMESPACE
