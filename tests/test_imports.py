"""The package's import graph, read from the source with ast (function-level imports included).

ARCHITECTURE.md: no import cycles among ladder's modules, and the fitting side stays light:
`fit/` and `results.py` never import torch, matplotlib, the trainer, the sweep or the run
directories; `fit/` never imports the report layer; the report layer never imports torch.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ladder"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def import_nodes(path: Path) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """The file's import statements, anywhere in it: parsed once for every test of the graph."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return tuple(node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def imported_names(path: Path, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every absolute module name the file imports, anywhere in it (relative imports resolved).

    `from pkg import sub` names the module pkg.sub when that is one of `modules`, else pkg itself
    (an attribute of it): a submodule's import does not depend on its package's other contents.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in import_nodes(path):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return names


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = frozenset(files)
    return {
        name: {target for target in imported_names(path, modules) if target in files and target != name}
        for name, path in files.items()
    }


def external_imports(prefix: str) -> dict[str, set[str]]:
    return {
        module_name(path): imported_names(path)
        for path in PACKAGE.rglob("*.py")
        if module_name(path) == prefix or module_name(path).startswith(prefix + ".")
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None: depth-first search."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_is_read_from_every_module():
    graph = import_graph()
    assert "ladder.cli" in graph and "ladder.fit.step1" in graph
    assert "ladder.errors" in graph["ladder.cli"]


def test_cycles_are_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


FORBIDDEN = {
    "ladder.fit": ("torch", "matplotlib", "ladder.train", "ladder.sweep", "ladder.runs", "ladder.report"),
    "ladder.results": ("torch", "matplotlib", "ladder.train", "ladder.sweep", "ladder.runs"),
    "ladder.report": ("torch",),
}


@pytest.mark.parametrize("prefix", sorted(FORBIDDEN))
def test_forbidden_directions(prefix):
    bad = [
        f"{module} imports {name}"
        for module, names in external_imports(prefix).items()
        for name in sorted(names)
        for banned in FORBIDDEN[prefix]
        if name == banned or name.startswith(banned + ".")
    ]
    assert not bad, "; ".join(bad)
