"""The layers hold, read from the source: core <- llm <- runtime <- cli, and no import circle anywhere.

Every ``import`` statement counts, at module level or inside a function (a
lazy import is still a dependency). Imports under ``if TYPE_CHECKING:`` are
not: no interpreter ever runs them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kaizen_ray

ROOT = Path(kaizen_ray.__file__).parent
PACKAGE = "kaizen_ray"

# A module may import only from its own layer or a lower one.
LAYERS = {"core": 0, "llm": 1, "runtime": 2}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, outside ``if TYPE_CHECKING:`` blocks."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from kaizen_ray.core import agent` imports the module kaizen_ray.core.agent.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if _path_of(candidate) is not None:
                    found.add(candidate)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _path_of(module: str) -> Path | None:
    if not module.startswith(PACKAGE):
        return None
    rel = Path(*module.split("."))
    for candidate in (ROOT.parent / rel.with_suffix(".py"), ROOT.parent / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in ROOT.rglob("*.py"):
        graph[_module_name(path)] = {m for m in _imports(path) if _path_of(m) is not None}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_core_imports_neither_ray_nor_any_upper_layer_not_even_lazily():
    offences = []
    for path in (ROOT / "core").rglob("*.py"):
        for imported in _imports(path):
            top = imported.split(".")[0]
            upper = imported.startswith(PACKAGE + ".") and (_layer(imported) or 0) > 0
            if top == "ray" or upper or imported in {"kaizen_ray.cli", PACKAGE}:
                offences.append(f"{_module_name(path)} imports {imported}")
    assert offences == []


def test_no_module_imports_from_a_higher_layer():
    offences = []
    for module, imported in _graph().items():
        own = _layer(module)
        if own is None:
            continue
        for target in imported:
            theirs = _layer(target)
            if theirs is None and target != PACKAGE and not target.startswith(PACKAGE + "._"):
                theirs = 99  # the package's top (cli, the public __init__) sits above every layer
            if theirs is not None and theirs > own:
                offences.append(f"{module} ({own}) imports {target} ({theirs})")
    assert offences == []


def test_there_is_no_import_circle_in_the_package():
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target == module:
                continue
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_import_reader_sees_lazy_imports_and_skips_type_checking_ones(tmp_path):
    # The checks above are only as good as this reader: pin what it sees.
    src = ROOT / "core" / "_probe_for_test.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from kaizen_ray.runtime import handles\n"
        "def f():\n    import ray\n    from kaizen_ray.core import agent\n"
    )
    try:
        seen = _imports(src)
    finally:
        src.unlink()
    assert "ray" in seen and "kaizen_ray.core.agent" in seen
    assert "kaizen_ray.runtime" not in seen and "kaizen_ray.runtime.handles" not in seen
