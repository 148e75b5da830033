"""The wire side of the loopback OpenAI server: scripted replies, request records, response bodies.

:class:`Reply` is what a test scripts, :class:`Recorded` what the server saw;
the builders turn a reply into the JSON (or server-sent event chunks) the
OpenAI chat-completions API sends. :mod:`tests._support.openai_server` serves them.

>>> body = completion_body(Recorded(index=0, body={"model": "m"}, headers={}), Reply(content="hi"), [])
>>> body["choices"][0]["message"]["content"], body["model"]
('hi', 'm')
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kaizen_ray.core.errors import ConfigError

__all__ = ["Recorded", "Reply", "completion_body", "error_body", "stream_chunks"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error"}

@dataclass(frozen=True)
class Reply:
    """One scripted answer to one ``POST /v1/chat/completions``.

    ``tool_calls`` are ``(name, arguments)`` pairs; a dict is sent as a JSON
    string (as the API does), a str is sent as it is (malformed arguments).
    Their ids are ``call_1``, ``call_2``, ... counted over the server's life.
    ``status`` other than 200 answers an OpenAI-style ``{"error": {...}}``;
    ``reset`` closes the connection without any response. ``hold`` keeps the
    whole response back until the event is set; ``stream_hold`` pauses a
    streamed answer after its first two chunks (role, first piece) until set.
    ``finish_reason`` defaults to ``"tool_calls"`` or ``"stop"``.

    >>> Reply(tool_calls=[("add", {"a": 1})]).finish
    'tool_calls'
    >>> Reply(status=429).status
    429
    """

    content: str | None = None
    tool_calls: tuple[tuple[str, dict | str], ...] = ()
    prompt_tokens: int = 10
    completion_tokens: int = 5
    status: int = 200
    error_message: str | None = None
    hold: threading.Event | None = None
    stream_hold: threading.Event | None = None
    delay_s: float = 0.0
    reset: bool = False
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if self.content is not None and not isinstance(self.content, str):
            raise ConfigError("Reply.content", self.content, "a str or None")
        calls = _check_tool_calls(self.tool_calls)
        object.__setattr__(self, "tool_calls", calls)
        for name in ("prompt_tokens", "completion_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"Reply.{name}", value, "an int >= 0")
        if isinstance(self.status, bool) or not isinstance(self.status, int) or not (
            self.status == 200 or 400 <= self.status <= 599
        ):
            raise ConfigError("Reply.status", self.status, "200 or an error status 400..599")
        for name in ("hold", "stream_hold"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), threading.Event):
                raise ConfigError(f"Reply.{name}", getattr(self, name), "a threading.Event or None")
        if isinstance(self.delay_s, bool) or not isinstance(self.delay_s, (int, float)) or not self.delay_s >= 0:
            raise ConfigError("Reply.delay_s", self.delay_s, "a number of seconds >= 0")

    @property
    def finish(self) -> str:
        """The ``finish_reason`` sent: the scripted one, else ``tool_calls`` or ``stop``.

        >>> Reply(content="x").finish
        'stop'
        """
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


def _check_tool_calls(calls: Any) -> tuple[tuple[str, dict | str], ...]:
    if isinstance(calls, (str, bytes, dict)) or not isinstance(calls, Iterable):
        raise ConfigError("Reply.tool_calls", calls, "a list of (name, arguments) pairs")
    checked = []
    for call in calls:
        if not (isinstance(call, (tuple, list)) and len(call) == 2 and isinstance(call[0], str) and call[0]
                and isinstance(call[1], (dict, str))):
            raise ConfigError("Reply.tool_calls", call, "a (name, arguments) pair: a non-empty str and a dict or str")
        checked.append((call[0], call[1]))
    return tuple(checked)


@dataclass
class Recorded:
    """What the server saw of one chat-completion request, and how it ended.

    ``headers`` has lower-cased names (``headers["authorization"]``). ``outcome``
    is ``"pending"`` while in flight, then ``"answered"`` (sent in full),
    ``"abandoned"`` (the client closed the connection first), ``"reset"``
    (scripted reset) or ``"error"`` (an error status was sent: scripted, no
    scripted reply, bad JSON; or the server stopped while holding it).

    >>> r = Recorded(index=0, body={"model": "m", "stream": True}, headers={})
    >>> r.stream, r.model, r.outcome
    (True, 'm', 'pending')
    """

    index: int
    body: dict | None
    headers: dict[str, str]
    reply: Reply | None = None
    outcome: str = "pending"
    status: int | None = None

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed answer.

        >>> Recorded(index=0, body={}, headers={}).stream
        False
        """
        return bool(self.body and self.body.get("stream"))

    @property
    def model(self) -> str | None:
        """The model the request named.

        >>> Recorded(index=0, body={"model": "m"}, headers={}).model
        'm'
        """
        return self.body.get("model") if self.body else None


def error_body(status: int, message: str) -> dict:
    """An OpenAI-style error body for ``status``.

    >>> error_body(429, "slow down")["error"]["type"]
    'rate_limit_error'
    """
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = "rate_limit_exceeded" if status == 429 else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _usage(reply: Reply) -> dict:
    p, c = reply.prompt_tokens, reply.completion_tokens
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _arguments(args: dict | str) -> str:
    return args if isinstance(args, str) else json.dumps(args)


def completion_body(rec: Recorded, reply: Reply, ids: list[str]) -> dict:
    """The ``chat.completion`` object answering ``rec`` with ``reply``; ``ids`` name its tool calls.

    >>> body = completion_body(Recorded(0, {"model": "m"}, {}), Reply(tool_calls=[("f", {})]), ["call_1"])
    >>> body["choices"][0]["message"]["tool_calls"][0]["id"], body["choices"][0]["finish_reason"]
    ('call_1', 'tool_calls')
    """
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": name, "arguments": _arguments(args)}}
            for i, (name, args) in zip(ids, reply.tool_calls)
        ]
    return {"id": f"chatcmpl-{rec.index}", "object": "chat.completion", "created": int(time.time()),
            "model": rec.model or "unknown", "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish, "logprobs": None}],
            "usage": _usage(reply)}


def _pieces(text: str, n: int = 3) -> list[str]:
    """``text`` in up to ``n`` consecutive pieces, so a client must join the deltas."""
    size = max(1, -(-len(text) // n))
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_chunks(rec: Recorded, reply: Reply, ids: list[str]) -> list[dict]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order (``[DONE]`` not included).

    A role chunk, the content in pieces, each tool call (id and name, then its
    arguments in fragments), the chunk with ``finish_reason``, then the usage
    chunk (``choices: []``) when the request set ``stream_options.include_usage``.

    >>> rec = Recorded(0, {"model": "m", "stream_options": {"include_usage": True}}, {})
    >>> chunks = stream_chunks(rec, Reply(content="abc"), [])
    >>> [c["choices"][0]["delta"].get("content") for c in chunks[:-1]], chunks[-1]["usage"]["total_tokens"]
    (['', 'a', 'b', 'c', None], 15)
    """
    base = {"id": f"chatcmpl-{rec.index}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": rec.model or "unknown", "system_fingerprint": None}

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _pieces(reply.content or "")]
    for index, (call_id, (name, args)) in enumerate(zip(ids, reply.tool_calls)):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        chunks.append(chunk({"tool_calls": [head]}))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": frag}}]})
                   for frag in _pieces(_arguments(args))]
    chunks.append(chunk({}, reply.finish))
    if ((rec.body or {}).get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": _usage(reply)})
    return chunks
