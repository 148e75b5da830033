"""An interrupt storm on a running swarm: 4 threads x 50 requests, every source and mode, all at once.

What must hold: every call returns (no deadlock: each thread ends, the run
ends); the supervisor accepts exactly the first request and, if that one was
GRACEFUL, exactly one IMMEDIATE after it (the mode only escalates); its
history holds exactly the accepted ones; and every child's result names that
same first reason, forwarded by the supervisor, with a checkpoint that loads
and matches the result.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import pytest
import ray

import kaizen_ray as kr

from tests._support.ray_agents import child_status
from tests._support.waiting import wait_until
from tests.faults._kills import WAIT_S
from tests.integration.test_supervisor_contract import counting

pytestmark = pytest.mark.ray

THREADS, REQUESTS = 4, 50
SOURCES = list(kr.InterruptSource)
MODES = list(kr.InterruptMode)


def storm(sup: Any, thread: int, barrier: threading.Barrier, out: list[tuple[str, kr.InterruptMode, bool]]) -> None:
    """``REQUESTS`` requests from one thread, cycling through sources, modes and the three ways to send one."""
    proxy = sup.interrupt_manager
    combos = itertools.cycle(itertools.product(SOURCES, MODES))
    barrier.wait(timeout=WAIT_S)
    for i in range(REQUESTS):
        source, mode = next(combos)
        message = f"t{thread}-{i}"
        way = (thread + i) % 3
        if way == 0:
            accepted = sup.request_interrupt(source, mode, message, {"storm": i})
        elif way == 1:
            accepted = proxy.request_interrupt(source.value, mode.value, message=message)
        else:
            accepted = ray.get(sup.request_interrupt_nowait(source, mode, message), timeout=WAIT_S)
        out.append((message, mode, accepted))


def test_an_interrupt_storm_on_a_running_swarm_has_one_first_reason_and_ends(ray_cluster, storage, cleanup):
    names = ("c0", "c1", "c2")
    sup = kr.Supervisor.spawn("storm", children=[counting(storage, n, 10**9, i) for i, n in enumerate(names)])
    cleanup(sup)
    ref = sup.start()
    for n in names:  # every child is mid-run before the storm
        wait_until(lambda n=n: (s := child_status(ray_cluster, f"storm/{n}")) and s["cycle"] >= 1, f"storm/{n} to run")

    barrier = threading.Barrier(THREADS)
    outs: list[list[tuple[str, kr.InterruptMode, bool]]] = [[] for _ in range(THREADS)]
    threads = [threading.Thread(target=storm, args=(sup, t, barrier, outs[t]), daemon=True) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(thread.is_alive() for thread in threads), "a request never returned"
    assert [len(out) for out in outs] == [REQUESTS] * THREADS  # every call returned (none raised)

    result = ray.get(ref, timeout=WAIT_S)  # the run ends

    first = result["interrupt_reason"]
    assert result["status"] == "interrupted" and first is not None, result
    accepted = [(message, mode) for out in outs for message, mode, ok in out if ok]
    # The first accepted request is the reason; the only other accepted one is the escalation to IMMEDIATE.
    assert first.message in {message for message, _ in accepted}, (first, accepted)
    expected = 1 if first.mode is kr.InterruptMode.IMMEDIATE else 2
    assert len(accepted) == expected, accepted
    assert all(mode is kr.InterruptMode.IMMEDIATE for message, mode in accepted if message != first.message), accepted
    history = sup.interrupt_manager.history
    assert history[0].message == first.message and len(history) == expected, history

    for n in names:
        child = result["children"][n]
        assert child["status"] == "interrupted", (n, child)
        reason = child["interrupt_reason"]
        assert (reason.message, reason.source) == (first.message, first.source), (n, reason, first)
        assert reason.metadata["propagated_from"] == "storm", (n, reason)
        checkpoint = kr.load_checkpoint(child["checkpoint_id"], storage)
        assert (checkpoint.agent, checkpoint.cycle, checkpoint.state) == (f"storm/{n}", child["cycles"], child["state"])
    manifest = kr.load_checkpoint(result["checkpoint_id"], storage)
    assert manifest.agent == "storm"
