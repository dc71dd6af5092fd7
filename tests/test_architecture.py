"""The package's layering (docs/architecture.md), checked on its source: no import
cycle, the client never imports the server, the store imports none of the layers
above it, and no module grows past 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentfield_asgi"
MAX_LINES = 500

ALLOWED = {
    # The public API re-exports the in-process transport from the client package; it is
    # resolved on first use (a module __getattr__), so importing the client loads no server.
    ("agentfield_asgi.client", "agentfield_asgi.server.in_process"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports at run time (anywhere in it, in functions
    too; not under ``if TYPE_CHECKING``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in MODULES)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    if sub in MODULES:
                        found.add(sub)
                    elif base in MODULES:
                        found.add(base)
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_import_graph_sees_the_packages_imports() -> None:
    assert "agentfield_asgi.store.semantics" in GRAPH["agentfield_asgi.store.sqlite.writer"]
    assert "agentfield_asgi.store.base" in GRAPH["agentfield_asgi.store.postgres.store"]
    assert "agentfield_asgi.server.in_process" in GRAPH["agentfield_asgi.client"]


def test_no_import_cycle() -> None:
    edges = {m: {t for t in ts if (m, t) not in ALLOWED} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            walk(name)


def _crossings(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{m} imports {t}"
        for m, ts in GRAPH.items()
        if m == layer or m.startswith(layer + ".")
        for t in sorted(ts)
        if (m, t) not in ALLOWED and any(t == f or t.startswith(f + ".") for f in forbidden)
    ]


def test_the_client_imports_nothing_from_the_server() -> None:
    assert _crossings("agentfield_asgi.client", ("agentfield_asgi.server",)) == []


def test_the_store_imports_no_layer_above_it() -> None:
    above = tuple(f"agentfield_asgi.{name}" for name in ("server", "client", "events", "agent"))
    assert _crossings("agentfield_asgi.store", above) == []


def test_no_module_is_over_500_lines() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_each_backend_is_whole_without_the_other() -> None:
    sqlite, postgres = "agentfield_asgi.store.sqlite", "agentfield_asgi.store.postgres"
    assert _crossings(sqlite, (postgres,)) == []
    assert _crossings(postgres, (sqlite,)) == []
