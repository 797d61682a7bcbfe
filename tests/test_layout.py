"""The package's layout is its architecture, and imports point one way:

    peftpipe.cli  ->  peftpipe.tools, peftpipe.serve  ->  the pipeline library
    (the package root, peftpipe.tasks, peftpipe.params: what the stages run)

The stages run the library only (so dvc.yaml's deps hold no user tool and no server); the
tools and the server do not import each other. Function-level imports count too."""

from pathlib import Path

import pytest
from conftest import ROOT, imported_modules

SRC = ROOT / "src" / "peftpipe"


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("tools", "serve", "cli"):
        return parts[1]
    return "library"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT / "src").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALLOWED = {  # layer -> the layers it may import
    "library": {"library"},
    "tools": {"library", "tools"},
    "serve": {"library", "serve"},
    "cli": {"library", "tools", "serve", "cli"},
}
SOURCES = sorted(SRC.rglob("*.py"))
MODULES = {module_name(path) for path in SOURCES}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(SRC).as_posix())
def test_imports_point_from_the_commands_to_the_library(path):
    own = layer(module_name(path))
    wrong = sorted(name for name in imported_modules(path) if layer(name) not in ALLOWED[own])
    assert not wrong, f"{module_name(path)} ({own}) imports {wrong}: {own} may import only {sorted(ALLOWED[own])}"


@pytest.mark.parametrize("script", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_stages_import_the_library_only(script):
    wrong = sorted(name for name in imported_modules(script) if layer(name) != "library")
    assert not wrong, f"stages/{script.name} imports {wrong}"


def test_the_layers_are_where_the_layout_says():
    assert {layer(module_name(p)) for p in SOURCES} == {"library", "tools", "serve", "cli"}
    assert layer("peftpipe.tools.compare") == "tools" and layer("peftpipe.serve.app") == "serve"
    assert layer("peftpipe.tasks.base") == layer("peftpipe.params.schema") == "library"
    # The rule bites: a library module that imported a tool would be named.
    assert "tools" not in ALLOWED["library"] and "serve" not in ALLOWED["tools"]


def runtime_imports(path: Path) -> set[str]:
    """The peftpipe modules a file imports when it runs (function-level imports too; those
    under ``if TYPE_CHECKING:``, read by type checkers only, left out)."""
    import ast

    found = set()

    def visit(node) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name if name in MODULES else name.rsplit(".", 1)[0] for name in found
            if name.split(".")[0] == "peftpipe"} & MODULES


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """dev/import_cycles.py's count (Tarjan's strongly connected components of more than one
    module), which that script applies to module-level imports only."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "dev" / "import_cycles.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script.circles(graph)


def test_no_module_imports_itself_around_a_circle():
    """How the import graph is counted: every peftpipe module's runtime imports, function-level
    ones included, TYPE_CHECKING-only ones (annotations) left out."""
    graph = {module_name(path): runtime_imports(path) - {module_name(path)} for path in SOURCES}
    assert sum(map(len, graph.values())) > 100  # the graph was read
    assert circles(graph) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the counter sees one
