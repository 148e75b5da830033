"""Signatures: what an LLM agent is asked (its inputs) and must answer (its outputs).

A signature is a pydantic model whose class docstring is the instruction and
whose fields are declared with :func:`InputField` / :func:`OutputField`, as
Kaizen (and DSPy before it) writes them. ``MySignature()`` instantiates with
no arguments: the class is the description, an instance only carries it.

The agent turns a signature into its system prompt (:meth:`Signature.system_prompt`),
the task into the first user message (:meth:`Signature.user_message`), and the
model's final answer into the result's ``output`` dict (:meth:`Signature.parse_answer`).
"""

from __future__ import annotations

import inspect
import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from kaizen_ray.core.errors import LLMError

__all__ = ["InputField", "OutputField", "Signature"]

_ROLE = "kaizen_role"


def _field(role: str, desc: str | None, description: str | None, default: Any, **kwargs: Any) -> Any:
    if desc is not None and description is not None and desc != description:
        raise ValueError(f"give the description once: desc={desc!r} and description={description!r} differ")
    text = desc if desc is not None else description
    return Field(default=default, description=text, json_schema_extra={_ROLE: role}, **kwargs)


def InputField(desc: str | None = None, *, description: str | None = None, default: Any = None, **kwargs: Any) -> Any:  # noqa: N802 - Kaizen's name
    """A field the agent is given (part of the task). ``desc=`` or ``description=``.

    >>> class Ask(Signature):
    ...     question: str = InputField(desc="What to answer")
    >>> Ask.input_fields()
    {'question': 'What to answer'}
    """
    return _field("input", desc, description, default, **kwargs)


def OutputField(desc: str | None = None, *, description: str | None = None, default: Any = None, **kwargs: Any) -> Any:  # noqa: N802 - Kaizen's name
    """A field the model must answer. ``desc=`` or ``description=``.

    >>> class Ask(Signature):
    ...     answer: str = OutputField(description="The answer")
    >>> Ask.output_fields()
    {'answer': 'The answer'}
    """
    return _field("output", desc, description, default, **kwargs)


class Signature(BaseModel):
    """The instruction (the class docstring) and the input and output fields of an LLM agent.

    >>> class QA(Signature):
    ...     '''Answer the question in one word.'''
    ...     question: str = InputField(desc="The question")
    ...     answer: str = OutputField(desc="One word")
    >>> sig = QA()
    >>> sig.instruction
    'Answer the question in one word.'
    >>> sig.parse_answer("Paris")
    {'answer': 'Paris'}
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    _default_instruction: ClassVar[str] = "Complete the task."

    @property
    def instruction(self) -> str:
        """The class docstring, cleaned; a generic instruction when there is none."""
        doc = type(self).__doc__
        if doc is None or type(self) is Signature:
            return self._default_instruction
        return inspect.cleandoc(doc)

    @classmethod
    def _fields_of(cls, role: str) -> dict[str, str]:
        found = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get(_ROLE) == role:
                found[name] = info.description or ""
        return found

    @classmethod
    def input_fields(cls) -> dict[str, str]:
        """Input field names and their descriptions, in declaration order."""
        return cls._fields_of("input")

    @classmethod
    def output_fields(cls) -> dict[str, str]:
        """Output field names and their descriptions, in declaration order."""
        return cls._fields_of("output")

    @classmethod
    def _field_info(cls, name: str) -> FieldInfo:
        return cls.model_fields[name]

    def system_prompt(self) -> str:
        """The instruction, then how to answer: the output fields as one JSON object (or plain text for one).

        >>> class Two(Signature):
        ...     '''Summarise.'''
        ...     title: str = OutputField(desc="A title")
        ...     body: str = OutputField(desc="The summary")
        >>> print(Two().system_prompt())
        Summarise.
        <BLANKLINE>
        When you are done (no more tool calls), answer with one JSON object and nothing else, with these keys:
        - "title": A title
        - "body": The summary
        """
        outputs = self.output_fields()
        lines = [self.instruction]
        if len(outputs) > 1:
            lines += ["", "When you are done (no more tool calls), answer with one JSON object and nothing else, with these keys:"]
            lines += [f'- "{name}": {desc}' for name, desc in outputs.items()]
        elif outputs:
            (name, desc), = outputs.items()
            if desc:
                lines += ["", f"When you are done (no more tool calls), answer with the {name}: {desc}"]
        return "\n".join(lines)

    def user_message(self, task: Any) -> str:
        """The first user message: the task itself (a str), or the input fields as a JSON object.

        A dict task is checked against the input fields (unknown keys are refused).

        >>> class QA(Signature):
        ...     question: str = InputField(desc="q")
        >>> QA().user_message({"question": "Why?"})
        '{"question": "Why?"}'
        """
        if isinstance(task, str):
            return task
        inputs = self.input_fields()
        if isinstance(task, dict):
            unknown = sorted(set(task) - set(inputs)) if inputs else []
            if unknown:
                raise ValueError(f"task keys {unknown} are not input fields of {type(self).__name__}; expected some of {sorted(inputs)}")
            return json.dumps(task, ensure_ascii=False, default=str)
        if task is None:
            raise ValueError(f"an LLM agent needs a task: a str, or a dict of {type(self).__name__}'s input fields {sorted(inputs)}")
        return json.dumps(task, ensure_ascii=False, default=str)

    def parse_answer(self, content: str | None) -> dict[str, Any]:
        """The final answer as the output dict; LLMError naming what is wrong if it is malformed.

        With one output field (or none) the whole text is its value; with
        several it must be one JSON object holding every output field.

        >>> class Two(Signature):
        ...     a: str = OutputField(desc="a")
        ...     b: int = OutputField(desc="b")
        >>> Two().parse_answer('{"a": "x", "b": 2}')
        {'a': 'x', 'b': 2}
        >>> Two().parse_answer("not json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        kaizen_ray.core.errors.LLMError: the model's answer is not the JSON object Two asks for (...): 'not json'
        """
        outputs = list(self.output_fields())
        text = (content or "").strip()
        if len(outputs) <= 1:
            return {outputs[0] if outputs else "answer": text}
        body = text
        if body.startswith("```"):  # models like to fence JSON
            body = body.strip("`").removeprefix("json").strip()
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            raise LLMError(f"the model's answer is not the JSON object {type(self).__name__} asks for ({exc}): {text[:200]!r}") from exc
        if not isinstance(value, dict):
            raise LLMError(f"the model's answer is a {type(value).__name__}, not a JSON object with keys {outputs}: {text[:200]!r}")
        missing = [name for name in outputs if name not in value]
        if missing:
            raise LLMError(f"the model's answer lacks the output fields {missing} of {type(self).__name__}: {text[:200]!r}")
        return {name: value[name] for name in outputs}
