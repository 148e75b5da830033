"""The public API is exactly ``kaizen_ray.__all__``, and the core never imports Ray."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import kaizen_ray
import kaizen_ray.core

EXPECTED = {
    # Interrupts
    "InterruptSource", "InterruptMode", "InterruptReason", "InterruptedError", "InterruptManager",
    "SignalInterruptHandler", "TimeoutInterruptHandler", "BudgetInterruptHandler",
    # Hooks
    "HookEvent", "HookContext", "HookResult", "HookManager", "HookPriority",
    # Agents and config
    "BaseAutonomousAgent", "StepResult", "StepContext", "AgentPhase", "RunResult",
    "AutonomousConfig", "SupervisorConfig", "ChildSpec", "RestartPolicy", "RestartStrategy",
    # Checkpoints
    "Checkpoint", "CheckpointInfo", "CheckpointStatus", "list_checkpoints", "load_checkpoint",
    "CheckpointError", "CheckpointNotFoundError", "CheckpointCorruptError",
    "CheckpointSerializationError", "CheckpointSignatureError", "CheckpointStorageError",
    # LLM agents
    "Signature", "InputField", "OutputField",
    # Errors: one root
    "KaizenError", "ConfigError", "LLMError",
    # The Ray runtime (imported on first use)
    "AgentHandle", "AgentGoneError", "InterruptManagerProxy", "Supervisor", "SupervisorHandle", "get_agent",
}  # fmt: skip


def test_the_export_list_is_pinned():
    assert set(kaizen_ray.__all__) == EXPECTED
    assert len(kaizen_ray.__all__) == len(set(kaizen_ray.__all__)), "duplicate names in __all__"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_public_name_imports_and_has_a_docstring(name):
    value = getattr(kaizen_ray, name)
    assert (getattr(value, "__doc__", None) or "").strip(), f"kaizen_ray.{name} has no docstring"


def test_unknown_attribute_says_what_is_missing():
    with pytest.raises(AttributeError, match="no_such_thing"):
        kaizen_ray.no_such_thing  # noqa: B018


def test_importing_the_package_and_core_never_imports_ray():
    code = (
        "import sys, kaizen_ray, kaizen_ray.core\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(kaizen_ray.core.__path__, 'kaizen_ray.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "kaizen_ray.list_checkpoints\n"
        "print(sorted(n for n in sys.modules if n == 'ray' or n.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


import kaizen_ray.llm  # noqa: E402

CORE_MODULES = [
    m.name
    for package in (kaizen_ray.core, kaizen_ray.llm)
    for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
]


@pytest.mark.parametrize("module", ["kaizen_ray", *CORE_MODULES])
def test_docstring_examples_run(module):
    failures, _ = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_no_docstring_example_runs_twice():
    # The doctests run from here only, one module at a time: a docstring that
    # two modules both collect (a re-export counted as local) would run twice.
    seen: dict[tuple[str | None, int | None, str | None], str] = {}
    for module in ["kaizen_ray", *CORE_MODULES]:
        for test in doctest.DocTestFinder().find(importlib.import_module(module)):
            if test.examples:
                where = (test.filename, test.lineno, test.docstring)  # a property's lineno is None
                assert where not in seen, f"{test.name} is collected by both {seen[where]} and {module}"
                seen[where] = module
    assert len(seen) >= len(CORE_MODULES)  # they were found at all
