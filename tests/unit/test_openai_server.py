"""The loopback OpenAI server, driven by the real ``openai`` client over real sockets.

Each test runs its own event loop (``asyncio.run``); the server's blocking
waits are called through ``asyncio.to_thread`` so the client keeps running.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest

import openai  # noqa: E402 - in the test extra: a missing package must fail, not skip

from kaizen_ray.core.errors import ConfigError
from tests._support.openai_server import OpenAIServer, Recorded, Reply

USER = [{"role": "user", "content": "hello"}]


def _client(server: OpenAIServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


def _run(coro_fn, server: OpenAIServer):
    """Run ``coro_fn(client)`` with a fresh client that is closed afterwards."""

    async def main():
        client = _client(server)
        try:
            return await coro_fn(client)
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.fixture
def server():
    with OpenAIServer() as s:
        yield s


def test_plain_answer_with_usage_and_the_api_key_recorded(server):
    server.reply(Reply(content="hi there", prompt_tokens=7, completion_tokens=3))
    answer = _run(lambda c: c.chat.completions.create(model="m-1", messages=USER), server)
    assert answer.choices[0].message.content == "hi there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == "m-1"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (7, 3, 10)
    [rec] = server.requests
    assert rec.outcome == "answered" and rec.status == 200
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.body["messages"] == USER and rec.model == "m-1"


def test_a_tool_call_then_an_answer(server):
    server.replies([Reply(tool_calls=[("add", {"a": 1, "b": 2}), ("echo", "{not json")]), Reply(content="3")])

    async def two_cycles(client):
        first = await client.chat.completions.create(model="m", messages=USER)
        second = await client.chat.completions.create(model="m", messages=USER)
        return first, second

    first, second = _run(two_cycles, server)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.id for c in calls] == ["call_1", "call_2"]
    assert calls[0].function.name == "add" and json.loads(calls[0].function.arguments) == {"a": 1, "b": 2}
    assert calls[1].function.arguments == "{not json"  # malformed arguments pass through untouched
    assert second.choices[0].message.content == "3" and second.choices[0].finish_reason == "stop"
    assert [r.outcome for r in server.requests] == ["answered", "answered"]
    assert server.script_left == 0


def test_a_streamed_answer_with_content_a_tool_call_and_usage(server):
    server.reply(Reply(content="streamed words", tool_calls=[("look_up", {"q": "ray actors"})],
                       prompt_tokens=11, completion_tokens=4))

    async def consume(client):
        stream = await client.chat.completions.create(
            model="m", messages=USER, stream=True, stream_options={"include_usage": True})
        return [chunk async for chunk in stream]

    chunks = _run(consume, server)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    assert len(content) > 1 and "".join(content) == "streamed words"
    deltas = [tc for c in with_choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas if d.function.name] == ["look_up"]
    assert deltas[0].id == "call_1"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"q": "ray actors"}
    assert with_choices[-1].choices[0].finish_reason == "tool_calls"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage.total_tokens == 15
    [rec] = server.requests
    assert rec.stream and rec.outcome == "answered"


def test_a_stream_without_include_usage_sends_no_usage_chunk(server):
    server.reply(Reply(content="x"))

    async def consume(client):
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        return [chunk async for chunk in stream]

    chunks = _run(consume, server)
    assert all(c.choices for c in chunks)


def test_a_held_reply_waits_for_its_event(server):
    release = threading.Event()
    server.reply(Reply(content="late", hold=release))

    async def held(client):
        task = asyncio.create_task(client.chat.completions.create(model="m", messages=USER))
        [rec] = await asyncio.to_thread(server.wait_requests, 1)
        pending_while_held = rec.outcome
        release.set()
        return pending_while_held, await task

    outcome_while_held, answer = _run(held, server)
    assert outcome_while_held == "pending"
    assert answer.choices[0].message.content == "late"
    assert server.requests[0].outcome == "answered"


def test_a_cancelled_client_task_is_recorded_as_abandoned(server):
    never = threading.Event()
    server.replies([Reply(content="never sent", hold=never), Reply(content="next")])

    async def cancel_then_call_again(client):
        task = asyncio.create_task(client.chat.completions.create(model="m", messages=USER))
        await asyncio.to_thread(server.wait_requests, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(server.wait_abandoned, 1)
        # the same client goes on working: the next call is answered
        return await client.chat.completions.create(model="m", messages=USER)

    answer = _run(cancel_then_call_again, server)
    assert answer.choices[0].message.content == "next"
    assert [r.outcome for r in server.requests] == ["abandoned", "answered"]
    assert not never.is_set()


def test_a_stream_closed_while_paused_is_recorded_as_abandoned(server):
    pause = threading.Event()
    server.reply(Reply(content="a long streamed answer", stream_hold=pause))

    async def read_two_then_close(client):
        stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
        first = [await stream.__anext__(), await stream.__anext__()]
        await stream.close()
        await asyncio.to_thread(server.wait_abandoned, 1)
        return first

    first = _run(read_two_then_close, server)
    assert first[0].choices[0].delta.role == "assistant" and first[1].choices[0].delta.content
    assert server.requests[0].outcome == "abandoned"


@pytest.mark.parametrize(("status", "error"), [
    (429, openai.RateLimitError), (500, openai.InternalServerError), (400, openai.BadRequestError)])
def test_scripted_error_statuses_surface_as_the_clients_errors(server, status, error):
    server.reply(Reply(status=status, error_message=f"scripted failure {status}"))
    with pytest.raises(error) as info:
        _run(lambda c: c.chat.completions.create(model="m", messages=USER), server)
    assert info.value.status_code == status and f"scripted failure {status}" in str(info.value)
    assert server.requests[0].outcome == "error" and server.requests[0].status == status


def test_a_scripted_error_on_a_streamed_request_is_raised_by_create(server):
    server.reply(Reply(status=429))
    with pytest.raises(openai.RateLimitError):
        _run(lambda c: c.chat.completions.create(model="m", messages=USER, stream=True), server)


def test_a_reset_surfaces_as_a_connection_error(server):
    server.replies([Reply(reset=True), Reply(content="after the reset")])

    async def reset_then_again(client):
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model="m", messages=USER)
        return await client.chat.completions.create(model="m", messages=USER)

    answer = _run(reset_then_again, server)
    assert answer.choices[0].message.content == "after the reset"
    assert [r.outcome for r in server.requests] == ["reset", "answered"]


def test_a_reset_is_a_tcp_reset_not_a_clean_close(server):
    server.reply(Reply(reset=True))
    body = json.dumps({"model": "m", "messages": USER}).encode()
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + body)
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)  # a clean close would return b"" instead
    server.wait_for(lambda reqs: reqs[0].outcome == "reset", what="the reset recorded")


def test_an_empty_script_answers_500_naming_it(server):
    with pytest.raises(openai.InternalServerError, match="no scripted reply"):
        _run(lambda c: c.chat.completions.create(model="m", messages=USER), server)
    [rec] = server.requests
    assert rec.outcome == "error" and rec.status == 500 and rec.reply is None


def test_the_model_list(server):
    models = _run(lambda c: c.models.list(), server)
    assert [m.id for m in models.data] == ["test-model"]
    assert server.requests == []  # only chat completions are recorded


def test_waiting_too_long_names_what_was_awaited(server):
    with pytest.raises(TimeoutError, match=r"2 abandoned request\(s\); requests seen: none"):
        server.wait_abandoned(2, timeout=0.05)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"tool_calls": [("add",)]}, "Reply.tool_calls"),
    ({"tool_calls": [("add", 3)]}, "Reply.tool_calls"),
    ({"status": 302}, "Reply.status"),
    ({"prompt_tokens": -1}, "Reply.prompt_tokens"),
    ({"hold": True}, "Reply.hold"),
    ({"delay_s": -1}, "Reply.delay_s"),
    ({"content": 5}, "Reply.content"),
])
def test_a_bad_reply_is_refused_naming_the_field_and_value(kwargs, field):
    with pytest.raises(ConfigError) as info:
        Reply(**kwargs)
    assert info.value.field == field and repr(info.value.value) in str(info.value)


@pytest.mark.parametrize("models", ["gpt-x", ["ok", ""], [3]])
def test_bad_model_names_are_refused(models):
    with pytest.raises(ConfigError, match="models must be an iterable of non-empty model names"):
        OpenAIServer(models=models)


def test_only_replies_go_into_the_script(server):
    with pytest.raises(ConfigError, match="must be a Reply, got 'hi'"):
        server.replies(["hi"])


def _server_threads(port: int) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.endswith(f":{port}")]


def test_stop_ends_every_thread_and_socket_even_with_open_connections():
    release = threading.Event()
    server = OpenAIServer().start()
    port = server.port
    server.replies([Reply(content="kept alive"), Reply(content="held", hold=release)])

    async def leave_connections_open():
        idle, busy = _client(server), _client(server)
        await idle.chat.completions.create(model="m", messages=USER)  # its connection stays in the pool
        task = asyncio.create_task(busy.chat.completions.create(model="m", messages=USER))
        await asyncio.to_thread(server.wait_requests, 2)
        assert len(_server_threads(port)) >= 3  # the serving thread and one per connection
        await asyncio.to_thread(server.stop)  # while one connection idles and one is held
        with pytest.raises(openai.APIConnectionError):
            await task
        await idle.close()
        await busy.close()

    asyncio.run(leave_connections_open())
    assert _server_threads(port) == []
    assert [r.outcome for r in server.requests] == ["answered", "error"]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_recorded_helpers():
    rec = Recorded(index=0, body=None, headers={})
    assert (rec.stream, rec.model, rec.outcome) == (False, None, "pending")
