"""Ctrl+C on an agent running in a Ray actor: graceful first, immediate second.

    python examples/01_ctrl_c_interrupt.py                # press Ctrl+C once it says RUNNING
    python examples/01_ctrl_c_interrupt.py --pause 5      # long steps: press Ctrl+C twice
    python examples/01_ctrl_c_interrupt.py --address HOST:PORT   # on your cluster, not a local Ray

One agent writes one note per cycle (an ``async`` step that waits ``--pause``
seconds, standing for an LLM call) for ``--cycles`` cycles. ``handle.run``
blocks and turns Ctrl+C into interrupts of the agent's actor:

* first Ctrl+C: GRACEFUL, the cycle in flight finishes, a checkpoint is saved;
* second Ctrl+C: IMMEDIATE, the cycle in flight is cancelled, the checkpoint
  holds the state after the last completed cycle;
* third Ctrl+C: KeyboardInterrupt.

The run's checkpoint is on disk when ``run`` returns; the script prints its
file. Output lines (tests rely on them): ``RUNNING`` once the agent has
completed a cycle, is in the middle of the next one, and Ctrl+C is handled, ``INTERRUPT SEEN`` when the agent's
actor has accepted an interrupt, then ``RESULT ...`` and ``CHECKPOINT ...``.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402 - the environment must be set before Ray is imported
import asyncio  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402

import kaizen_ray as kr  # noqa: E402
from kaizen_ray.core.checkpoint import FileCheckpointStorage  # noqa: E402

NAMESPACE = "kaizen-examples"


class NoteTaker(kr.BaseAutonomousAgent):
    """One note per cycle; each cycle waits ``pause_s`` (an LLM call, say)."""

    def initial_state(self, task: dict[str, Any]) -> dict[str, Any]:
        return {"topic": task["topic"], "goal": task["cycles"], "pause_s": task["pause_s"], "notes": []}

    async def step(self, state: dict[str, Any], ctx: kr.StepContext) -> kr.StepResult:
        await asyncio.sleep(state["pause_s"])  # an IMMEDIATE stop cancels the cycle here
        notes = [*state["notes"], f"note {ctx.cycle} on {state['topic']}"]
        return kr.StepResult({**state, "notes": notes}, done=len(notes) >= state["goal"], output=len(notes))


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


def watch(handle: kr.AgentHandle, sigint_before: Any, finished: threading.Event) -> None:
    """Say RUNNING once a cycle is done, the next is in flight and Ctrl+C is ours; then each interrupt accepted."""
    announced_running = False
    seen_mode = None
    while not finished.wait(0.1):
        try:
            status = handle.status()
        except Exception as exc:  # noqa: BLE001 - the watcher only narrates; the run reports errors
            say(f"(status unavailable: {type(exc).__name__})")
            return
        # handle.run installs its Ctrl+C handler right after starting the run:
        # wait for both, so that a Ctrl+C after RUNNING is always a graceful stop.
        ready = status["cycle"] >= 1 and status["cycle_in_flight"] is not None  # mid-cycle, not at a boundary
        if not announced_running and ready and signal.getsignal(signal.SIGINT) is not sigint_before:
            announced_running = True
            say(f"RUNNING: {handle.name} completed cycle {status['cycle']}; press Ctrl+C to stop it gracefully")
        if status["interrupted"] and status["mode"] != seen_mode:
            seen_mode = status["mode"]
            reason = status["interrupt_reason"]
            say(f"INTERRUPT SEEN: mode={seen_mode} source={reason.source.value} ({reason.message})")


def main(argv: list[str] | None = None) -> int:
    """Spawn, run until done or Ctrl+C, report the result and its checkpoint file; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="checkpoint folder (default: a fresh temporary folder)")
    parser.add_argument("--address", help="join this Ray cluster (default: start a local Ray; RAY_ADDRESS is ignored)")
    parser.add_argument("--cycles", type=int, default=100, help="cycles to complete the task (default 100)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds per cycle (default 0.3)")
    args = parser.parse_args(argv)
    storage = Path(args.storage or tempfile.mkdtemp(prefix="kaizen-ctrl-c-")).resolve()

    started_ray = start_ray(args.address)
    try:
        sigint_before = signal.getsignal(signal.SIGINT)
        config = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=1)
        handle = NoteTaker.spawn(config=config, name=f"note-taker-{os.getpid()}")
        say(f"spawned {handle.name}: {args.cycles} cycles of {args.pause}s; checkpoints in {storage}")

        finished = threading.Event()
        watcher = threading.Thread(target=watch, args=(handle, sigint_before, finished), daemon=True)
        watcher.start()
        try:
            result = handle.run({"topic": "interrupts", "cycles": args.cycles, "pause_s": args.pause})
        except KeyboardInterrupt:
            say("third Ctrl+C: leaving now; the agent's last flushed checkpoint stays valid")
            return 130
        finally:
            finished.set()
            watcher.join(timeout=15)

        reason = result["interrupt_reason"]
        say(f"RESULT status={result['status']} mode={result['mode']} cycles={result['cycles']}")
        if reason is not None:
            how = "graceful" if reason.mode is kr.InterruptMode.GRACEFUL else "immediate"
            say(f"  first interrupt: {reason.source.value}, {how}: {reason.message}")
            if result["mode"] != reason.mode.value:
                say(f"  the stop became {result['mode']} before the run ended (a second Ctrl+C, or the graceful timeout)")
        notes = len(result["state"]["notes"]) if result["state"] else 0
        say(f"  notes kept: {notes} (the state after the last completed cycle)")
        if result["checkpoint_id"] is not None:
            path = FileCheckpointStorage(storage).find(result["checkpoint_id"])
            say(f"CHECKPOINT id={result['checkpoint_id']} file={path}")
            say(f"  resume with: handle.run(resume_from_checkpoint={result['checkpoint_id']!r})")
        else:
            say("CHECKPOINT none")
        return 0 if result["status"] in ("completed", "interrupted") else 1
    finally:
        if started_ray:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
