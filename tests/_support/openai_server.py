"""A loopback HTTP server that speaks the OpenAI chat-completions API, for tests.

The real ``openai`` client talks to it over real sockets; the test scripts the
replies and reads back what happened. Standard library only, served from
background threads, so sync tests, async tests and Ray actors on this machine
can all use it (an actor only needs ``server.base_url``).

>>> from openai import OpenAI
>>> with OpenAIServer() as server:
...     server.reply(Reply(content="hi", prompt_tokens=3, completion_tokens=1))
...     client = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
...     answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hello"}])
...     client.close()
>>> answer.choices[0].message.content, answer.usage.total_tokens, server.requests[0].outcome
('hi', 4, 'answered')
"""

from __future__ import annotations

import collections
import json
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from kaizen_ray.core.errors import ConfigError

from .openai_wire import Recorded, Reply, completion_body, error_body, stream_chunks

__all__ = ["OpenAIServer", "Recorded", "Reply"]

log = logging.getLogger("kaizen_ray.testing.openai_server")

# A held response looks this often for the client having gone (EOF on its socket).
_POLL_S = 0.005


class OpenAIServer:
    """A context manager serving the OpenAI chat-completions API on ``127.0.0.1`` (ephemeral port).

    Replies are consumed in order, one per request; with none left the server
    answers 500 "no scripted reply", so a test sees its mistake instead of a
    hang. ``GET /v1/models`` lists ``models``. Waiting helpers block on a
    condition (bounded; a ``TimeoutError`` names what was awaited); from async
    code call them through ``asyncio.to_thread``.

    >>> with OpenAIServer() as server:
    ...     server.base_url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, *, models: Iterable[str] = ("test-model",)) -> None:
        names = [models] if isinstance(models, str) else list(models)
        if isinstance(models, str) or not all(isinstance(m, str) and m for m in names):
            raise ConfigError("models", models, "an iterable of non-empty model names (str)")
        self.models = names
        self._cond = threading.Condition()
        self._script: collections.deque[Reply] = collections.deque()
        self._records: list[Recorded] = []
        self._next_call_id = 1
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> Self:
        """Listen on an ephemeral port and serve from a background thread; returns the server.

        >>> server = OpenAIServer().start()
        >>> server.stop()
        """
        if self._httpd is not None:
            raise RuntimeError(f"OpenAIServer already serving at {self.base_url}")
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"openai-server:{httpd.server_port}", daemon=True)
        self._thread.start()
        log.debug("openai loopback server at %s", self.base_url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: held responses are dropped, open connections closed, every thread joined.

        Raises ``RuntimeError`` naming the threads still alive after ``timeout``.

        >>> server = OpenAIServer().start()
        >>> server.stop(); server.stop()  # a second stop does nothing
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # held responses see it within one poll
        httpd.shutdown()
        httpd.close_connections()  # wakes handlers waiting on idle keep-alive connections
        httpd.server_close()
        deadline = time.monotonic() + timeout
        for t in [thread, *httpd.handler_threads()]:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [thread, *httpd.handler_threads()] if t.is_alive()]
        self._httpd = self._thread = None
        if alive:
            raise RuntimeError(f"OpenAIServer.stop: threads still alive after {timeout}s: {alive}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``, for ``AsyncOpenAI(base_url=...)``.

        >>> with OpenAIServer() as server:
        ...     server.base_url.endswith("/v1")
        True
        """
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        """The port it listens on (chosen by the system at start).

        >>> with OpenAIServer() as server:
        ...     server.port > 0
        True
        """
        if self._httpd is None:
            raise RuntimeError("OpenAIServer is not started: use `with OpenAIServer() as server` or .start()")
        return self._httpd.server_port

    # --- the script ------------------------------------------------------------
    def reply(self, reply: Reply) -> None:
        """Append one reply to the script.

        >>> OpenAIServer().reply(Reply(content="ok"))
        """
        self.replies([reply])

    def replies(self, replies: Iterable[Reply]) -> None:
        """Append replies to the script, answered in this order.

        >>> OpenAIServer().replies([Reply(content="a"), Reply(content="b")])
        """
        replies = list(replies)
        for r in replies:
            if not isinstance(r, Reply):
                raise ConfigError("reply", r, "a Reply")
        with self._cond:
            self._script.extend(replies)

    @property
    def script_left(self) -> int:
        """How many scripted replies are not yet consumed.

        >>> OpenAIServer().script_left
        0
        """
        with self._cond:
            return len(self._script)

    # --- the record ------------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        """The chat-completion requests seen so far, in arrival order (a copy of the list).

        >>> OpenAIServer().requests
        []
        """
        with self._cond:
            return list(self._records)

    def wait_for(self, predicate: Callable[[list[Recorded]], Any], timeout: float = 10.0, *,
                 what: str = "the predicate") -> list[Recorded]:
        """Block until ``predicate(requests)`` is true; returns the requests then.

        >>> with OpenAIServer() as server:
        ...     server.wait_for(lambda reqs: len(reqs) == 0, what="nothing")
        []
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError("timeout", timeout, "a number of seconds > 0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._records)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(f"#{r.index} {r.outcome}" for r in self._records) or "none"
                    raise TimeoutError(f"waited {timeout}s for {what}; requests seen: {seen}")
                self._cond.wait(remaining)
            return list(self._records)

    def wait_requests(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        """Block until at least ``n`` chat-completion requests have arrived.

        >>> with OpenAIServer() as server:
        ...     len(server.wait_requests(0))
        0
        """
        return self.wait_for(lambda reqs: len(reqs) >= n, timeout, what=f"{n} request(s)")

    def wait_abandoned(self, n: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Block until at least ``n`` requests were abandoned by their client.

        >>> with OpenAIServer() as server:
        ...     server.wait_abandoned(0)
        []
        """
        return self.wait_for(lambda reqs: sum(r.outcome == "abandoned" for r in reqs) >= n, timeout,
                             what=f"{n} abandoned request(s)")

    # --- called from handler threads ---------------------------------------------
    def _take(self, body: dict | None, headers: dict[str, str]) -> tuple[Recorded, Reply | None]:
        with self._cond:
            reply = self._script.popleft() if body is not None and self._script else None
            rec = Recorded(index=len(self._records), body=body, headers=headers, reply=reply)
            self._records.append(rec)
            self._cond.notify_all()
            return rec, reply

    def _finish(self, rec: Recorded, outcome: str, status: int | None = None) -> None:
        with self._cond:
            rec.outcome, rec.status = outcome, status
            self._cond.notify_all()

    def _call_ids(self, n: int) -> list[str]:
        with self._cond:
            first, self._next_call_id = self._next_call_id, self._next_call_id + n
        return [f"call_{i}" for i in range(first, first + n)]


class _HTTPServer(ThreadingHTTPServer):
    """Tracks each connection's thread and socket, so stop() can close and join them all."""

    daemon_threads = True  # never keeps the interpreter alive; stop() joins them itself
    owner: OpenAIServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._live: dict[threading.Thread, socket.socket] = {}
        self._live_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._serve_connection, args=(request, client_address), daemon=True,
                             name=f"openai-server-conn:{self.server_port}")
        with self._live_lock:
            self._live[t] = request
        t.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(threading.current_thread(), None)

    def handler_threads(self) -> list[threading.Thread]:
        with self._live_lock:
            return list(self._live)

    def close_connections(self) -> None:
        with self._live_lock:
            sockets = list(self._live.values())
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this inside its except block; the default prints the traceback to stderr
        log.debug("openai loopback server: connection from %s failed", client_address, exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as the real API
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # the base class's parameter name
        log.debug("openai loopback server: " + format, *args)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "kaizen-test"} for m in self.server.owner.models]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, error_body(404, f"no route GET {self.path}"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, error_body(404, f"no route POST {self.path}"))
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        owner = self.server.owner
        rec, reply = owner._take(body if isinstance(body, dict) else None,
                                 {k.lower(): v for k, v in self.headers.items()})
        try:
            if rec.body is None:
                self._send_json(400, error_body(400, f"the body is not a JSON object: {raw[:200]!r}"))
                owner._finish(rec, "error", 400)
            elif reply is None:
                log.warning("openai loopback server: no scripted reply for request #%d", rec.index)
                self._send_json(500, error_body(500, f"no scripted reply for request #{rec.index} (the script is empty)"))
                owner._finish(rec, "error", 500)
            else:
                self._answer(rec, reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            owner._finish(rec, "abandoned")

    def _answer(self, rec: Recorded, reply: Reply) -> None:
        owner = self.server.owner
        if not self._wait(rec, reply.hold, reply.delay_s):
            return
        if reply.reset:
            # SO_LINGER 0 makes close() send RST: the client sees a reset, not a clean end of stream.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            owner._finish(rec, "reset")
        elif reply.status != 200:
            self._send_json(reply.status, error_body(reply.status, reply.error_message or f"scripted {reply.status}"))
            owner._finish(rec, "error", reply.status)
        elif rec.stream:
            if self._stream(rec, reply):
                owner._finish(rec, "answered", 200)
        else:
            self._send_json(200, completion_body(rec, reply, owner._call_ids(len(reply.tool_calls))))
            owner._finish(rec, "answered", 200)

    def _wait(self, rec: Recorded, event: threading.Event | None, delay_s: float) -> bool:
        """Hold the response until ``event`` is set and ``delay_s`` passed; False if the client or server went."""
        deadline = time.monotonic() + delay_s
        while (event is not None and not event.is_set()) or time.monotonic() < deadline:
            if self.server.owner._stopping.is_set():
                log.warning("openai loopback server stopped while holding request #%d", rec.index)
                self.close_connection = True
                self.server.owner._finish(rec, "error")
                return False
            if self._client_gone():
                self.close_connection = True
                self.server.owner._finish(rec, "abandoned")
                return False
            if event is not None and not event.is_set():
                event.wait(_POLL_S)
            else:
                time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        return True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _stream(self, rec: Recorded, reply: Reply) -> bool:
        """Send the answer as server-sent events in a chunked body; False if the client went mid-stream."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = stream_chunks(rec, reply, self.server.owner._call_ids(len(reply.tool_calls)))
        for i, event in enumerate(events):
            if i == 2 and not self._wait(rec, reply.stream_hold, 0.0):
                return False
            self._write_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        return True

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

