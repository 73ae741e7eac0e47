"""Apps import downwards only (accounts → analyses → cache, results → api, monitoring), and never in a
cycle; the engine imports no Django. Read from the source (every import statement, function-local ones
included), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "lensweb"
# Lower numbers sit lower: an app may import apps of a strictly lower layer only.
LAYERS = {"accounts": 0, "analyses": 1, "cache": 2, "results": 2, "api": 3, "monitoring": 3}


def app_names() -> set[str]:
    return {p.parent.name for p in APPS.glob("*/apps.py")}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module `path` imports, with the line."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            # `from lensweb import cache` imports an app too
            found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
    return found


def app_edges() -> dict[tuple[str, str], list[str]]:
    apps = app_names()
    edges: dict[tuple[str, str], list[str]] = {}
    for app in apps:
        for path in (APPS / app).rglob("*.py"):
            if "migrations" in path.parts:  # migrations name other apps' migrations, not their code
                continue
            for module, line in imported_modules(path):
                parts = module.split(".")
                if len(parts) > 1 and parts[0] == "lensweb" and parts[1] in apps and parts[1] != app:
                    edges.setdefault((app, parts[1]), []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_app_has_a_layer():
    assert app_names() == set(LAYERS)


def test_no_import_cycle_between_apps():
    edges = app_edges()
    cycle = find_cycle(edges)
    assert cycle is None, (
        "import cycle "
        + " → ".join(cycle)
        + ": "
        + "; ".join(f"{a}→{b} at {edges[(a, b)][0]}" for a, b in zip(cycle, cycle[1:], strict=False))
    )


def test_apps_import_downwards_only():
    upward = {f"{a} imports {b}": where for (a, b), where in app_edges().items() if LAYERS[b] >= LAYERS[a]}
    assert upward == {}


def test_the_engine_knows_nothing_of_django():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in (ROOT / "inference").rglob("*.py")
        for module, line in imported_modules(path)
        if module.split(".")[0] in ("django", "lensweb", "channels")
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "edges, cycle",
    [
        ({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}, ["a", "b", "c", "a"]),
        ({("a", "b"): [], ("b", "c"): []}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(edges, cycle):
    assert find_cycle(edges) == cycle
