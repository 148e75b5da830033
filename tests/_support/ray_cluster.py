"""A real ``ray start --head --block`` on loopback for e2e tests: its own ports, temp dir and session.

Ray >= 2.59 turns token auth on for ``ray start --head``: every client the test
starts needs ``RAY_AUTH_MODE=token`` (:attr:`RayHead.client_env`). The head
gets a port of its own for each of its servers (GCS, dashboard agent, runtime
env agent, metrics, Ray client, and the dashboard when asked for), so it never
collides with another Ray on the machine: a dashboard agent that cannot bind
its port leaves a node unable to take jobs. It also gets a ``--temp-dir`` of
its own: a job's driver joins the cluster named in
``<temp-dir>/ray_current_cluster``, which the *last* ``ray start --head`` on
the machine writes, so in the shared ``/tmp/ray`` a job could land on another
engineer's cluster. The head is ended by its process group (SIGKILL: a test
cluster has nothing to save), never with ``ray stop``, which stops every Ray on
the machine.

    >>> with ray_head(Path("/tmp/logs"), dashboard=True) as head:  # doctest: +SKIP
    ...     head.address, head.dashboard_url
    ('127.0.0.1:41995', 'http://127.0.0.1:46991')
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._support.processes import Process, clean_env

__all__ = ["RAY", "RayHead", "free_port", "free_ports", "ray_head"]

RAY = Path(sys.executable).parent / "ray"  # the venv's `ray`, beside this interpreter
_START_S = 90.0  # a head with its dashboard on two busy cores
_RAYLET_SLOW = "The current node timed out during startup"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` different TCP ports free on loopback right now.

    All held open until all are picked: ports picked one by one (bind, close,
    bind again) may come back the same, and a head given one port for two of
    its components refuses to start.
    """
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@dataclass
class RayHead:
    """A running head: its GCS address, its job server (None without a dashboard), the env for its clients."""

    address: str
    dashboard_url: str | None
    client_env: dict[str, str]
    log_dir: Path
    process: Process


def _env_with_venv_first(env: Mapping[str, str]) -> dict[str, str]:
    # As if the venv were activated before `ray start`: a job's `python` is looked up on this PATH.
    env = dict(env)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _start(argv: list[object], log_dir: Path, env: dict[str, str], budget_s: float) -> Process:
    """The head, once it says it has started; a second try if Ray gave up waiting for its own raylet."""
    for attempt in (1, 2):
        head = Process(argv, name=f"ray-head-{attempt}", log_dir=log_dir, env=env, budget_s=budget_s)
        try:
            head.wait_for(r"Ray runtime started", _START_S)
            return head
        except pytest.fail.Exception:
            head.close(term_grace_s=0)
            # `ray start` waits 30 s (fixed) for its raylet to register: on two cores shared by a
            # dozen Ray users that can run out. Anything else is a real failure.
            if attempt == 2 or _RAYLET_SLOW not in head.stderr_path.read_text():
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def ray_head(
    log_dir: Path,
    *,
    dashboard: bool = False,
    dashboard_host: str = "127.0.0.1",
    num_cpus: int = 2,
    head_env: Mapping[str, str] | None = None,
    budget_s: float = 170.0,
) -> Iterator[RayHead]:
    """Start ``ray start --head --block`` in its own session; yield a :class:`RayHead`; end it by process group.

    The job server is reached at ``http://127.0.0.1:<port>`` whatever
    ``dashboard_host`` it binds (loopback, or ``0.0.0.0``).
    ``head_env`` is the head's environment (default: :func:`clean_env` with
    ``RAY_AUTH_MODE=token``, this checkout on ``PYTHONPATH`` for the workers),
    with the venv's ``bin`` put first on ``PATH``.
    """
    port, agent_port, agent_grpc_port, runtime_env_port, metrics_port, client_port, dashboard_port = free_ports(7)
    # Short, under /tmp: Ray's socket paths inside it must stay within the 107 bytes of a Unix socket path.
    temp_dir = tempfile.mkdtemp(prefix="kr-ray-", dir="/tmp")
    env = _env_with_venv_first(head_env if head_env is not None else clean_env({"RAY_AUTH_MODE": "token"}))
    argv: list[object] = [
        RAY, "start", "--head", "--block", "--port", port, "--num-cpus", num_cpus, "--disable-usage-stats",
        "--temp-dir", temp_dir,
        "--dashboard-agent-listen-port", agent_port, "--dashboard-agent-grpc-port", agent_grpc_port,
        "--runtime-env-agent-port", runtime_env_port, "--metrics-export-port", metrics_port,
        "--ray-client-server-port", client_port,
    ]  # fmt: skip
    dashboard_url = None
    if dashboard:
        argv += ["--include-dashboard=true", "--dashboard-host", dashboard_host, "--dashboard-port", dashboard_port]
        dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    else:
        argv.append("--include-dashboard=false")
    try:
        head = _start(argv, log_dir, env, budget_s)
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    try:
        yield RayHead(f"127.0.0.1:{port}", dashboard_url, clean_env({"RAY_AUTH_MODE": "token"}), log_dir, head)
    finally:
        head.close(term_grace_s=0)  # SIGKILL to its process group (this cluster only): it has nothing to save
        shutil.rmtree(temp_dir, ignore_errors=True)
