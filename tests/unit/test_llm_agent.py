"""LLM agents in-process, against a real loopback server speaking the chat-completions API.

No Ray here (tests/integration/test_llm_actor.py runs them as actors). The
server is real HTTP on 127.0.0.1; the client is the real ``openai`` package.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import kaizen_ray as kr
from kaizen_ray.llm.tools import as_tool
from tests._support.agents import WAIT_S
from tests._support.openai_server import OpenAIServer, Reply


class Sum(kr.Signature):
    """Add the numbers with the add tool, then report."""

    numbers: str = kr.InputField(desc="Numbers to add")
    total: int = kr.OutputField(desc="The sum")
    note: str = kr.OutputField(desc="One remark")


class Answer(kr.Signature):
    """Answer briefly."""

    question: str = kr.InputField(description="The question")
    answer: str = kr.OutputField(description="The answer")


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


@pytest.fixture
def server():
    with OpenAIServer() as srv:
        yield srv


def config(server, tmp_path, **kw):
    return kr.AutonomousConfig(
        llm_provider="vllm", model="test-model", base_url=server.base_url, storage_path=tmp_path,
        llm_retry_backoff_s=0.01, **kw,
    )  # fmt: skip


def run(coro):
    return asyncio.run(coro)


def test_a_tool_then_answer_conversation_runs_the_tool_and_returns_the_parsed_output(server, tmp_path):
    server.replies([
        Reply(tool_calls=[("add", {"a": 2, "b": 3})], prompt_tokens=50, completion_tokens=10),
        Reply(content='{"total": 5, "note": "easy"}', prompt_tokens=70, completion_tokens=8),
    ])  # fmt: skip
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Sum(), tools=[add])
    seen = []
    agent.hook_manager.register(kr.HookEvent.PRE_TOOL, lambda ctx: seen.append(("pre", ctx.data["tool"], ctx.data["arguments"])))
    agent.hook_manager.register(kr.HookEvent.POST_TOOL, lambda ctx: seen.append(("post", ctx.data["tool"], ctx.data["result"])))

    result = run(agent.run_autonomous("2 and 3"))

    assert (result["status"], result["cycles"]) == ("completed", 2)
    assert result["output"] == {"total": 5, "note": "easy"}
    assert result["usage"] == {"prompt_tokens": 120, "completion_tokens": 18, "calls": 2}
    assert seen == [("pre", "add", {"a": 2, "b": 3}), ("post", "add", "5")]
    first, second = (r.body for r in server.requests)
    assert first["model"] == "test-model" and first["tools"][0]["function"]["name"] == "add"
    assert first["messages"][0]["role"] == "system" and "Add the numbers" in first["messages"][0]["content"]
    assert first["messages"][1] == {"role": "user", "content": "2 and 3"}
    tool_reply = second["messages"][-1]
    assert tool_reply["role"] == "tool" and tool_reply["content"] == "5"
    assert tool_reply["tool_call_id"] == second["messages"][-2]["tool_calls"][0]["id"]


def test_the_seeds_dangerous_operation_hook_stops_the_agent_before_the_tool_runs(server, tmp_path):
    ran = threading.Event()

    def rm_rf(path: str) -> str:
        """Delete everything under path."""
        ran.set()
        return "deleted"

    async def dangerous_operation_hook(context: kr.HookContext) -> kr.HookResult:
        tool = context.data.get("tool")
        if tool in {"delete_database", "rm_rf"}:
            context.agent.interrupt_manager.request_interrupt(
                source=kr.InterruptSource.PROGRAMMATIC, mode=kr.InterruptMode.IMMEDIATE,
                message=f"Dangerous operation blocked: {tool}", metadata={"tool": tool},
            )  # fmt: skip
            return kr.HookResult(success=False, error=f"blocked {tool}")
        return kr.HookResult(success=True)

    server.replies([Reply(tool_calls=[("rm_rf", {"path": "/"})])])
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer(), tools=[rm_rf])
    agent.hook_manager.register(kr.HookEvent.PRE_TOOL, dangerous_operation_hook)

    result = run(agent.run_autonomous("clean up"))

    assert not ran.is_set()
    assert (result["status"], result["mode"], result["cycles"]) == ("interrupted", "immediate", 0)
    assert result["interrupt_reason"].message == "Dangerous operation blocked: rm_rf"
    # The cycle that asked for the tool is not committed: the checkpoint holds the conversation before it.
    saved = kr.load_checkpoint(result["checkpoint_id"], storage_path=tmp_path)
    assert [m["role"] for m in saved.state["messages"]] == ["system", "user"]


def test_immediate_during_a_slow_call_returns_at_once_and_the_server_sees_the_client_go(server, tmp_path):
    hold = threading.Event()
    server.replies([Reply(content="too late", hold=hold)])
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer())

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous("slow question"))
        await asyncio.to_thread(server.wait_requests, 1, 30)
        agent.interrupt_manager.request_interrupt("user", "immediate", "stop now")
        return await task

    try:
        result = run(main())
        server.wait_abandoned(1, 30)
    finally:
        hold.set()
    assert (result["status"], result["cycles"]) == ("interrupted", 0)
    assert server.requests[0].outcome == "abandoned"
    assert result["usage"]["calls"] == 0


def test_graceful_during_a_slow_call_commits_it_and_a_fresh_agent_continues_the_conversation(server, tmp_path):
    hold = threading.Event()
    server.replies([
        Reply(tool_calls=[("add", {"a": 1, "b": 1})], hold=hold, prompt_tokens=30, completion_tokens=5),
        Reply(content='{"total": 2, "note": "resumed"}', prompt_tokens=40, completion_tokens=5),
    ])  # fmt: skip
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Sum(), tools=[add])

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous("1 and 1"))
        await asyncio.to_thread(server.wait_requests, 1, 30)
        agent.interrupt_manager.request_interrupt("user", "graceful", "pause")
        hold.set()  # the call in flight completes
        return await task

    first = run(main())
    assert (first["status"], first["cycles"]) == ("interrupted", 1)
    assert server.requests[0].outcome == "answered"

    fresh = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Sum(), tools=[add])
    second = run(fresh.run_autonomous(resume_from_checkpoint="latest"))
    assert (second["status"], second["cycles"], second["output"]) == ("completed", 2, {"total": 2, "note": "resumed"})
    assert second["usage"] == {"prompt_tokens": 70, "completion_tokens": 10, "calls": 2}
    resumed_messages = server.requests[1].body["messages"]
    assert [m["role"] for m in resumed_messages] == ["system", "user", "assistant", "tool"]
    assert resumed_messages[-1]["content"] == "2"



def test_the_same_agent_runs_again_in_a_new_event_loop(server, tmp_path):
    """Interrupt, then resume on the same object: each asyncio.run has its own loop, and the client follows it."""
    server.replies([Reply(content="one"), Reply(content="two")])  # one output field: the plain text is the answer
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer())
    first = run(agent.run_autonomous("q1"))
    second = run(agent.run_autonomous("q2"))
    assert (first["status"], first["output"]) == ("completed", {"answer": "one"})
    assert (second["status"], second["output"], second["error"]) == ("completed", {"answer": "two"}, None)
    assert [r.outcome for r in server.requests] == ["answered", "answered"]


def test_an_immediate_stop_during_a_hung_sync_tool_returns_and_asyncio_run_does_not_wait_for_it(server, tmp_path):
    """The tool's thread is its own daemon thread, not the loop's executor, which asyncio.run would join."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hangs() -> str:
        """Hangs until the test lets it go."""
        entered.set()
        release.wait(WAIT_S)
        finished.set()
        return "late"

    server.replies([Reply(tool_calls=[("hangs", {})])])
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer(), tools=[hangs])

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous("go"))
        await asyncio.to_thread(entered.wait, WAIT_S)
        agent.interrupt_manager.request_interrupt("user", "immediate", "stop now")
        return await task

    try:
        result = run(main())  # returns with the tool still hanging
        assert result["status"] == "interrupted" and not finished.is_set()
    finally:
        release.set()

