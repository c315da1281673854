"""No import cycles between the project's modules, counting imports inside functions too (a function-level import
hides a cycle from Python but not from a reader: each such pair is one job split badly)."""

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGES = ("modeling_infodisent", "training", "spaces", "benchmarks")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in Path(REPO_ROOT, package).rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            if "model" in parts[1:-1] or "embedded" in parts:  # copies of the model code bundled with weights
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its body (relative imports resolved; `from pkg import x` is
    the module pkg.x when there is one, else pkg)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_checker_sees_the_project_and_its_function_level_imports():
    modules = project_modules()
    assert {"modeling_infodisent.loading", "training.train", "spaces.app", "benchmarks.scale"} <= set(modules)
    # benchmarks/scale.py imports benchmarks.rotation inside a function: such imports count.
    assert "benchmarks.rotation" in imported_modules("benchmarks.scale", modules["benchmarks.scale"], modules)


def test_no_import_cycles():
    assert import_cycles() == []
