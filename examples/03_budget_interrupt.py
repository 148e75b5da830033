"""A budget shared by a swarm, enforced by the named budget actor.

    python examples/03_budget_interrupt.py [--address HOST:PORT]

``swarm.add_handler(kr.BudgetInterruptHandler(max_cost=...))`` makes one
budget scope (a ``kaizen-budget/...`` actor) that every child charges.
``ctx.charge(cost)`` records spend, settled with the budget actor before the
next cycle; ``await ctx.reserve(cost)`` asks first and is refused if the
money is not there. With reservations the swarm never spends more than
``max_cost``, however many agents charge at once. Crossing 80 % of the budget
fires the ``BUDGET_WARNING`` hook once.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402 - the environment must be set before Ray is imported
import asyncio  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402

import kaizen_ray as kr  # noqa: E402

NAMESPACE = "kaizen-examples"

CALL_COST = 0.07  # what one "LLM call" costs


class Analyst(kr.BaseAutonomousAgent):
    """Makes one paid call per cycle, reserving its cost first."""

    def __init__(self, config: kr.AutonomousConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.warned_at: float | None = None
        # Fires once for the whole swarm: in the agent whose charges crossed 80 %.
        self.hooks.register(kr.HookEvent.BUDGET_WARNING, self._warned)

    def _warned(self, ctx: kr.HookContext) -> None:
        self.warned_at = ctx.data["budget"]["spent"]

    def initial_state(self, task: Any) -> dict[str, Any]:
        return {"question": task, "answers": 0, "warned_at": None}

    async def step(self, state: dict[str, Any], ctx: kr.StepContext) -> kr.StepResult:
        if not await ctx.reserve(CALL_COST):  # refused: the budget actor stops the swarm
            return kr.StepResult({**state, "warned_at": self.warned_at})
        await asyncio.sleep(0.05)  # the call
        ctx.charge(CALL_COST)
        return kr.StepResult({**state, "answers": state["answers"] + 1, "warned_at": self.warned_at})


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
    """Run three analysts on one budget until it runs out; say who spent what. Exit code 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="join this Ray cluster (default: start a local Ray; RAY_ADDRESS is ignored)")
    args = parser.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="kaizen-budget-")
    config = kr.AutonomousConfig(storage_path=storage)
    start_ray(args.address)
    try:
        swarm = kr.Supervisor.spawn(
            "analysts",
            children=[kr.ChildSpec(Analyst, name=f"a{i}", config=config, task=f"question {i}") for i in range(3)],
            config=kr.SupervisorConfig(storage_path=storage),
        )
        swarm.add_handler(kr.BudgetInterruptHandler(max_cost=1.0))
        print(f"three analysts share a budget of 1.00; each call costs {CALL_COST} ...", flush=True)
        result = swarm.run()
        total = sum(child["cost"] for child in result["children"].values())
        print(f"  swarm {result['status']}: {result['interrupt_reason'].message}", flush=True)
        for name, child in result["children"].items():
            warned = child["state"]["warned_at"]
            note = f" (saw the 80 % warning at {warned:.2f})" if warned is not None else ""
            print(f"  - {name}: {child['state']['answers']} answers, spent {child['cost']:.2f}{note}", flush=True)
        print(f"  total spent {total:.2f} of 1.00 (never more, thanks to reservations)", flush=True)
        print(f"  budget status: {swarm.status()['budget']}", flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
