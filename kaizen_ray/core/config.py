"""Configuration as plain, frozen, validated data.

Every model rejects unknown keys and says which field was wrong and why, at
construction, never at first use. Names fixed by DESIGN.md keep their names
(``graceful_shutdown_timeout``); new ones carry their unit (``restart_window_s``).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from kaizen_ray.core._validate import finite_non_negative
from kaizen_ray.core.checkpoint import (
    resolve_storage_path,
    storage_scheme,
    validate_agent_name,
)
from kaizen_ray.core.errors import ConfigError

__all__ = [
    "AutonomousConfig",
    "ChildSpec",
    "Pricing",
    "RestartPolicy",
    "RestartStrategy",
    "SupervisorConfig",
    "coerce_config",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _seconds(value: float, field: str) -> float:
    # Raised inside a pydantic validator: a ValueError, which _Config turns into one ConfigError.
    try:
        return finite_non_negative(field, value, unit="seconds")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class _Config(BaseModel):
    """A frozen config whose every validation error is one :class:`ConfigError` naming field and value."""

    model_config = _FROZEN

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError.from_validation(type(self).__name__, exc) from exc


class Pricing(_Config):
    """What a model's tokens cost, in USD per million tokens (prompt and completion priced apart).

    >>> Pricing(input_per_million=0.15, output_per_million=0.60).output_per_million
    0.6
    """

    input_per_million: float = Field(ge=0, allow_inf_nan=False)
    output_per_million: float = Field(ge=0, allow_inf_nan=False)


class _HiddenKey:
    """Stands in for a checkpoint key of the wrong type in error messages: its type, never its value."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<a {self.type_name}, hidden>"