def test_a_budget_from_token_prices_is_never_overshot(server, tmp_path):
    # $1 per million tokens both ways: a call's worst case is (prompt bytes + 100) µ$.
    server.replies([Reply(tool_calls=[("add", {"a": 1, "b": 2})], prompt_tokens=400, completion_tokens=100)] * 20)
    cfg = config(server, tmp_path, max_tokens=100, pricing={"input_per_million": 1.0, "output_per_million": 1.0})
    agent = kr.BaseAutonomousAgent(config=cfg, signature=Sum(), tools=[add])
    budget = kr.BudgetInterruptHandler(max_cost=0.004)
    agent.interrupt_manager.add_handler(budget)

    result = run(agent.run_autonomous("keep adding"))

    assert result["status"] == "interrupted"
    assert result["interrupt_reason"].metadata["handler"] == "budget"
    spent = budget.snapshot()["spent"]
    assert spent <= 0.004 + 1e-9
    assert result["cost"] == pytest.approx(spent)
    assert result["cost"] == pytest.approx(result["usage"]["calls"] * 500 / 1e6)
    assert 1 <= result["usage"]["calls"] < 20


def test_the_api_key_is_sent_but_never_written_logged_or_shown(server, tmp_path, monkeypatch, caplog):
    secret = "sk-kaizen-test-7f3a9c"
    monkeypatch.setenv("KR_TEST_API_KEY", secret)
    server.replies([Reply(content="fine")])
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path, api_key_env="KR_TEST_API_KEY"), signature=Answer())
    with caplog.at_level(logging.DEBUG):
        result = run(agent.run_autonomous("how are you"))
    assert result["status"] == "completed" and result["output"] == {"answer": "fine"}
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in caplog.text
    assert secret not in repr(agent) and secret not in repr(agent.llm) and secret not in repr(agent.config)



