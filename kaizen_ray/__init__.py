"""kaizen_ray: an actor-model runtime on Ray for autonomous agents that must stop well.

The public API is exactly ``__all__``; every other module is private.

>>> import kaizen_ray as kr
>>> kr.InterruptMode.GRACEFUL.value
'graceful'
"""

from __future__ import annotations

import importlib
from typing import Any

from kaizen_ray.core.agent import AgentPhase, StepResult, set_spawner
from kaizen_ray.core.checkpoint import (
    Checkpoint,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointSerializationError,
    CheckpointSignatureError,
    CheckpointStatus,
    CheckpointStorageError,
    list_checkpoints,
    load_checkpoint,
)
from kaizen_ray.core.config import (
    AutonomousConfig,
    ChildSpec,
    RestartPolicy,
    RestartStrategy,
    SupervisorConfig,
)
from kaizen_ray.core.context import StepContext
from kaizen_ray.core.errors import AgentGoneError, ConfigError, KaizenError, LLMError
from kaizen_ray.core.handlers import (
    BudgetInterruptHandler,
    SignalInterruptHandler,
    TimeoutInterruptHandler,
)
from kaizen_ray.core.hooks import (
    HookContext,
    HookEvent,
    HookManager,
    HookPriority,
    HookResult,
)
from kaizen_ray.core.interrupts import (
    InterruptedError,
    InterruptManager,
    InterruptMode,
    InterruptReason,
    InterruptSource,
)
from kaizen_ray.core.results import RunResult
from kaizen_ray.llm.agent import BaseAutonomousAgent
from kaizen_ray.llm.signature import InputField, OutputField, Signature

__version__ = "0.1.0"

# Names served by the Ray runtime, imported on first use so that the core (and
# `list_checkpoints`, `load_checkpoint`) never pay for importing Ray.
_LAZY: dict[str, str] = {
    "AgentHandle": "kaizen_ray.runtime.handles",
    "InterruptManagerProxy": "kaizen_ray.runtime._proxy",
    "get_agent": "kaizen_ray.runtime._lookup",
    "Supervisor": "kaizen_ray.runtime.supervisor",
    "SupervisorHandle": "kaizen_ray.runtime.supervisor",
}

__all__ = [
    "AgentGoneError",
    "AgentPhase",
    "AutonomousConfig",
    "BaseAutonomousAgent",
    "BudgetInterruptHandler",
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointSerializationError",
    "CheckpointSignatureError",
    "CheckpointStatus",
    "CheckpointStorageError",
    "ChildSpec",
    "ConfigError",
    "HookContext",
    "HookEvent",
    "HookManager",
    "HookPriority",
    "HookResult",
    "InterruptManager",
    "InterruptMode",
    "InterruptReason",
    "InterruptSource",
    "InputField",
    "InterruptedError",
    "KaizenError",
    "LLMError",
    "OutputField",
    "RestartPolicy",
    "RestartStrategy",
    "RunResult",
    "SignalInterruptHandler",
    "Signature",
    "StepContext",
    "StepResult",
    "SupervisorConfig",
    "TimeoutInterruptHandler",
    "list_checkpoints",
    "load_checkpoint",
    *_LAZY,
]


def _spawn(agent_cls: type, config: Any, **kwargs: Any) -> Any:
    # This package sits above both layers: the core's agents spawn into the
    # Ray runtime through this seam, and Ray is imported on first spawn only.
    from kaizen_ray.runtime.handles import spawn_agent

    return spawn_agent(agent_cls, config, **kwargs)


set_spawner(_spawn)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kaizen_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
