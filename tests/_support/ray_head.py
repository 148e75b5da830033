"""One local Ray head shared by the integration and fault tiers, and a driver of its own per test module.

Starting Ray costs seconds here, connecting a driver about one: the head (a
``ray.cluster_utils.Cluster`` of one node, 2 CPUs, no dashboard) starts on
first use, and each module connects to it in a namespace of its own
(:func:`module_driver`). ``own_ray`` modules stop it; the next user starts it
again. The ``shared_head`` fixture (tests/conftest.py) holds the one instance.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import ray
from ray.cluster_utils import Cluster

__all__ = ["DEFAULT_NAMESPACE", "HEAD_ARGS", "SharedHead", "kill_named_actors", "module_driver"]

# Metrics reported every second (Ray's default: 10 s), so that test_metrics sees them within ~2 s.
HEAD_ARGS = {"num_cpus": 2, "include_dashboard": False, "_system_config": {"metrics_report_interval_ms": 1000}}
# Where a detached agent lands without a namespace of its own (kaizen_ray's default).
DEFAULT_NAMESPACE = "kaizen"


class SharedHead:
    """The session's Ray head, started on first use and stopped for ``own_ray`` modules."""

    def __init__(self) -> None:
        self._cluster: Cluster | None = None

    def address(self) -> str:
        if self._cluster is None:
            self._cluster = Cluster(initialize_head=True, head_node_args=dict(HEAD_ARGS))
        return self._cluster.address

    def stop(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None


def kill_named_actors(namespaces: set[str]) -> None:
    """Kill every named actor left in ``namespaces`` (detached ones outlive the driver that made them)."""
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] in namespaces:
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]), no_restart=True)
            except ValueError:  # died meanwhile
                pass


@contextlib.contextmanager
def module_driver(head: SharedHead, prefix: str) -> Iterator[str]:
    """A driver on ``head`` in a fresh namespace named ``<prefix>-...``; its named actors are killed after."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ray.init(address=head.address(), namespace=namespace, log_to_driver=False, configure_logging=False)
    try:
        yield namespace
    finally:
        try:
            kill_named_actors({namespace, DEFAULT_NAMESPACE})
        finally:
            ray.shutdown()
