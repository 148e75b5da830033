"""The model client: the ``openai`` package's ``AsyncOpenAI`` against Ollama, OpenAI or any compatible server.

One call is one chat completion, not streamed, whose reported ``usage`` is
read. Cancelling the awaiting task (an IMMEDIATE interrupt cancels the step)
closes the HTTP request at once: the server sees the client go.

Transient failures (no connection, a reset, 429, 5xx) are retried up to
``llm_max_retries`` times with a doubling backoff from ``llm_retry_backoff_s``;
an interrupt accepted during a backoff cuts it short (:class:`CallInterrupted`).
Anything else (a 4xx, an unknown model, a malformed reply) is an
:class:`~kaizen_ray.core.errors.LLMError` naming provider and model, the
cause chained.

The API key is read from the environment (``api_key_env``) at call time and
kept only inside the live client object: never in a checkpoint, a log line
or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from dataclasses import dataclass
from typing import Any

from kaizen_ray.core.config import AutonomousConfig
from kaizen_ray.core.errors import ConfigError, LLMError
from kaizen_ray.core.interrupts import InterruptManager

logger = logging.getLogger("kaizen_ray.llm")

__all__ = ["CallInterrupted", "Completion", "LLMClient", "PROVIDERS", "resolve_endpoint"]

PROVIDERS = ("ollama", "openai")
_OLLAMA_DEFAULT = "http://localhost:11434"


class CallInterrupted(Exception):
    """An interrupt came while the client waited to retry: no call was made."""


@dataclass(frozen=True)
class Completion:
    """One model reply: the assistant message (API shape), its usage, and why it stopped."""

    message: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


def resolve_endpoint(config: AutonomousConfig) -> str | None:
    """The base URL for ``config``: its ``base_url``, else the provider's default (None: the OpenAI API).

    >>> resolve_endpoint(AutonomousConfig(llm_provider="ollama", model="m"))  # with OLLAMA_HOST unset  # doctest: +SKIP
    'http://localhost:11434/v1'
    >>> resolve_endpoint(AutonomousConfig(llm_provider="vllm", model="m", base_url="http://gpu:8000/v1"))
    'http://gpu:8000/v1'
    """
    provider = config.llm_provider or "ollama"
    if config.base_url:
        return config.base_url
    if provider == "ollama":
        host = os.environ.get("OLLAMA_HOST") or _OLLAMA_DEFAULT
        if "://" not in host:
            host = f"http://{host}"
        return host.rstrip("/") + "/v1"
    if provider == "openai":
        return None
    raise ConfigError(
        "llm_provider", provider, f"one of {list(PROVIDERS)}, or any OpenAI-compatible server named with base_url="
    )


def check_llm_config(config: AutonomousConfig) -> None:
    """Refuse, at construction, a config an LLM agent cannot call a model with.

    >>> check_llm_config(AutonomousConfig(llm_provider="ollama"))
    Traceback (most recent call last):
    kaizen_ray.core.errors.ConfigError: model must be the model's name (e.g. "llama3.2:1b"), got None
    """
    if not config.model:
        raise ConfigError("model", config.model, 'the model\'s name (e.g. "llama3.2:1b")')
    resolve_endpoint(config)


def _transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.APIConnectionError, openai.RateLimitError)):  # APITimeoutError is a connection error
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class LLMClient:
    """Calls the model of one agent's config, with retries and usage.

    >>> client = LLMClient(AutonomousConfig(llm_provider="ollama", model="llama3.2:1b"))
    >>> client.label
    'ollama/llama3.2:1b'
    """

    def __init__(self, config: AutonomousConfig) -> None:
        check_llm_config(config)
        self.config = config
        self.provider = config.llm_provider or "ollama"
        self.base_url = resolve_endpoint(config)
        self._client: Any = None
        # What the client was made for: its key, and the event loop its connection pool belongs to.
        self._client_key: tuple[str, Any] | None = None

    @property
    def label(self) -> str:
        """``provider/model``, as errors and logs name the model."""
        return f"{self.provider}/{self.config.model}"

    def __repr__(self) -> str:
        return f"LLMClient({self.label}, base_url={self.base_url!r})"

    def __getstate__(self) -> dict[str, Any]:
        # The live client holds the key and sockets: never shipped, rebuilt on use.
        return {"config": self.config, "provider": self.provider, "base_url": self.base_url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client, self._client_key = None, None

    def _api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        if self.provider != "openai" or self.config.base_url:
            return "not-needed"  # local servers ignore it, but the client wants one
        raise LLMError(f"{self.label}: no API key: set the environment variable {self.config.api_key_env}")

    def _live(self) -> Any:
        try:
            from openai import AsyncOpenAI
        except ImportError as exc:  # the extra is not installed
            raise LLMError("LLM agents need the openai package: pip install 'kaizen_ray[llm]'") from exc
        key = self._api_key()
        loop = asyncio.get_running_loop()
        made_for = self._client_key
        # A new loop (each asyncio.run: a run, then its resume) needs a new client: the old one's
        # connections belong to a loop that is closed, and every call on them fails.
        if self._client is None or made_for is None or made_for[0] != key or made_for[1]() is not loop:
            self._client = AsyncOpenAI(
                api_key=key, base_url=self.base_url, max_retries=0, timeout=self.config.llm_timeout_s
            )
            self._client_key = (key, weakref.ref(loop))
        return self._client

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        manager: InterruptManager | None = None,
    ) -> Completion:
        """One chat completion, retried on transient failures; an interrupt cuts a backoff short."""
        # OpenAI's API takes max_completion_tokens (its o-series models refuse max_tokens); the
        # OpenAI-compatible servers (Ollama, vLLM, ...) all take max_tokens.
        limit = "max_completion_tokens" if self.provider == "openai" else "max_tokens"
        request: dict[str, Any] = {"model": self.config.model, "messages": messages, limit: self.config.max_tokens}
        if tools:
            request["tools"] = tools
        if self.config.temperature is not None:
            request["temperature"] = self.config.temperature
        backoff = self.config.llm_retry_backoff_s
        for attempt in range(self.config.llm_max_retries + 1):
            try:
                response = await self._live().chat.completions.create(**request)
                return self._completion(response)
            except LLMError:
                raise
            except Exception as exc:
                if not _transient(exc) or attempt == self.config.llm_max_retries:
                    raise LLMError(f"{self.label}: {type(exc).__name__}: {exc}") from exc
                logger.warning("%s: %s (attempt %d); retrying in %.2fs", self.label, type(exc).__name__, attempt + 1, backoff)
                await self._backoff(backoff, manager)
                backoff *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _backoff(self, seconds: float, manager: InterruptManager | None) -> None:
        if manager is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(manager.wait_async(), seconds)
        except TimeoutError:
            return
        raise CallInterrupted(f"{self.label}: interrupted while waiting to retry")

    def _completion(self, response: Any) -> Completion:
        try:
            choice = response.choices[0]
            message = choice.message
            usage = response.usage
        except (AttributeError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.label}: malformed reply, no choices/message: {str(response)[:200]!r}") from exc
        if usage is None:
            raise LLMError(f"{self.label}: the reply reports no usage, so its cost cannot be charged")
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
                for call in message.tool_calls
            ]
        return Completion(out, int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0), choice.finish_reason)
