"""The import rules that keep the layers apart (docs/architecture.md): the static
import graph of ``mockpool`` (``TYPE_CHECKING`` imports included) has no cycle, no supervisor
imports the pool module, the state core imports no anyio, the history imports nothing of
mockpool but itself and no event-loop library, no fake imports the plugin
(``mockpool.pytest_plugin`` or its package ``mockpool.plugin``), and the mixins of
``ServicePool`` import neither its module nor one another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "mockpool"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                # The longest known module the import names (``from . import health``).
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


GRAPH = _graph()
#: Packages whose ``__init__`` only re-exports: importing them is importing what they list.
FACADES = {"mockpool", "mockpool.services", "mockpool.testing", "mockpool.supervisors"}


def test_the_import_graph_has_no_cycle() -> None:
    graph = {
        name: {t for t in edges if t not in FACADES or name == t}
        for name, edges in GRAPH.items()
        if name not in FACADES
    }
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("mockpool.supervisors.")))
def test_no_supervisor_imports_the_pool_module(module: str) -> None:
    assert "mockpool.pool" not in GRAPH[module]


def _sources(module: str) -> list[Path]:
    """The files of ``module``: one, or all of a package's."""
    path = ROOT / module.removeprefix("mockpool.").replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("mockpool.core", "anyio"),
        ("mockpool.sizing", "anyio"),
        ("mockpool.sizing", "asyncio"),
        ("mockpool.history", "anyio"),
        ("mockpool.history", "asyncio"),
    ],
)
def test_the_pure_layers_import_no_event_loop_library(module: str, forbidden: str) -> None:
    for path in _sources(module):
        source = path.read_text(encoding="utf-8")
        assert f"import {forbidden}" not in source and f"from {forbidden}" not in source, path


HISTORY = sorted(m for m in GRAPH if m == "mockpool.history" or m.startswith("mockpool.history."))


@pytest.mark.parametrize("module", HISTORY)
def test_the_history_imports_nothing_of_mockpool_but_itself(module: str) -> None:
    # Files of earlier runs are read by the pool and the plugin, never the other way round.
    assert set(GRAPH[module]) <= set(HISTORY)


def _in_plugin(module: str) -> bool:
    """The registered plugin module, or the package that holds its code."""
    return module in ("mockpool.pytest_plugin", "mockpool.plugin") or module.startswith("mockpool.plugin.")


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("mockpool.services.")))
def test_no_fake_imports_the_plugin(module: str) -> None:
    assert not {t for t in GRAPH[module] if _in_plugin(t)}


@pytest.mark.parametrize("module", ["mockpool.waiting", "mockpool.instances", "mockpool.recovery_handoff"])
def test_the_service_pool_mixins_import_neither_the_service_nor_what_sits_above(module: str) -> None:
    # ServicePool imports them; each declares what it uses of it instead (docs/architecture.md).
    above = {"mockpool.service", "mockpool.lease", "mockpool.pool", "mockpool.recovery"}
    mixins = {"mockpool.waiting", "mockpool.instances", "mockpool.recovery_handoff"}
    assert not GRAPH[module] & (above | mixins)
