"""The package's shape: no import cycles between modules, no module over 600 lines, layers kept."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ecomodal"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str], *, lazy: bool = False) -> set[str]:
    """ecomodal modules imported at module level (not under TYPE_CHECKING); with ``lazy``, also
    those imported inside functions and classes."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("ecomodal"))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if not base.startswith("ecomodal"):
                    continue
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules else base)
            elif (
                lazy
                and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                or lazy
                and isinstance(node, ast.With | ast.For | ast.While)
            ):
                visit(node.body)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return {m for m in found if m in modules and m != name}


def _graph(*, lazy: bool = False) -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _module_imports(p, modules, lazy=lazy) for p in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            strong(node)
    return found


def _packages_of(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between modules, ignoring a package's own __init__ re-exports."""
    return {
        module: {m for m in deps if not (m.count(".") == 1 and module.startswith(m + "."))}
        for module, deps in graph.items()
    }


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-function-imports"])
def test_no_import_cycles(lazy):
    graph = _packages_of(_graph(lazy=lazy))
    assert _cycles(graph) == []


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_module_size(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path} is over {MAX_LINES} lines"


def test_models_import_no_training_eval_or_io():
    graph = _graph()
    for module, deps in graph.items():
        if module.startswith("ecomodal.models"):
            bad = {d for d in deps if d.startswith(("ecomodal.training", "ecomodal.eval"))}
            assert not bad, f"{module} imports {bad}"
