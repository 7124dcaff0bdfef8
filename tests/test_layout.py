"""The design's layout and layering (shared ARCHITECTURE.md, "Where things live"): top-level folders are packages,
imports only point down, and no two files import each other, directly or around a circle. Imports inside functions
count: a lazy import is still a dependency, and the place a cycle hides."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["almquist", "actors", "deployments", "graphs", "ingestion", "protos"]
# layer -> the top-level packages it may not import (ARCHITECTURE.md: graphs/ may use deployments/, actors/,
# almquist/ and protos/; ingestion/ uses almquist/, actors/ (the store writer) and the engines of deployments/;
# deployments/ and actors/ use only almquist/; almquist/ imports none of the others)
FORBIDDEN = {
    "almquist": {"deployments", "graphs", "actors", "ingestion"},
    "deployments": {"graphs", "actors", "ingestion"},
    "actors": {"graphs", "deployments", "ingestion"},
    "graphs": {"ingestion"},
    "ingestion": {"graphs"},
}
CHECKED = [*PACKAGES, "benchmarks"]  # the files whose imports form the graph a cycle is looked for in


def test_layout_exists():
    for name in [*PACKAGES, "unreal", "kuberay", "notebooks", "tests", "benchmarks", "serve_config"]:
        assert (REPO / name).is_dir(), name
    for name in ["pyproject.toml", "ray_cluster.yaml", "README.md", ".ci/run", "Makefile"]:
        assert (REPO / name).is_file(), name
    protos = {p.name for p in (REPO / "protos/almquist/v1").glob("*.proto")}
    assert {"avatar.proto", "conversation.proto", "knowledge.proto", "media.proto"} <= protos


@pytest.mark.parametrize("package", PACKAGES)
def test_top_level_folders_are_importable(package):
    assert importlib.import_module(package).__file__


def source_files() -> list[Path]:
    """Our Python files, without the generated stubs (almquist/v1)."""
    return sorted(
        path
        for package in CHECKED
        for path in (REPO / package).rglob("*.py")
        if "v1" not in path.relative_to(REPO).parts
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (functions included), as absolute dotted names; for
    `from a import b` both `a` and `a.b` (b may be a module or a name in a)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> nx.DiGraph:
    """File -> the files of ours it imports (a package import is its __init__.py)."""
    files = {module_name(path): path for path in source_files()}
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        for target in imported_modules(path):
            if target in files and target != name:
                graph.add_edge(name, target)
    return graph


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    # almquist/cli.py imports almquist.runtime only inside its commands (a slow import kept off `--help`)
    assert graph.has_edge("almquist.cli", "almquist.runtime")
    assert graph.has_edge("graphs.app", "graphs.ingress")


def test_no_import_cycles_between_files():
    cycles = [sorted(component) for component in nx.strongly_connected_components(import_graph()) if len(component) > 1]
    assert cycles == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    violations = []
    for path in source_files():
        if path.relative_to(REPO).parts[0] != layer:
            continue
        bad = {name.split(".")[0] for name in imported_modules(path)} & FORBIDDEN[layer]
        if bad:
            violations.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert violations == []