class AutonomousConfig(_Config):
    """How one agent runs and stops.

    >>> cfg = AutonomousConfig(max_cycles=10, checkpoint_frequency=2)
    >>> cfg.graceful_shutdown_timeout, cfg.checkpoint_on_interrupt
    (5.0, True)
    >>> AutonomousConfig(graceful_shutdown_timeout=-1)
    Traceback (most recent call last):
    ...
    kaizen_ray.core.errors.ConfigError: AutonomousConfig.graceful_shutdown_timeout: graceful_shutdown_timeout must be a finite number of seconds >= 0, got -1.0 (got -1)
    """

    model_config = _FROZEN

    max_cycles: int | None = Field(default=None, ge=1, description="None: no limit. Counts across resumes.")
    enable_interrupts: bool = True
    graceful_shutdown_timeout: float = 5.0
    immediate_shutdown_timeout: float = 5.0
    checkpoint_on_interrupt: bool = True
    checkpoint_frequency: int = Field(default=1, ge=0, description="Cycles between checkpoints; 0: only at the end.")
    checkpoints_in_flight: int = Field(
        default=1, ge=1, le=64,
        description="Periodic checkpoints a run may have sent and not yet had acknowledged. 1: each cycle's checkpoint is "
        "held by the checkpoint store before the next cycle starts, so the agent's process dying loses no completed "
        "cycle's checkpoint. More: a cycle does not wait for the store's round trip, and a crash may lose up to that many "
        "of the newest. In-process checkpoints are always 1.",
    )
    storage_path: Path | str | None = Field(
        default=None, description="A folder or a URI (s3://, gs://, hdfs://, file://); None: $KAIZEN_RAY_STORAGE_PATH or ~/.kaizen_ray/checkpoints"
    )
    checkpoint_key: SecretStr | None = Field(
        default=None,
        description="Sign checkpoints with this key (HMAC-SHA256) and refuse unsigned ones; None: $KAIZEN_RAY_CHECKPOINT_KEY, else unsigned",
    )
    raise_on_interrupt: bool = False
    hook_timeout_s: float = Field(default=5.0, description="Longest a hook may run before it is abandoned.")
    # The model, for agents whose cycles call one (a Signature, tools): see kaizen_ray.llm.
    llm_provider: str | None = Field(default=None, description='"ollama", "openai", or any OpenAI-compatible server with base_url')
    model: str | None = None
    base_url: str | None = Field(default=None, description="None: the provider's default (Ollama honours OLLAMA_HOST)")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable read for the API key at call time")
    max_tokens: int = Field(default=1024, ge=1, description="Completion tokens per call; also the worst case reserved")
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    pricing: Pricing | None = Field(default=None, description="None: the built-in table; local providers cost 0")
    llm_max_retries: int = Field(default=3, ge=0, description="Retries of a transient failure (connection, 429, 5xx)")
    llm_retry_backoff_s: float = Field(default=0.5, description="First backoff; doubles per retry, cut short by an interrupt")
    llm_timeout_s: float = Field(default=120.0, description="Longest one model call may take")

    @field_validator(
        "graceful_shutdown_timeout", "immediate_shutdown_timeout", "hook_timeout_s", "llm_retry_backoff_s", "llm_timeout_s",
        mode="after",
    )
    @classmethod
    def _timeouts(cls, value: float, info: Any) -> float:
        return _seconds(value, info.field_name)

    @field_validator("checkpoint_key", mode="before")
    @classmethod
    def _key_type(cls, value: Any) -> Any:
        # A key of the wrong type must not be echoed in the error: the input is replaced by its type.
        if value is None or isinstance(value, (str, SecretStr)):
            return value
        return _HiddenKey(type(value).__name__)

    @field_validator("checkpoint_key", mode="after")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("checkpoint_key must be a non-empty key, got an empty one (None: unsigned)")
        return value

    @field_validator("storage_path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            raise ValueError(f"storage_path must be a non-empty path or URI, got {value!r}")
        # A URI stays a str (Path("s3://b/x") would be a local folder named "s3:"), file:// becomes
        # its folder; an unsupported scheme is refused here, at construction.
        if storage_scheme(value) is not None:
            return resolve_storage_path(value)
        return Path(value).expanduser()


class RestartPolicy(StrEnum):
    """When a supervisor restarts a child (OTP's child restart types)."""

    PERMANENT = "permanent"  # restarted after its actor crashed or its step failed
    TRANSIENT = "transient"  # restarted after its actor crashed only
    TEMPORARY = "temporary"  # never restarted


class RestartStrategy(StrEnum):
    """Which children a supervisor restarts when one dies (OTP's strategies)."""

    ONE_FOR_ONE = "one_for_one"  # only the child that died
    ONE_FOR_ALL = "one_for_all"  # every child
    REST_FOR_ONE = "rest_for_one"  # the child that died and those started after it


class ChildSpec(_Config):
    """One supervised child: an agent class (or ``kr.Supervisor``), its logical name, config, task, restart policy.

    ``actor_options`` go to the child's Ray ``.options()`` (``num_cpus``,
    ``resources``, ``scheduling_strategy``, ``runtime_env``, ...), under the
    ``name`` and ``namespace`` its supervisor sets. A child that is itself a
    supervisor (``kr.Supervisor``) takes ``children`` and, as ``config``, a
    :class:`SupervisorConfig` (or a dict of its fields): a supervision tree.
    ``spawn_timeout_s`` bounds how long the supervisor waits for the child's
    actor to be up (a request no node can meet must not hang it).

    >>> from kaizen_ray.core.agent import BaseAutonomousAgent
    >>> class Worker(BaseAutonomousAgent):
    ...     async def step(self, state, ctx): ...
    >>> spec = ChildSpec(Worker, name="w1", restart="transient", actor_options={"num_cpus": 0})
    >>> spec.agent_cls is Worker, spec.restart, spec.kind
    (True, <RestartPolicy.TRANSIENT: 'transient'>, 'agent')
    >>> ChildSpec(Worker, name="w1", actor_options={"name": "x"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    kaizen_ray.core.errors.ConfigError: ChildSpec.actor_options: actor_options must not set 'name'...
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    agent_cls: type
    name: str
    config: AutonomousConfig | SupervisorConfig = Field(default_factory=AutonomousConfig)
    task: Any = None
    restart: RestartPolicy = RestartPolicy.PERMANENT
    agent_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Constructor keywords for the agent (signature=, tools=, ...)"
    )
    actor_options: dict[str, Any] = Field(
        default_factory=dict, description="Ray actor options for the child's actor (num_cpus, resources, ...)"
    )
    children: list[ChildSpec] | None = Field(default=None, description="A supervisor child's own children")
    spawn_timeout_s: float = Field(default=300.0, description="Longest wait for the child's actor to be up")

    def __init__(self, agent_cls: type | None = None, /, **data: Any) -> None:
        if agent_cls is not None:
            data["agent_cls"] = agent_cls
        super().__init__(**data)

    @property
    def kind(self) -> str:
        """``"agent"`` or ``"supervisor"``: what the child's actor is."""
        return _kind_of(self.agent_cls) or "agent"

    @model_validator(mode="before")
    @classmethod
    def _config_of_kind(cls, data: Any) -> Any:
        # An agent child is configured by an AutonomousConfig, a supervisor child by a
        # SupervisorConfig: decided by the class, never guessed from a dict's keys.
        if not isinstance(data, dict):
            return data
        kind = _kind_of(data.get("agent_cls"))
        expected: Any = {"agent": AutonomousConfig, "supervisor": SupervisorConfig}.get(kind or "")
        config = data.get("config")
        if expected is None or isinstance(config, expected):
            return data
        if config is None:
            return {**data, "config": expected()}
        if isinstance(config, dict):
            try:
                return {**data, "config": expected(**config)}
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        raise ValueError(
            f"config of {kind} child {data.get('name')!r} must be given as {expected.__name__} (or a dict of its fields), "
            f"got {type(config).__name__}"
        )

    @field_validator("agent_cls")
    @classmethod
    def _agent_cls(cls, value: Any) -> type:
        # Duck-typed on the marker every BaseAutonomousAgent subclass inherits and
        # kr.Supervisor carries: config sits below both and must import neither.
        if _kind_of(value) is None:
            raise ValueError(f"agent_cls must be a subclass of BaseAutonomousAgent or kr.Supervisor, got {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if "/" in value:
            raise ValueError(f"child name {value!r} must not contain '/': the supervisor adds its own prefix")
        return validate_agent_name(value)

    @field_validator("actor_options")
    @classmethod
    def _actor_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Non-str keys are refused by the field's type already.
        for key in value:
            if key in _SUPERVISOR_SET_OPTIONS:
                raise ValueError(
                    f"actor_options must not set {key!r}: the supervisor sets a child's name, namespace and lifetime"
                )
        return value

    @field_validator("spawn_timeout_s", mode="after")
    @classmethod
    def _spawn_timeout(cls, value: float) -> float:
        value = _seconds(value, "spawn_timeout_s")
        if value == 0:
            raise ValueError("spawn_timeout_s must be > 0 seconds, got 0.0")
        return value

    @model_validator(mode="after")
    def _children_of_kind(self) -> ChildSpec:
        if self.kind == "supervisor":
            if not self.children:
                raise ValueError(f"supervisor child {self.name!r} needs children=[ChildSpec(...), ...], got {self.children!r}")
            names = [c.name for c in self.children]
            if len(set(names)) != len(names):
                raise ValueError(f"the children of supervisor child {self.name!r} need unique names, got {names}")
            if self.agent_kwargs:
                raise ValueError(f"supervisor child {self.name!r} takes no agent_kwargs, got {self.agent_kwargs!r}")
        elif self.children is not None:
            raise ValueError(
                f"agent child {self.name!r} must not have children (only a kr.Supervisor child does), got {self.children!r}"
            )
        return self


_SUPERVISOR_SET_OPTIONS = frozenset({"name", "namespace", "lifetime"})


def _kind_of(value: Any) -> str | None:
    kind = getattr(value, "_kaizen_kind", None) if isinstance(value, type) else None
    return kind if kind in ("agent", "supervisor") else None


class SupervisorConfig(_Config):
    """How a supervisor restarts its children, as plain data (OTP's sup_flags).

    ``max_restarts`` restarts within ``restart_window_s`` seconds are allowed;
    one more and the supervisor gives up: it stops the other children
    gracefully and reports ``"failed"``.

    The supervisor's own bounds on a stop of the whole tree, above each
    child's own (OTP's ``shutdown``); None (the default): none, each child's
    ``AutonomousConfig`` bounds its own stop. A GRACEFUL stop not finished
    ``graceful_shutdown_timeout`` seconds after the supervisor accepted it
    becomes IMMEDIATE (SYSTEM, handler ``"escalation"``), forwarded to every
    child; an IMMEDIATE one not finished ``immediate_shutdown_timeout``
    seconds after it was accepted kills the children still running (each
    reports ``"killed"``, from its last durable checkpoint, and is not restarted).

    >>> SupervisorConfig(strategy="one_for_all", max_restarts=5).restart_window_s
    5.0
    """

    model_config = _FROZEN

    strategy: RestartStrategy = RestartStrategy.ONE_FOR_ONE
    # strict: True is not "1 restart", nor 2.5 "2".
    max_restarts: int = Field(default=3, ge=0, strict=True)
    restart_window_s: float = 5.0
    # None: the children's own bounds only (a bound here would cut a child's longer one short).
    graceful_shutdown_timeout: float | None = None
    immediate_shutdown_timeout: float | None = None
    storage_path: Path | str | None = None

    @field_validator("restart_window_s", "graceful_shutdown_timeout", "immediate_shutdown_timeout", mode="after")
    @classmethod
    def _seconds(cls, value: float | None, info: Any) -> float | None:
        if value is None:
            return None
        value = _seconds(value, info.field_name)
        if info.field_name == "restart_window_s" and value == 0:
            raise ValueError(f"restart_window_s must be > 0 seconds, got {value!r}")
        return value

    @field_validator("storage_path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return AutonomousConfig._path(value)


ChildSpec.model_rebuild()  # its config may be a SupervisorConfig, defined after it


def coerce_config(config: AutonomousConfig | dict[str, Any] | None) -> AutonomousConfig:
    """An :class:`AutonomousConfig` from itself, a dict of its fields, or None (the defaults).

    >>> coerce_config({"max_cycles": 3}).max_cycles
    3
    >>> coerce_config(3)
    Traceback (most recent call last):
    TypeError: config must be an AutonomousConfig or a dict of its fields, got int: 3
    """
    if config is None:
        return AutonomousConfig()
    if isinstance(config, AutonomousConfig):
        return config
    if isinstance(config, dict):
        return AutonomousConfig(**config)
    raise TypeError(f"config must be an AutonomousConfig or a dict of its fields, got {type(config).__name__}: {config!r}")
