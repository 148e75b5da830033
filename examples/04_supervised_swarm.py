"""A supervised swarm of three agents: run, interrupt all at once, resume from the manifest.

    python examples/04_supervised_swarm.py [--storage PATH] [--address HOST:PORT]

1. ``kr.Supervisor.spawn`` starts a supervisor actor over three children
   (``swarm/w0`` .. ``swarm/w2``), each counting to its own goal, one
   ``--pause`` second cycle at a time.
2. Once every child has a few cycles done, one ``swarm.request_interrupt``
   stops them all: the supervisor forwards it to every child at once; each
   finishes its cycle, checkpoints, and the supervisor saves a manifest
   checkpoint naming its children's checkpoints. (Ctrl+C does the same.)
3. ``swarm.run(resume_from_checkpoint=<manifest>)`` resumes every child from
   its own checkpoint; each finishes its count with no cycle lost or repeated.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402 - the environment must be set before Ray is imported
import asyncio  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402

import kaizen_ray as kr  # noqa: E402

NAMESPACE = "kaizen-examples"
GOALS = {"w0": 15, "w1": 20, "w2": 25}
CYCLES_BEFORE_INTERRUPT = 4


class Counter(kr.BaseAutonomousAgent):
    """Counts to ``goal``, one number per cycle; the state keeps every number it wrote."""

    def initial_state(self, task: dict[str, Any]) -> dict[str, Any]:
        return {"goal": task["goal"], "pause_s": task["pause_s"], "seen": []}

    async def step(self, state: dict[str, Any], ctx: kr.StepContext) -> kr.StepResult:
        await asyncio.sleep(state["pause_s"])
        seen = [*state["seen"], ctx.cycle]
        return kr.StepResult({**state, "seen": seen}, done=len(seen) >= state["goal"], output=len(seen))


def say(line: str) -> None:
    """Print at once: a test (or a pipe) reads the lines as they come."""
    print(line, flush=True)


def start_ray(address: str | None) -> bool:
    """Start an embedded local Ray, or join ``address`` (``--address``); True if this script connected.

    ``RAY_ADDRESS`` is ignored on purpose: an example joins a cluster only when told to.
    """
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, namespace=NAMESPACE)
    else:
        # address="local": a fresh Ray of our own, whatever RAY_ADDRESS points at.
        ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False)
    return True


def interrupt_when_busy(swarm: kr.SupervisorHandle, children: list[str], done: threading.Event) -> None:
    """Interrupt the swarm once every child has completed a few cycles (or give up after 60 s)."""
    deadline = time.monotonic() + 60
    cycles: dict[str, int] = {}
    while not done.wait(0.2) and time.monotonic() < deadline:
        for child in children:
            try:
                cycles[child] = kr.get_agent(f"{swarm.name}/{child}", namespace=swarm.namespace).status()["cycle"]
            except (kr.AgentGoneError, TimeoutError):
                cycles[child] = 0  # not spawned yet
        if all(cycles.get(c, 0) >= CYCLES_BEFORE_INTERRUPT for c in children):
            break
    if done.is_set():
        return
    say(f"step 2: interrupting the swarm (children at cycles {cycles}) ...")
    accepted = swarm.request_interrupt(
        kr.InterruptSource.PROGRAMMATIC, kr.InterruptMode.GRACEFUL, "example: pause the swarm", {"example": "04"}
    )
    say(f"  supervisor accepted the interrupt: {accepted}")


def contiguous(seen: list[int]) -> bool:
    """True if ``seen`` is 1, 2, ..., n: no cycle lost, none repeated."""
    return seen == list(range(1, len(seen) + 1))


def main(argv: list[str] | None = None) -> int:
    """Run, interrupt and resume the swarm; exit code 0 if every child finished intact."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="checkpoint folder (default: a fresh temporary folder)")
    parser.add_argument("--address", help="join this Ray cluster (default: start a local Ray; RAY_ADDRESS is ignored)")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds per cycle (default 0.2)")
    args = parser.parse_args(argv)
    storage = Path(args.storage or tempfile.mkdtemp(prefix="kaizen-swarm-")).resolve()

    started_ray = start_ray(args.address)
    try:
        config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
        children = [
            kr.ChildSpec(Counter, name=name, config=config, task={"goal": goal, "pause_s": args.pause})
            for name, goal in GOALS.items()
        ]
        swarm = kr.Supervisor.spawn(
            "swarm",
            children=children,
            namespace=NAMESPACE,
            config=kr.SupervisorConfig(strategy="one_for_one", storage_path=storage),
        )
        say(f"step 1: supervisor {swarm.name!r} runs {list(GOALS)} (goals {GOALS}); checkpoints in {storage}")

        done = threading.Event()
        interrupter = threading.Thread(target=interrupt_when_busy, args=(swarm, list(GOALS), done), daemon=True)
        interrupter.start()
        try:
            first = swarm.run()  # Ctrl+C-aware: a Ctrl+C here stops the swarm the same way
        finally:
            done.set()
            interrupter.join(timeout=30)

        say(f"  first run: {first['status']}, manifest checkpoint {first['checkpoint_id']}")
        for name, result in sorted(first["children"].items()):
            say(f"    {name}: {result['status']} at cycle {result['cycles']}, checkpoint {result['checkpoint_id']}")
        manifest = kr.load_checkpoint(first["checkpoint_id"], storage_path=storage)
        say(f"  manifest on disk ({manifest.status.value}) names {len(manifest.state['children'])} child checkpoints")

        say(f"step 3: resuming the swarm from manifest {first['checkpoint_id']} ...")
        second = swarm.run(resume_from_checkpoint=first["checkpoint_id"])
        say(f"  second run: {second['status']}, manifest checkpoint {second['checkpoint_id']}")
        intact = True
        for name, result in sorted(second["children"].items()):
            seen = result["state"]["seen"]
            ok = contiguous(seen) and len(seen) == GOALS[name]
            intact = intact and ok
            resumed_at = first["children"][name]["cycles"]
            say(
                f"    {name}: {result['status']}, resumed at cycle {resumed_at}, finished at cycle {result['cycles']}; "
                f"{'cycles 1..' + str(len(seen)) + ', none lost or repeated' if ok else 'GAP OR REPEAT: ' + str(seen)}"
            )
        ok = first["status"] == "interrupted" and second["status"] == "completed" and intact
        say("SWARM OK" if ok else "SWARM NOT OK")
        return 0 if ok else 1
    finally:
        if started_ray:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
