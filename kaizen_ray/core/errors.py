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

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field} must be {expected}, got {value!r}")

    def __reduce__(self):  # keep the attributes across pickling (Ray)
        return (type(self), (self.field, self.value, self.expected))


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
