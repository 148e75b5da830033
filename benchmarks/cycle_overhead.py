"""What one cycle of an agent costs beyond its step: an empty step in an agent actor, against a bare async loop.

Both sides run in a Ray actor, on the same Ray, in the same run, and run the
very same ``empty_step`` coroutine function (it counts and returns a
:class:`~kaizen_ray.StepResult`):

* measured: an agent actor (``EmptyStep.spawn``) whose run does ``--cycles``
  cycles, every boundary checked for interrupts, hooks, budget and the
  cycle's cancellation machinery included; checkpoints only at the end
  (``checkpoint_frequency=0``), so the loop is measured, not the disk
  (the default, a checkpoint every cycle, is reported beside it, no goal,
  and so is the same with ``checkpoints_in_flight=4``);
* baseline: ``while not done: await empty_step(...)``, run as the single step
  of a run of the *same* agent actor (:func:`bare_round`): the same process,
  event loop and thread as the measured cycles, so what differs from one
  worker process to another here (up to a third of a cycle's time, when the
  baseline ran in an actor of its own) falls out of the ratio;
* context (no goal): the same two loops in this process (the core
  ``AgentRun`` through ``run_autonomous``, no Ray), rounds interleaved;
* context (no goal): the same loop running each step as its own asyncio task,
  as the agent's loop did before its cycles shared one task: what a task
  (and its two turns of the loop) per cycle costs here (also a bare round).

Per-cycle time is taken inside the actor from the step's own clock (first
cycle to last), so actor start, the call's round trip and the final
checkpoint are not in it. Each side runs ``--rounds`` times, interleaved; the
median round counts. Goal (issue 11): ≤ 1.2× the bare loop.

    python -m benchmarks.cycle_overhead [--quick] [--cycles 20000] [--rounds 5] [--profile]

``--profile`` also runs the core ``AgentRun`` in this process (no Ray) under
cProfile and prints where the per-cycle time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
import ray.cloudpickle

import kaizen_ray as kr
from benchmarks import _report

# The agent class must reach the workers, which may not have benchmarks/ on their path.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

NAME = "cycle_overhead"
GOAL_RATIO = 1.2


def initial(cycles: int) -> dict[str, Any]:
    return {"n": 0, "cycles": cycles, "t0": 0.0, "t1": 0.0}


async def empty_step(state: dict[str, Any], ctx: Any) -> kr.StepResult:
    """The step both sides run: count, note the clock at the first and the last cycle."""
    n = state["n"] + 1
    state["n"] = n
    if n == 1:
        state["t0"] = time.perf_counter()
    if n == state["cycles"]:
        state["t1"] = time.perf_counter()
        return kr.StepResult(state, done=True)
    return kr.StepResult(state)


def per_cycle_us(state: dict[str, Any]) -> float:
    return (state["t1"] - state["t0"]) / max(1, state["cycles"] - 1) * 1e6


async def bare_round(state: dict[str, Any], ctx: Any, *, as_task: bool = False) -> kr.StepResult:
    """The baseline, as one step: a bare loop awaiting ``empty_step`` ``state["cycles"]`` times (each as a task if asked)."""
    inner, done = initial(state["cycles"]), False
    while not done:
        result = await (asyncio.ensure_future(empty_step(inner, None)) if as_task else empty_step(inner, None))
        inner, done = result.state, result.done
    return kr.StepResult({**state, "bare_us": per_cycle_us(inner)}, done=True)


class EmptyStep(kr.BaseAutonomousAgent):
    """An agent whose step does nothing but count (``empty_step`` itself, no wrapper).

    A task ``{"cycles": n, "bare": "plain" | "task"}`` makes the run's one step
    :func:`bare_round` instead: the baseline, in this very actor.
    """

    step = staticmethod(empty_step)

    def initial_state(self, task: int | dict[str, Any]) -> dict[str, Any]:
        # The run reads the step once, after this: a measured run's cycles run empty_step itself.
        if isinstance(task, int):
            self.step = empty_step  # type: ignore[method-assign]
            return initial(task)
        self.step = functools.partial(bare_round, as_task=task["bare"] == "task")  # type: ignore[method-assign]
        return initial(task["cycles"])


def _bare_us(agent: Any, cycles: int, kind: str) -> float:
    return float(ray.get(agent.start({"cycles": cycles, "bare": kind}))["state"]["bare_us"])


def measure(cycles: int, rounds: int) -> dict[str, list[float]]:
    """µs per cycle, one sample per round, for the agent, the bare loop and the bare loop with a task per step."""
    storage = tempfile.mkdtemp(prefix="kaizen-bench-")
    out: dict[str, list[float]] = {"agent": [], "bare": [], "bare_task": [], "agent_checkpointing": [], "agent_in_flight": []}
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"bench-{uuid.uuid4().hex[:6]}", log_to_driver=False)
    try:
        cfg = kr.AutonomousConfig(storage_path=storage, checkpoint_frequency=0)
        agent = EmptyStep.spawn(config=cfg, name="empty-step")
        # The default config checkpoints every cycle (write-behind to the store actor): reported, not judged.
        checkpointing = EmptyStep.spawn(config=cfg.model_copy(update={"checkpoint_frequency": 1}), name="empty-step-ckpt")
        in_flight = EmptyStep.spawn(
            config=cfg.model_copy(update={"checkpoint_frequency": 1, "checkpoints_in_flight": 4}), name="empty-step-in-flight"
        )
        warm = min(cycles, 200)  # imports, first allocations, the store's first save: not measured
        ray.get(agent.start(warm))
        _bare_us(agent, warm, "task")
        ray.get(checkpointing.start(warm))
        ray.get(in_flight.start(warm))
        for _ in range(rounds):
            result = ray.get(agent.start(cycles))
            if result["status"] != "completed" or result["cycles"] != cycles:
                raise RuntimeError(f"the agent's run did not complete its {cycles} cycles: {result['status']}, {result['cycles']}")
            out["agent"].append(per_cycle_us(result["state"]))
            out["bare"].append(_bare_us(agent, cycles, "plain"))
            out["bare_task"].append(_bare_us(agent, cycles, "task"))
            fewer = max(2, cycles // 10)  # each cycle is a round trip to the store: ten times fewer
            out["agent_checkpointing"].append(per_cycle_us(ray.get(checkpointing.start(fewer))["state"]))
            out["agent_in_flight"].append(per_cycle_us(ray.get(in_flight.start(fewer))["state"]))
    finally:
        ray.shutdown()
    return out


def measure_in_process(cycles: int, rounds: int) -> dict[str, list[float]]:
    """µs per cycle in this process, one sample per round: the core run (no Ray) and the bare loop, interleaved."""
    agent = EmptyStep(config=kr.AutonomousConfig(storage_path=tempfile.mkdtemp(prefix="kaizen-bench-"), checkpoint_frequency=0))

    async def bare() -> float:
        state, done = initial(cycles), False
        while not done:
            result = await empty_step(state, None)
            state, done = result.state, result.done
        return per_cycle_us(state)

    async def rounds_of_both() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"agent": [], "bare": []}
        await agent.run_autonomous(min(cycles, 200))  # warm-up
        for _ in range(rounds):
            out["bare"].append(await bare())
            out["agent"].append(per_cycle_us((await agent.run_autonomous(cycles))["state"]))
        return out

    return asyncio.run(rounds_of_both())


def profile(cycles: int, top: int = 18) -> None:
    """The core AgentRun in this process (no Ray) under cProfile: where a cycle's time goes."""
    agent = EmptyStep(config=kr.AutonomousConfig(storage_path=tempfile.mkdtemp(prefix="kaizen-bench-"), checkpoint_frequency=0))
    profiler = cProfile.Profile()
    profiler.enable()
    result = asyncio.run(agent.run_autonomous(cycles))
    profiler.disable()
    print(f"core AgentRun in-process, {cycles} cycles: {per_cycle_us(result['state']):.2f} µs per cycle under cProfile "
          "(slower than unprofiled); where the time goes:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> bool:
    """Measure, print, write ``benchmarks/results/cycle_overhead.json``; True if the goal was met (always, with --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 cycles, 2 rounds: a smoke test, goal not judged")
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also profile the core loop in-process")
    args = parser.parse_args(argv)
    cycles, rounds = (500, 2) if args.quick else (args.cycles, args.rounds)
    if cycles < 2 or rounds < 1:
        parser.error(f"need at least 2 cycles and 1 round, got --cycles {cycles} --rounds {rounds}")

    samples = measure(cycles, rounds)
    local = measure_in_process(cycles, rounds)
    samples["in_process_agent"], samples["in_process_bare"] = local["agent"], local["bare"]
    local_agent, local_bare = statistics.median(local["agent"]), statistics.median(local["bare"])
    agent, bare, bare_task, checkpointing, in_flight = (
        statistics.median(samples[k]) for k in ("agent", "bare", "bare_task", "agent_checkpointing", "agent_in_flight")
    )
    ratio = _report.ratio(agent, bare)
    met = ratio <= GOAL_RATIO
    print(f"per cycle, median of {rounds} rounds of {cycles} cycles (µs): agent {agent:.2f}, bare loop {bare:.2f} "
          f"({ratio:.2f}×, goal ≤ {GOAL_RATIO}×: {'met' if met else 'NOT met'}), bare loop with a task per step "
          f"{bare_task:.2f} ({_report.ratio(agent, bare_task):.2f}×); checkpointed every cycle {checkpointing:.2f}, "
          f"with 4 in flight {in_flight:.2f}; in-process {local_agent:.2f} against {local_bare:.2f} "
          f"({_report.ratio(local_agent, local_bare):.2f}×)")  # fmt: skip
    figures = [
        _report.figure(
            "one cycle of an empty step in an agent actor", agent, "µs", baseline=bare, target=f"≤ {GOAL_RATIO}×",
            met=None if args.quick else met,
            about="time per cycle of an agent whose step does nothing, in its actor; baseline a bare async loop "
                  "awaiting the same step, run as one step of the same actor (same process, loop and thread)",
        ),
        _report.figure("the same, against a bare loop running each step as a task", agent, "µs", baseline=bare_task,
                       about="the same cycle against a bare async loop that runs each step as its own task "
                             "(a task per cycle, as the agent's loop once did)"),
        _report.figure("agent overhead per cycle beyond the bare loop", agent - bare, "µs"),
        _report.figure("the same in-process (core run, no Ray), against a bare loop in the same process", local_agent,
                       "µs", baseline=local_bare,
                       about="await agent.run_autonomous(cycles) of the same agent in this process, against the bare "
                             "loop awaiting the same step in this process; rounds interleaved"),
        _report.figure("one cycle of an empty step, checkpointed every cycle (the default)", checkpointing, "µs", baseline=agent,
                       about="the same agent with checkpoint_frequency=1, each cycle's state sent to the checkpoint store "
                             "and held there before the next cycle; baseline the agent checkpointing only at the end"),
        _report.figure("the same, with checkpoints_in_flight=4", in_flight, "µs", baseline=checkpointing,
                       about="checkpoint_frequency=1 and checkpoints_in_flight=4: a cycle does not wait for the store's "
                             "acknowledgement unless four are outstanding; baseline the default (one in flight)"),
    ]  # fmt: skip
    path = _report.write(NAME, {"cycles": cycles, "rounds": rounds, "samples_us": samples}, figures=figures, quick=args.quick)
    print(f"written to {path}")
    if args.profile:
        profile(cycles)
    return met or args.quick


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
