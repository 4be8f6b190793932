"""Every convbert module imports on its own, and the package's module import graph has no cycle."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "convbert"
KNOWN_CYCLES: set[frozenset[str]] = set()  # none: keep it that way


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """convbert modules that `name` imports, at any depth of its source (lazy imports inside functions
    count too: a cycle through them still breaks whoever imports first)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y / from .. import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the submodule pkg.mod when there is one
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def cyclic_groups(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The modules that import each other, directly or through others: every strongly connected component
    of the import graph with more than one module (or a module importing itself)."""
    reach = {n: reachable(graph, n) for n in graph}
    return {frozenset({n} | {m for m in reach[n] if n in reach[m]}) for n in graph if n in reach[n]}


OPTIONAL = {"convbert.kernels.conv_triton": "triton"}  # modules behind an optional dependency: the one it needs


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name], reason=f"{name} needs the optional {OPTIONAL[name]}")
    importlib.import_module(name)


def test_import_graph_is_acyclic():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}
    # a package's __init__ re-exporting its submodules is not a cycle of its own: drop package -> child
    # edges, keep child -> package edges (those are what would loop)
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = sorted(sorted(group) for group in cyclic_groups(graph) - KNOWN_CYCLES)
    assert not cycles, "modules in convbert/ that import each other:\n" + "\n".join(map(" <-> ".join, cycles))


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert cyclic_groups(graph) == {frozenset("abc"), frozenset("de")}
    assert cyclic_groups({"a": {"b"}, "b": set()}) == set()