@pytest.mark.parametrize(("provider", "field"), [("openai", "max_completion_tokens"), ("vllm", "max_tokens")])
def test_the_token_limit_goes_by_the_name_the_provider_takes(server, tmp_path, monkeypatch, provider, field):
    """OpenAI's o-series refuse max_tokens; OpenAI-compatible servers know max_tokens."""
    monkeypatch.setenv("KR_TEST_API_KEY", "sk-test")
    server.replies([Reply(content="fine")])
    cfg = kr.AutonomousConfig(
        llm_provider=provider, model="o3-mini", base_url=server.base_url, storage_path=tmp_path,
        api_key_env="KR_TEST_API_KEY", max_tokens=77,
    )  # fmt: skip
    result = run(kr.BaseAutonomousAgent(config=cfg, signature=Answer()).run_autonomous("q"))
    assert result["status"] == "completed"
    body = server.requests[0].body
    [other] = {"max_tokens", "max_completion_tokens"} - {field}
    assert body[field] == 77 and other not in body

def test_a_tool_that_raises_or_a_bad_call_goes_back_to_the_model_as_an_error(server, tmp_path):
    def flaky(n: int) -> int:
        """Fails on purpose."""
        raise RuntimeError(f"flaky failed on {n}")

    server.replies([
        Reply(tool_calls=[("flaky", {"n": 1}), ("nope", {}), ("add", {"a": "x"}), ("add", "{not json")]),
        Reply(content="gave up"),
    ])  # fmt: skip
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer(), tools=[flaky, add])
    result = run(agent.run_autonomous("try the tools"))
    assert (result["status"], result["output"]) == ("completed", {"answer": "gave up"})
    replies = [m["content"] for m in server.requests[1].body["messages"] if m["role"] == "tool"]
    assert replies[0] == "error: flaky raised RuntimeError: flaky failed on 1"
    assert replies[1].startswith("error: there is no tool named 'nope'")
    assert replies[2].startswith("error: bad arguments for add:") and "a:" in replies[2] and "b:" in replies[2]
    assert replies[3].startswith("error: arguments of add are not valid JSON")


def test_transient_errors_are_retried_and_a_4xx_fails_the_run_with_its_cause(server, tmp_path):
    import openai

    server.replies([Reply(status=429), Reply(status=500), Reply(content="third time")])
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer())
    ok = run(agent.run_autonomous("retry please"))
    assert (ok["status"], ok["output"], len(server.requests)) == ("completed", {"answer": "third time"}, 3)

    server.replies([Reply(status=404)])
    agent = kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Answer(), name="lost")
    failed = run(agent.run_autonomous("unknown model"))
    assert failed["status"] == "failed"
    assert isinstance(failed["error"], kr.LLMError) and "vllm/test-model" in str(failed["error"])
    assert isinstance(failed["error"].__cause__, openai.NotFoundError)
    assert len(server.requests) == 4  # a 4xx is not retried
    # Nothing lost: the run's last good state (the conversation so far) is checkpointed.
    saved = kr.load_checkpoint(failed["checkpoint_id"], storage_path=tmp_path)
    assert saved.status == "failed" and [m["role"] for m in saved.state["messages"]] == ["system", "user"]


