"""Kaizen's "production agent with all handlers", ported: an LLM agent on a local Ollama.

    ollama serve &                       # once: https://ollama.com/download
    ollama pull llama3.2:1b              # once: a 1.3 GB model
    python examples/05_llm_agent.py "Name three uses of an actor model."

The code below is the seed guide's as written, with kaizen_ray's imports:
a signature, ``llm_provider="ollama"``, and the signal, timeout and budget
handlers on the agent's manager. Ctrl+C stops it gracefully (twice: at once);
it also stops after 300 s, or once it has spent $1.00 (Ollama is free unless
you price it: ``AutonomousConfig(pricing=...)``). Every stop leaves a
checkpoint; the script prints the result and where it is.

Ollama is found at ``$OLLAMA_HOST`` (default ``localhost:11434``). When it is
not running, the script says how to start it and exits with status 2.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import urllib.error
import urllib.request

from kaizen_ray import (
    AutonomousConfig,
    BaseAutonomousAgent,
    BudgetInterruptHandler,
    InputField,
    InterruptedError,
    OutputField,
    Signature,
    SignalInterruptHandler,
    TimeoutInterruptHandler,
)
from kaizen_ray.llm.client import resolve_endpoint


class MySignature(Signature):
    """Answer the task in a few sentences."""

    task: str = InputField(description="Task to perform")
    result: str = OutputField(description="Result")


def ollama_is_up(config: AutonomousConfig) -> bool:
    """True if the Ollama server answers its OpenAI-compatible model list."""
    try:
        with urllib.request.urlopen(f"{resolve_endpoint(config)}/models", timeout=3) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def main(task: str) -> int:
    config = AutonomousConfig(
        llm_provider="ollama",
        model=os.environ.get("KAIZEN_EXAMPLE_MODEL", "llama3.2:1b"),
        enable_interrupts=True,
        graceful_shutdown_timeout=5.0,
        checkpoint_on_interrupt=True,
        storage_path=os.environ.get("KAIZEN_RAY_STORAGE_PATH") or tempfile.mkdtemp(prefix="kaizen-llm-"),
        max_cycles=20,
    )
    if not ollama_is_up(config):
        print(
            f"No Ollama at {resolve_endpoint(config)}. Start one, then run this again:\n"
            "    ollama serve &\n"
            f"    ollama pull {config.model}\n"
            "(or point OLLAMA_HOST at a running one)",
            file=sys.stderr,
        )
        return 2

    agent = BaseAutonomousAgent(config=config, signature=MySignature())

    # Add all handlers
    agent.interrupt_manager.add_handler(SignalInterruptHandler())
    agent.interrupt_manager.add_handler(TimeoutInterruptHandler(timeout_seconds=300.0))
    agent.interrupt_manager.add_handler(BudgetInterruptHandler(max_cost=1.0))

    # Run with full protection
    try:
        result = await agent.run_autonomous(task=task)
    except InterruptedError as exc:  # only with raise_on_interrupt=True
        print(f"INTERRUPTED {exc.reason.message}; checkpoint {exc.checkpoint_id}")
        return 1
    print(f"RESULT {result['status']} after {result['cycles']} cycles, usage {result['usage']}")
    if result["output"]:
        print(f"OUTPUT {result['output']['result']}")
    if result["interrupt_reason"] is not None:
        print(f"STOPPED BY {result['interrupt_reason'].source.value}: {result['interrupt_reason'].message}")
    print(f"CHECKPOINT {result['checkpoint_id']} in {config.storage_path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(" ".join(sys.argv[1:]) or "Name three uses of an actor model.")))
