"""The public agent: the core's cycle-loop agent, plus the LLM cycle of Kaizen's agents.

``kr.BaseAutonomousAgent`` is this class. Subclass it and write ``step`` (any
agent), or give it a signature and tools and no subclass (an LLM agent):

* one cycle is one chat-completion call, plus the tool calls the model asks
  for, run in the same cycle (PRE_TOOL hooks first; if an IMMEDIATE interrupt
  is pending after them, the tool does not run); their results go back to the
  model in the next cycle;
* the run is done when the model answers without tool calls; that answer,
  parsed by the signature, is the result's ``output`` dict;
* the conversation is the state: checkpoints hold it and a resumed agent
  continues it; the result gains ``usage`` (prompt and completion tokens, calls);
* each call is charged from its reported usage and the config's pricing; with
  a budget, it first reserves its worst case, so a budget is never overshot;
* GRACEFUL lets the call in flight finish (its cycle commits, its tools run);
  IMMEDIATE cancels the step, which closes the HTTP request at once.

A subclass that writes its own ``step`` calls the model the one documented
way: ``completion = await self.call_model(ctx, messages, tools=...)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from kaizen_ray.core.agent import BaseAutonomousAgent as _CoreAgent
from kaizen_ray.core.config import AutonomousConfig
from kaizen_ray.core.context import StepContext, StepResult
from kaizen_ray.core.hooks import HookContext, HookEvent
from kaizen_ray.core.interrupts import InterruptManager, InterruptMode
from kaizen_ray.llm.client import CallInterrupted, Completion, LLMClient
from kaizen_ray.llm.pricing import call_cost, pricing_for, worst_case_cost
from kaizen_ray.llm.signature import Signature
from kaizen_ray.llm.tools import Tool, ToolCallError, as_tool

logger = logging.getLogger("kaizen_ray.llm")

__all__ = ["BaseAutonomousAgent"]


class BaseAutonomousAgent(_CoreAgent):
    """An autonomous agent: write ``step``, or give a ``signature`` (and ``tools``) for an LLM agent.

    >>> import kaizen_ray as kr
    >>> class Summary(kr.Signature):
    ...     '''Summarise the text in one sentence.'''
    ...     text: str = kr.InputField(desc="The text")
    ...     summary: str = kr.OutputField(desc="One sentence")
    >>> agent = kr.BaseAutonomousAgent(
    ...     config=kr.AutonomousConfig(llm_provider="ollama", model="llama3.2:1b"), signature=Summary())
    >>> agent.initial_state("Ray runs actors.")["messages"][1]
    {'role': 'user', 'content': 'Ray runs actors.'}
    """

    def __init__(
        self,
        config: AutonomousConfig | dict[str, Any] | None = None,
        signature: Signature | None = None,
        *,
        name: str | None = None,
        interrupt_manager: InterruptManager | None = None,
        tools: Sequence[Callable[..., Any] | Tool] = (),
    ) -> None:
        super().__init__(config, name=name, interrupt_manager=interrupt_manager)
        if signature is not None and not isinstance(signature, Signature):
            raise TypeError(f"signature must be a kr.Signature instance (e.g. MySignature()), got {signature!r}")
        self.signature = signature
        self.tools: dict[str, Tool] = {}
        for fn in tools:
            tool = as_tool(fn)
            if tool.name in self.tools:
                raise ValueError(f"two tools are named {tool.name!r}; tool names must be unique")
            self.tools[tool.name] = tool
        # A model is wanted when there is something for it to do, or one is configured.
        wants_model = signature is not None or bool(self.tools) or self.config.model is not None
        self.llm: LLMClient | None = LLMClient(self.config) if wants_model else None
        self._pricing = pricing_for(self.config)

    # -- the LLM agent's defaults -----------------------------------------------------

    def _llm_or_raise(self) -> LLMClient:
        if self.llm is None:
            raise NotImplementedError(
                f"{type(self).__name__} has no step: write step(self, state, ctx), or give it a "
                "signature= and a config with llm_provider= and model= to run an LLM agent"
            )
        return self.llm

    def initial_state(self, task: Any) -> Any:
        """An LLM agent's state: the conversation (system prompt, then the task) and its usage."""
        if self.llm is None:
            return super().initial_state(task)
        signature = self.signature or Signature()
        messages = [
            {"role": "system", "content": signature.system_prompt()},
            {"role": "user", "content": signature.user_message(task)},
        ]
        return {"messages": messages, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0}}

    async def step(self, state: Any, ctx: StepContext) -> StepResult:
        """One LLM cycle: one call, then the tool calls it asks for; done when it answers without any."""
        self._llm_or_raise()
        tools = [t.schema() for t in self.tools.values()]
        try:
            completion = await self.call_model(ctx, state["messages"], tools=tools or None)
        except CallInterrupted:
            return StepResult(state)  # nothing was called: the run stops at this boundary
        usage = _add_usage(state["usage"], completion)
        messages = [*state["messages"], completion.message]
        calls = completion.message.get("tool_calls") or []
        if not calls:
            signature = self.signature or Signature()
            output = signature.parse_answer(completion.message.get("content"))
            return StepResult({"messages": messages, "usage": usage}, done=True, output=output)
        for call in calls:
            reply = await self._run_tool(call, ctx, state)
            if reply is None:  # an IMMEDIATE stop after PRE_TOOL: this cycle is not committed
                return StepResult(state)
            messages.append(reply)
        return StepResult({"messages": messages, "usage": usage})

    def result_extras(self, state: Any) -> dict[str, Any]:
        """An LLM agent's result gains ``usage``: prompt and completion tokens, and calls."""
        if isinstance(state, dict) and isinstance(state.get("usage"), dict):
            return {"usage": dict(state["usage"])}
        return {}

    # -- the one way to call the model --------------------------------------------------

    async def call_model(
        self, ctx: StepContext, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Completion:
        """Call the model once: reserve the worst case (with a budget), call, charge what was used.

        Raises :class:`~kaizen_ray.llm.client.CallInterrupted` if a reservation
        is refused or an interrupt cuts a retry's backoff (no call was made),
        ``LLMError`` when the call fails for good.
        """
        llm = self._llm_or_raise()
        worst = 0.0
        if self._pricing.input_per_million or self._pricing.output_per_million:
            prompt_bytes = len(json.dumps({"messages": messages, "tools": tools}, default=str).encode())
            worst = worst_case_cost(self._pricing, prompt_bytes, self.config.max_tokens)
            if not await ctx.reserve(worst):
                raise CallInterrupted(f"{llm.label}: the budget refused a reservation of {worst:g} for the next call")
        completion = await llm.complete(messages, tools, manager=self.interrupt_manager)
        ctx.charge(call_cost(self._pricing, completion.prompt_tokens, completion.completion_tokens))
        return completion

    # -- tools ---------------------------------------------------------------------------

    async def _run_tool(self, call: dict[str, Any], ctx: StepContext, state: Any) -> dict[str, Any] | None:
        function = call.get("function") or {}
        name, raw = function.get("name", ""), function.get("arguments")
        tool = self.tools.get(name)
        try:
            arguments = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
        except json.JSONDecodeError:
            arguments = raw
        data: dict[str, Any] = {"tool": name, "arguments": arguments, "tool_call_id": call.get("id")}
        await self._hook(HookEvent.PRE_TOOL, data, ctx, state)
        if self.interrupt_manager.mode is InterruptMode.IMMEDIATE:
            logger.info("agent %s: tool %s not run: an IMMEDIATE interrupt is pending", self.name, name)
            return None
        if tool is None:
            content = f"error: there is no tool named {name!r}; the tools are {sorted(self.tools)}"
        else:
            try:
                content = _tool_text(await tool.call(raw))
            except ToolCallError as exc:
                content = f"error: {exc}"
            except Exception as exc:  # noqa: BLE001 - a failing tool is news for the model, not a crashed run
                logger.warning("agent %s: tool %s raised %r", self.name, name, exc, exc_info=exc)
                content = f"error: {name} raised {type(exc).__name__}: {exc}"
        await self._hook(HookEvent.POST_TOOL, {**data, "result": content}, ctx, state)
        return {"role": "tool", "tool_call_id": call.get("id"), "content": content}

    async def _hook(self, event: HookEvent, data: dict[str, Any], ctx: StepContext, state: Any) -> None:
        if self.hooks.hooks_for(event):
            await self.hooks.trigger(HookContext(event, self, data, cycle=ctx.cycle, state=state))


def _add_usage(usage: dict[str, int], completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": usage["prompt_tokens"] + completion.prompt_tokens,
        "completion_tokens": usage["completion_tokens"] + completion.completion_tokens,
        "calls": usage["calls"] + 1,
    }


def _tool_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