def test_an_unreachable_server_fails_after_bounded_retries(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = kr.AutonomousConfig(
        llm_provider="vllm", model="m", base_url=f"http://127.0.0.1:{port}/v1", storage_path=tmp_path,
        llm_max_retries=2, llm_retry_backoff_s=0.01,
    )  # fmt: skip
    result = run(kr.BaseAutonomousAgent(config=cfg, signature=Answer()).run_autonomous("anyone?"))
    import openai

    assert result["status"] == "failed" and isinstance(result["error"], kr.LLMError)
    assert isinstance(result["error"].__cause__, openai.APIConnectionError)


def test_a_malformed_answer_fails_the_run_naming_what_is_wrong(server, tmp_path):
    server.replies([Reply(content="total is five")])
    result = run(kr.BaseAutonomousAgent(config=config(server, tmp_path), signature=Sum()).run_autonomous("1 2"))
    assert result["status"] == "failed" and isinstance(result["error"], kr.LLMError)
    assert "not the JSON object Sum asks for" in str(result["error"])


def test_bad_llm_configuration_is_refused_at_construction(tmp_path):
    with pytest.raises(kr.ConfigError, match="model must be"):
        kr.BaseAutonomousAgent(config=kr.AutonomousConfig(llm_provider="ollama"), signature=Answer())
    with pytest.raises(kr.ConfigError, match="llm_provider must be one of"):
        kr.BaseAutonomousAgent(config=kr.AutonomousConfig(llm_provider="mystery", model="m"), signature=Answer())
    with pytest.raises(TypeError, match="signature must be a kr.Signature instance"):
        kr.BaseAutonomousAgent(config=kr.AutonomousConfig(llm_provider="ollama", model="m"), signature=Answer)
    with pytest.raises(NotImplementedError, match="write step"):
        run(kr.BaseAutonomousAgent(config=kr.AutonomousConfig(storage_path=tmp_path)).step({}, None))


def test_ollama_honours_ollama_host(monkeypatch):
    from kaizen_ray.llm.client import resolve_endpoint

    monkeypatch.setenv("OLLAMA_HOST", "10.1.2.3:9999")
    assert resolve_endpoint(kr.AutonomousConfig(llm_provider="ollama", model="m")) == "http://10.1.2.3:9999/v1"
    monkeypatch.delenv("OLLAMA_HOST")
    assert resolve_endpoint(kr.AutonomousConfig(llm_provider="ollama", model="m")) == "http://localhost:11434/v1"


def test_tool_schemas_come_from_type_hints_and_docstrings():
    schema = as_tool(add).schema()["function"]
    assert schema["name"] == "add" and schema["description"] == "Add two integers."
    assert schema["parameters"]["required"] == ["a", "b"]
    assert schema["parameters"]["properties"]["b"] == {"description": "the second", "type": "integer"}


def test_an_interrupt_cuts_a_retry_backoff_short_and_no_further_call_is_made(server, tmp_path):
    server.replies([Reply(status=503)])
    # A 10-minute backoff: only the interrupt can end this run within the test's timeout.
    cfg = config(server, tmp_path).model_copy(update={"llm_retry_backoff_s": 600.0})
    agent = kr.BaseAutonomousAgent(config=cfg, signature=Answer())

    async def main():
        task = asyncio.ensure_future(agent.run_autonomous("flaky server"))
        await asyncio.to_thread(server.wait_requests, 1, 30)
        agent.interrupt_manager.request_interrupt("programmatic", "graceful", "stop retrying")
        return await asyncio.wait_for(task, 60)

    result = run(main())
    assert (result["status"], result["interrupt_reason"].message) == ("interrupted", "stop retrying")
    assert len(server.requests) == 1 and result["usage"]["calls"] == 0
