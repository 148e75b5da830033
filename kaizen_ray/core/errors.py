"""The error tree: one root, each class saying what happened.

Every error kaizen_ray raises on purpose is a :class:`KaizenError`, so
``except kr.KaizenError`` catches them all; each also keeps the built-in base a
caller would expect (``ConfigError`` is a ``ValueError``, ``AgentGoneError`` a
``RuntimeError``), so code written against the built-ins keeps working.
Checkpoint errors live with checkpoints (:mod:`kaizen_ray.core.checkpoint`),
and ``kr.InterruptedError`` with interrupts; both derive from
:class:`KaizenError`.

>>> issubclass(ConfigError, KaizenError) and issubclass(ConfigError, ValueError)
True
"""

from __future__ import annotations

__all__ = ["KaizenError", "ConfigError", "AgentGoneError", "LLMError"]


class KaizenError(Exception):
    """The root of every error kaizen_ray raises on purpose.

    >>> isinstance(AgentGoneError("a1", "its actor died"), KaizenError)
    True
    """


class ConfigError(KaizenError, ValueError):
    """A configuration value is wrong: the message names the field, the value and what was expected.

    >>> str(ConfigError("max_restarts", -1, "an int >= 0"))
    'max_restarts must be an int >= 0, got -1'
    """

    def __init__(self, field: str, value: object, expected: str, *, message: str | None = None) -> None:
        self.field, self.value, self.expected = field, value, expected
        self._message = message
        super().__init__(message or f"{field} must be {expected}, got {value!r}")

    @classmethod
    def from_validation(cls, model: str, error: Exception) -> ConfigError:
        """One ConfigError from a pydantic ``ValidationError`` of ``model``: every problem, field and value named.

        >>> from pydantic import BaseModel, ValidationError
        >>> class M(BaseModel):
        ...     n: int
        >>> try:
        ...     M(n="x")
        ... except ValidationError as exc:
        ...     print(ConfigError.from_validation("M", exc))
        M.n: Input should be a valid integer, unable to parse string as an integer (got 'x')
        """
        problems = error.errors(include_url=False)  # type: ignore[attr-defined]
        lines = []
        for problem in problems:
            field = ".".join(str(part) for part in problem["loc"]) or "(model)"
            msg = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{model}.{field}: {msg} (got {problem.get('input')!r})")
        first = problems[0] if problems else {"loc": (), "input": None, "msg": str(error)}
        field = ".".join(str(part) for part in first["loc"]) or model
        return cls(field, first.get("input"), first["msg"], message="; ".join(lines))

    def __reduce__(self):  # keep the attributes across pickling (Ray)
        return (_rebuild_config_error, (type(self), self.field, self.value, self.expected, self._message))


def _rebuild_config_error(cls: type, field: str, value: object, expected: str, message: str | None) -> ConfigError:
    return cls(field, value, expected, message=message)


class AgentGoneError(KaizenError, RuntimeError):
    """The agent's (or supervisor's) actor is gone: dead, killed, never started, or never existed.

    ``why`` carries the underlying cause's own text (for example the worker's
    ``ModuleNotFoundError: No module named 'mymod'``); the cause itself is
    chained as ``__cause__`` where there is one.

    >>> str(AgentGoneError("a1", "its actor died"))
    "agent 'a1' is gone: its actor died"
    """

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why
        super().__init__(f"agent {name!r} is gone: {why}")

    def __reduce__(self):
        return (type(self), (self.name, self.why))


class LLMError(KaizenError):
    """A model call failed: the provider, the model and the cause are in the message.

    >>> str(LLMError("ollama/llama3.2:1b: connection refused"))
    'ollama/llama3.2:1b: connection refused'
    """
