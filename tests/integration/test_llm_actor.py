"""LLM agents as Ray actors, against a real loopback chat-completions server."""

from __future__ import annotations

import sys

import pytest
import ray.cloudpickle

import kaizen_ray as kr
from tests._support.openai_server import OpenAIServer, Reply

pytestmark = pytest.mark.ray

# The signature and tools below ship to the actors by value: workers cannot import a test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Answer(kr.Signature):
    """Answer briefly."""

    question: str = kr.InputField(desc="The question")
    answer: str = kr.OutputField(desc="The answer")


def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def llm_config(server, storage, **kw):
    return kr.AutonomousConfig(
        llm_provider="vllm", model="test-model", base_url=server.base_url, storage_path=storage,
        llm_retry_backoff_s=0.01, **kw,
    )  # fmt: skip


def test_an_llm_agent_runs_as_an_actor_with_its_signature_and_tools(ray_cluster, storage, server, cleanup):
    server.replies([
        Reply(tool_calls=[("shout", {"text": "hi"})], prompt_tokens=20, completion_tokens=4),
        Reply(content="HI", prompt_tokens=30, completion_tokens=2),
    ])  # fmt: skip
    handle = kr.BaseAutonomousAgent.spawn(
        config=llm_config(server, storage), name="llm-actor", signature=Answer(), tools=[shout]
    )
    cleanup(handle)
    result = handle.run("say hi loudly")
    assert (result["status"], result["output"], result["cycles"]) == ("completed", {"answer": "HI"}, 2)
    assert result["usage"] == {"prompt_tokens": 50, "completion_tokens": 6, "calls": 2}
    assert server.requests[1].body["messages"][-1]["content"] == "HI"  # the tool ran inside the actor


def test_three_llm_agents_sharing_a_supervisors_budget_never_overshoot_it(ray_cluster, storage, server, cleanup):
    # Each call reports 500 tokens at $1/M (0.0005); its worst case reserves prompt bytes + 100 tokens.
    server.replies([Reply(tool_calls=[("shout", {"text": "x"})], prompt_tokens=400, completion_tokens=100)] * 60)
    max_cost = 0.006
    cfg = llm_config(server, storage, max_tokens=100, pricing={"input_per_million": 1.0, "output_per_million": 1.0})
    swarm = kr.Supervisor.spawn(
        "llm-swarm",
        children=[
            kr.ChildSpec(kr.BaseAutonomousAgent, name=f"a{i}", config=cfg, task="go on",
                         agent_kwargs={"signature": Answer(), "tools": [shout]})
            for i in range(3)
        ],
    )  # fmt: skip
    cleanup(swarm)
    swarm.add_handler(kr.BudgetInterruptHandler(max_cost=max_cost))
    result = swarm.run()
    children = result["children"]
    spent = sum(child["cost"] for child in children.values())
    assert spent <= max_cost + 1e-9
    assert all(child["status"] == "interrupted" for child in children.values()), children
    assert {child["interrupt_reason"].metadata["handler"] for child in children.values()} == {"budget"}
    calls = sum(child["usage"]["calls"] for child in children.values())
    assert spent == pytest.approx(calls * 0.0005)
    assert len(server.requests) == calls  # every call made was charged: none went unreserved
