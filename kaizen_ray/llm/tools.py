"""Tools: plain functions (sync or async) an LLM agent's model may call.

The JSON schema the model sees comes from the function's type hints (through a
pydantic model of its parameters) and its docstring: the first paragraph is
the tool's description, and an ``Args:`` section (Google style) describes
each parameter. Calls are validated against the same model, so a call with
bad arguments becomes an error message to the model, never a crashed run.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from kaizen_ray.core._threads import DaemonCall

__all__ = ["Tool", "ToolCallError", "as_tool"]

_ARG_LINE = re.compile(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


class ToolCallError(Exception):
    """A tool call the model made that cannot run: unknown tool or bad arguments. Goes back to the model."""


def _describe(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n", 1)[0].strip()
    params: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if line.strip() in {"Args:", "Arguments:", "Parameters:"}:
            in_args = True
            continue
        if in_args:
            if line.strip() and not line.startswith(" "):
                break
            match = _ARG_LINE.match(line)
            if match:
                params[match.group(1)] = match.group(2).strip()
    return summary, params


@dataclass(frozen=True)
class Tool:
    """One callable tool: its name, description, argument model and function.

    >>> def add(a: int, b: int = 1) -> int:
    ...     '''Add two numbers.
    ...
    ...     Args:
    ...         a: the first
    ...         b: the second
    ...     '''
    ...     return a + b
    >>> tool = as_tool(add)
    >>> tool.schema()["function"]["parameters"]["properties"]["a"]
    {'description': 'the first', 'type': 'integer'}
    >>> import asyncio; asyncio.run(tool.call('{"a": 2}'))
    3
    """

    name: str
    description: str
    arguments: type[BaseModel]
    fn: Callable[..., Any]

    def schema(self) -> dict[str, Any]:
        """The tool as the chat-completions API's ``tools`` entry."""
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        for prop in parameters.get("properties", {}).values():
            prop.pop("title", None)
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": parameters}}

    def parse(self, arguments: str | dict[str, Any] | None) -> dict[str, Any]:
        """The call's arguments, validated; ToolCallError saying what is wrong otherwise."""
        if arguments is None or arguments == "":
            raw: Any = {}
        elif isinstance(arguments, str):
            try:
                raw = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ToolCallError(f"arguments of {self.name} are not valid JSON ({exc}): {arguments[:200]!r}") from exc
        else:
            raw = arguments
        if not isinstance(raw, dict):
            raise ToolCallError(f"arguments of {self.name} must be a JSON object, got {type(raw).__name__}")
        try:
            model = self.arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(arguments)'}: {e['msg']}" for e in exc.errors())
            raise ToolCallError(f"bad arguments for {self.name}: {problems}") from exc
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def call(self, arguments: str | dict[str, Any] | None) -> Any:
        """Validate ``arguments`` and run the tool (a sync one in a daemon thread of its own); its return value.

        Not the loop's default executor: after an IMMEDIATE stop the run
        returns without waiting for a sync tool, and ``asyncio.run`` would
        then wait for that executor's thread, however long the tool hangs.
        """
        kwargs = self.parse(arguments)
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        call = functools.partial(contextvars.copy_context().run, functools.partial(self.fn, **kwargs))
        return await DaemonCall(call, name=f"kaizen-tool-{self.name}").result()


def as_tool(fn: Callable[..., Any] | Tool) -> Tool:
    """A :class:`Tool` from a plain function (sync or async); its name is the function's.

    >>> as_tool(lambda: 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: a tool must be a named function ...
    """
    if isinstance(fn, Tool):
        return fn
    name = getattr(fn, "__name__", "")
    if not callable(fn) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", name):
        raise TypeError(f"a tool must be a named function (a def, sync or async), got {fn!r}")
    summary, described = _describe(fn)
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args/**kwargs cannot be described to a model; name every parameter")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, Field(default, description=described.get(param.name)))
    model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return Tool(name=name, description=summary or name, arguments=model, fn=fn)
