"""The design's layout and layering (shared ARCHITECTURE.md): top-level folders are packages, and imports only
point down: almquist/ never imports deployments/ or graphs/; deployments/ never imports graphs/ or actors/."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["almquist", "actors", "deployments", "graphs", "ingestion", "protos"]
FORBIDDEN = {
    "almquist": {"deployments", "graphs", "actors"},
    "deployments": {"graphs", "actors"},
    "ingestion": {"graphs"},  # ingestion writes through the store-writer actors in actors/
    "actors": {"graphs"},
}


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


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    violations = []
    for path in (REPO / layer).rglob("*.py"):
        if "v1" in path.parts:
            continue  # generated stubs
        bad = imported_top_levels(path) & FORBIDDEN[layer]
        if bad:
            violations.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert violations == []
