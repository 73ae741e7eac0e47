"""Who may import whom. Apps import downwards only (api, monitoring → cache, results → analyses → accounts:
an arrow points at what is imported), never the project's top, and never in a cycle; no module of the
engine, the project or the client is in an import cycle with another; the engine imports no Django. Read
from the source (every import statement, function-level ones included, those under `if TYPE_CHECKING:`
left out), so a lazy import cannot hide a cycle. From outside the engine, only its door (inference.engine)
and its torch-free vocabulary are imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "lensweb"
# Lower numbers sit lower: an app may import apps of a strictly lower layer only.
LAYERS = {"accounts": 0, "analyses": 1, "cache": 2, "results": 2, "api": 3, "monitoring": 3}


def app_names() -> set[str]:
    return {p.parent.name for p in APPS.glob("*/apps.py")}


def _type_checking(node) -> bool:
    """`if TYPE_CHECKING:` (or typing.TYPE_CHECKING): imports for annotations only, never run."""
    test = node.test
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported_modules(path: Path, package: str | None = None) -> list[tuple[str, int]]:
    """Absolute names of every module `path` imports, with the line: function-level imports included,
    those under `if TYPE_CHECKING:` left out. `package`: the one `path` is in (from its place under ROOT)."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    stack = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
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
    return sorted(found, key=lambda item: item[1])


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


# Every package whose modules import one another: the engine, the project and its apps, the client.
PACKAGES = {
    "inference": ROOT / "inference",
    "lensweb": ROOT / "lensweb",
    "lensweb_client": ROOT / "clients" / "python" / "src" / "lensweb_client",
}
# The project's top, which only Django and servers import (never an app): settings name it by string.
PROJECT_TOP = ("lensweb.asgi", "lensweb.urls")


def modules_of(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted name → file of every module of `packages` (migrations left out: they name other apps'
    migrations, not their code)."""
    found = {}
    for prefix, folder in packages.items():
        for path in folder.rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = [prefix, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def module_edges(packages: dict[str, Path]) -> dict[tuple[str, str], list[str]]:
    """(importer, imported) → where, between the modules of `packages`; an import of a name inside a
    module (`from .x import y`) is an edge to that module."""
    modules = modules_of(packages)
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported, line in imported_modules(path, package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.setdefault((name, imported), []).append(f"{path}:{line}")
    return edges


def cycle_message(edges, cycle) -> str:
    steps = "; ".join(f"{a} → {b} at {edges[(a, b)][0]}" for a, b in zip(cycle, cycle[1:], strict=False))
    return "import cycle " + " → ".join(cycle) + ": " + steps


def test_no_import_cycle_between_modules():
    """Among every module of the engine, the project and the client, imports inside functions counted: a
    lazy import does not make a cycle go away, it only hides it until the first call."""
    edges = module_edges(PACKAGES)
    cycle = find_cycle(edges)
    assert cycle is None, cycle_message(edges, cycle)


def test_no_app_imports_the_projects_top():
    """The top (asgi, urls) imports the apps; an app that imported it back (a management command getting
    the ASGI application) would be an upward arrow: channels' get_default_application() reads the setting."""
    offenders = [
        f"{where} imports {imported}"
        for (importer, imported), places in module_edges(PACKAGES).items()
        for where in places
        if imported in PROJECT_TOP and importer.split(".")[1:2] and importer.split(".")[1] in LAYERS
    ]
    assert offenders == []


# What code outside inference/ may import of it: the door, and the vocabulary a form or a schema names.
ENGINE_DOOR = (
    "inference.engine",
    *(f"inference.{name}" for name in ("types", "rows", "errors", "limits", "options")),
)
# Everything outside the engine that runs in the product: the project and its apps, the client, the top files.
# (tests/ and bench/ reach inside on purpose: they test and time the internals themselves.)
OUTSIDE_ENGINE = (ROOT / "lensweb", ROOT / "clients", *ROOT.glob("*.py"))


def engine_imports_from_outside(roots=OUTSIDE_ENGINE) -> list[str]:
    """Imports of inference internals (neither the door nor its vocabulary) from `roots`, one per import
    statement, with where."""
    paths = [p for root in roots for p in ([root] if root.is_file() else root.rglob("*.py"))]
    found: dict[tuple[Path, int], str] = {}
    for path in paths:
        for module, line in imported_modules(path, package=""):
            allowed = module == "inference" or any(
                module == d or module.startswith(f"{d}.") for d in ENGINE_DOOR
            )
            if module.split(".")[0] == "inference" and not allowed:
                found.setdefault((path, line), module)  # `from inference.x import y` names x, then x.y
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line} imports {module}"
        for (path, line), module in found.items()
    ]


def test_outside_the_engine_only_its_door_is_imported():
    assert engine_imports_from_outside() == []


def test_the_door_check_sees_a_planted_internal_import(tmp_path):
    """The test of the test: an import of an internal (lazy, or `from inference import lens`) is caught;
    the door and the vocabulary are not."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from inference import engine\nfrom inference.types import AnalysisOptions\n"
        "def f():\n    from inference.lens import load_lens\n    from inference import driver\n"
    )
    found = engine_imports_from_outside((planted,))
    assert [entry.split(" imports ")[1] for entry in found] == ["inference.lens", "inference.driver"]


def test_the_door_and_its_vocabulary_import_no_torch():
    """A web process imports them to check options and build keys: torch loads only where a lens does."""
    code = f"import sys; import {', '.join(ENGINE_DOOR)}; print(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_module_cycle_finder_sees_lazy_imports_and_not_type_only_ones(tmp_path):
    """The test of the test: a cycle through a function-level import is found; one closed only by an
    import under `if TYPE_CHECKING:` is not a cycle."""
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from . import a  # lazy: still an edge\n    return a\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .a import helper\nif TYPE_CHECKING:\n    from .d import D\n"
    )
    (pkg / "d.py").write_text("from .c import helper\n")
    edges = module_edges({"planted": pkg})
    assert find_cycle(edges) == ["planted.a", "planted.b", "planted.a"]
    assert ("planted.c", "planted.d") not in edges
    (pkg / "b.py").write_text("def helper():\n    return 1\n")
    assert find_cycle(module_edges({"planted": pkg})) is None


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


def test_fragments_read_no_database_and_summaries_import_no_presentation():
    """fragments.py renders what cards.py reads (so rendering runs on any thread); summaries.py is plain data
    that pages and exports format."""
    path = APPS / "analyses" / "fragments.py"
    assert not [m for m, _ in imported_modules(path) if m.startswith("django.db")]
    assert ".objects" not in path.read_text()
    presentation = ("colours", "fragments", "rowtext", "templatetags", "django.template")
    imported = [module for module, _ in imported_modules(APPS / "analyses" / "summaries.py")]
    assert not [m for m in imported if any(p in m for p in presentation)]
