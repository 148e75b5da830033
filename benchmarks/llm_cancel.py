"""How fast an IMMEDIATE stop closes an LLM call in flight, as the server sees it.

Goal (issue 8): the time from ``request_interrupt(..., IMMEDIATE)`` to the
server seeing the client go is at most 2× that of a bare ``AsyncOpenAI`` call
cancelled by hand (``task.cancel()``), measured in the same run against the
same loopback server, whose detection of a closed connection is the same for
both. Reported: medians of each and their ratio.

    python -m benchmarks.llm_cancel [--quick] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import kaizen_ray as kr
from benchmarks import _report
from tests._support.openai_server import OpenAIServer, Reply

GOAL_RATIO = 2.0
RESULTS = Path(__file__).parent / "results"


class _Ask(kr.Signature):
    """Answer."""

    question: str = kr.InputField(desc="q")
    answer: str = kr.OutputField(desc="a")


async def _bare(server: OpenAIServer, index: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="sk-bench", base_url=server.base_url, max_retries=0)
    task = asyncio.ensure_future(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]))
    await asyncio.to_thread(server.wait_requests, index + 1, 30)
    t0 = time.perf_counter()
    task.cancel()
    await asyncio.to_thread(server.wait_abandoned, index + 1, 30)
    elapsed = time.perf_counter() - t0
    await asyncio.gather(task, return_exceptions=True)
    await client.close()
    return elapsed


async def _agent(server: OpenAIServer, index: int, storage: str) -> float:
    config = kr.AutonomousConfig(llm_provider="vllm", model="m", base_url=server.base_url, storage_path=storage)
    agent = kr.BaseAutonomousAgent(config=config, signature=_Ask(), name=f"bench-{index}")
    run = asyncio.ensure_future(agent.run_autonomous("hi"))
    await asyncio.to_thread(server.wait_requests, index + 1, 30)
    t0 = time.perf_counter()
    agent.interrupt_manager.request_interrupt("programmatic", "immediate", "benchmark")
    await asyncio.to_thread(server.wait_abandoned, index + 1, 30)
    elapsed = time.perf_counter() - t0
    await run
    return elapsed


def _measure(kind: str, rounds: int, storage: str) -> list[float]:
    hold = threading.Event()
    times = []
    with OpenAIServer() as server:
        server.replies([Reply(content="never sent", hold=hold)] * rounds)
        try:
            for i in range(rounds):
                coro = _bare(server, i) if kind == "bare" else _agent(server, i, storage)
                times.append(asyncio.run(coro))
        finally:
            hold.set()
    return times


def main(argv: list[str] | None = None) -> bool:
    """Run the benchmark; print a table, write JSON; True if the goal is met."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_cancel")
    parser.add_argument("--quick", action="store_true", help="a few rounds: a smoke test")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as storage:
        bare = _measure("bare", rounds, storage)
        agent = _measure("agent", rounds, storage)
    bare_ms, agent_ms = statistics.median(bare) * 1000, statistics.median(agent) * 1000
    ratio = agent_ms / bare_ms if bare_ms else float("inf")
    ok = ratio <= GOAL_RATIO
    print("| figure | baseline (bare AsyncOpenAI, task.cancel) | kaizen_ray (IMMEDIATE) | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| IMMEDIATE → server sees the client go (median of {rounds}) | {bare_ms:.2f} ms | {agent_ms:.2f} ms "
          f"| {ratio:.2f}× | ≤ {GOAL_RATIO}× {'met' if ok else 'NOT met'} |")  # fmt: skip
    _report.write("llm_cancel", {"rounds": rounds, "baseline_ms": bare_ms, "measured_ms": agent_ms, "goal_ratio": GOAL_RATIO},
                  figures=[_report.figure(
                      f"IMMEDIATE → LLM server sees the client go (median of {rounds})", agent_ms, "ms", baseline=bare_ms,
                      target=f"≤ {GOAL_RATIO:g}×", met=None if args.quick else ok,
                      about="an IMMEDIATE stop of an LLM agent until the loopback server sees the connection close; "
                            "baseline a bare AsyncOpenAI call cancelled by hand")],
                  quick=args.quick)  # fmt: skip
    return True if args.quick else ok  # --quick is a smoke test: the goal is judged on full runs only


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
