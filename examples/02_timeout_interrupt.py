"""Timeouts on Ray: one agent and one whole swarm, stopped on time by the timer actor.

    python examples/02_timeout_interrupt.py [--address HOST:PORT]

``handle.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=...))`` gives
the run a deadline kept by the named timer actor (``kaizen-timer``). The
deadline counts from the moment the run starts; when it passes, the target
gets a SYSTEM interrupt (``metadata["handler"] == "timeout"``) in the
handler's mode. Here the agent's step *blocks* (a plain ``def`` calling
``time.sleep``): the timeout still lands, because it is delivered to the
actor's control thread, not to the busy step. A timeout on a supervisor stops
every child at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402 - the environment must be set before Ray is imported
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402

import kaizen_ray as kr  # noqa: E402

NAMESPACE = "kaizen-examples"


class Crawler(kr.BaseAutonomousAgent):
    """Fetches one page per cycle, blocking for 0.4 s (a sync HTTP call, say)."""

    def initial_state(self, task: Any) -> dict[str, Any]:
        return {"site": task, "pages": 0}

    def step(self, state: dict[str, Any], ctx: kr.StepContext) -> kr.StepResult:
        time.sleep(0.4)
        pages = state["pages"] + 1
        return kr.StepResult({**state, "pages": pages}, done=pages >= 1000, output=pages)


def start_ray(address: str | None) -> None:
    """Start an embedded local Ray, or join ``address`` (``--address``).

    ``RAY_ADDRESS`` is ignored on purpose: an example joins a cluster only when told to.
    """
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        # address="local": a fresh Ray of our own, whatever RAY_ADDRESS points at.
        ray.init(address="local", num_cpus=2, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)


def main(argv: list[str] | None = None) -> int:
    """Stop one agent, then a swarm of three, on a timeout; say what happened. Exit code 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="join this Ray cluster (default: start a local Ray; RAY_ADDRESS is ignored)")
    args = parser.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="kaizen-timeout-")
    config = kr.AutonomousConfig(storage_path=storage)
    start_ray(args.address)
    try:
        crawler = Crawler.spawn(config=config, name="crawler")
        crawler.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=2.0))
        print("one agent, a 2 s timeout, 0.4 s blocking steps ...", flush=True)
        result = crawler.run("example.org")
        reason = result["interrupt_reason"]
        print(
            f"  {result['status']} by {reason.source.value}/{reason.metadata['handler']} after "
            f"{reason.metadata['elapsed_seconds']:.2f}s ({reason.mode.value}); {result['cycles']} pages; "
            f"checkpoint {result['checkpoint_id']}",
            flush=True,
        )

        swarm = kr.Supervisor.spawn(
            "crawlers",
            children=[kr.ChildSpec(Crawler, name=f"c{i}", config=config, task=f"site-{i}.org") for i in range(3)],
            config=kr.SupervisorConfig(storage_path=storage),
        )
        swarm.add_handler(kr.TimeoutInterruptHandler(timeout_seconds=3.0))
        print("a swarm of three, one 3 s timeout on the supervisor ...", flush=True)
        result = swarm.run()
        print(f"  swarm {result['status']}: {result['interrupt_reason'].message}", flush=True)
        for name, child in result["children"].items():
            reason = child["interrupt_reason"]
            print(f"  - {name}: {child['status']} after {child['cycles']} pages (from {reason.metadata['propagated_from']})", flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
