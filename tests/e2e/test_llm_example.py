"""examples/05_llm_agent.py — the seed's production agent — runs as written against an Ollama-speaking server.

The loopback server stands in for Ollama through ``OLLAMA_HOST``, exactly as a
user points the example at a remote Ollama. Without any server, the example
says how to start Ollama and exits 2.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests._support.openai_server import OpenAIServer, Reply
from tests._support.processes import clean_env, run

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "examples" / "05_llm_agent.py"


def run_example(tmp_path, ollama_host: str, *args: str):
    env = clean_env({"OLLAMA_HOST": ollama_host, "KAIZEN_RAY_STORAGE_PATH": str(tmp_path)})
    env.pop("OPENAI_API_KEY", None)
    return run([sys.executable, str(EXAMPLE), *args], env=env, timeout=90, name="05_llm_agent")


def test_the_seed_production_agent_runs_as_written_against_an_ollama_compatible_server(tmp_path):
    with OpenAIServer() as server:
        server.replies([Reply(content="Actors isolate state, scale out, and fail alone.", prompt_tokens=42, completion_tokens=11)])
        host = server.base_url.removeprefix("http://").removesuffix("/v1")
        done = run_example(tmp_path, host, "Name three uses of an actor model.")
        assert server.requests[0].model == "llama3.2:1b"
        assert server.requests[0].body["messages"][1]["content"] == "Name three uses of an actor model."
    assert done.returncode == 0, done.stderr
    assert "RESULT completed after 1 cycles, usage {'prompt_tokens': 42, 'completion_tokens': 11, 'calls': 1}" in done.stdout
    assert "OUTPUT Actors isolate state, scale out, and fail alone." in done.stdout
    assert "CHECKPOINT ck-" in done.stdout and any(tmp_path.rglob("*.ckpt"))


def test_without_ollama_the_example_says_how_to_start_one(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_example(tmp_path, f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert f"No Ollama at http://127.0.0.1:{port}/v1" in done.stderr
    assert "ollama serve" in done.stderr and "ollama pull llama3.2:1b" in done.stderr
