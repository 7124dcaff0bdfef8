"""The notebooks run top to bottom. `metaqa_eval.ipynb` is executed with nbclient on this virtualenv's Python, on a
small sample and with a classifier it trains itself (its MODEL_DIR is empty), and checked on what it displayed:
Hits@1 per hop well above chance and the per-qtype chart. (`quickstart.ipynb` needs a running Almquist server and
is not executed here.)"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from almquist.config import data_dir

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
METAQA = data_dir() / "metaqa"
KERNEL = "almquist-venv"


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs ipykernel on this interpreter (the project's venv), found first through JUPYTER_PATH,
    so the notebook never runs on whatever `python3` kernel the machine has registered."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def tagged(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    """The one code cell carrying `tag` in its metadata."""
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return cell


def parse_frame(text: str) -> dict[int, dict[str, float]]:
    """A DataFrame's text/plain with an integer index -> {index: {column: value}}; pandas puts two or more spaces
    between column headers, and the values here are numbers (no spaces)."""
    header, *lines = text.splitlines()
    columns = re.split(r"\s{2,}", header.strip())
    rows = {}
    for line in lines:
        index, *values = line.split()
        if index.isdigit():
            rows[int(index)] = dict(zip(columns, map(float, values), strict=True))
    return rows


def test_metaqa_eval_notebook_runs_and_reports(tmp_path: Path, venv_kernel: str):
    assert (METAQA / "kb.txt").exists(), f"MetaQA data not at {METAQA}: set ALMQUIST_DATA_DIR"
    nb = nbformat.read(NOTEBOOKS / "metaqa_eval.ipynb", as_version=4)
    tagged(nb, "parameters").source = "\n".join(
        [
            f"METAQA = {str(METAQA)!r}",
            f"MODEL_DIR = {str(tmp_path / 'model')!r}",  # empty: the notebook trains the classifier
            "HOPS = [1, 2, 3]",
            "LIMIT = 60",
            "STORE = 'memory'",
            "ACTORS = 2",
            "RAY_ADDRESS = 'local'",  # a fresh local Ray, even where a `ray start` cluster runs
        ]
    )
    # cell errors raise CellExecutionError here, with the failing cell and its traceback
    NotebookClient(nb, timeout=600, kernel_name=venv_kernel, resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert (tmp_path / "model" / "meta.json").exists()

    (table,) = [o.data["text/plain"] for o in tagged(nb, "per-hop").outputs if o.output_type == "execute_result"]
    per_hop = parse_frame(table)
    assert sorted(per_hop) == [1, 2, 3], table
    for hop, row in per_hop.items():
        assert row["questions"] == 60, table
        # chance is far below 1% (hundreds of candidate entities per question); the engine scores ~0.9+
        assert row["Hits@1"] >= 0.8, (hop, table)
        assert row["Hits@1"] <= row["reachability ceiling"], (hop, table)

    figures = [o for o in tagged(nb, "per-qtype").outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 1 and len(figures[0].data["image/png"]) > 10_000


def test_feeds_notebook_polls_ingests_and_answers(tmp_path: Path, venv_kernel: str):
    import shutil

    drop = tmp_path / "drop"
    shutil.copytree(NOTEBOOKS.parent / "tests" / "fixtures" / "feeds" / "drop", drop)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - name: city-drop\n    kind: folder\n    path: {drop}\n")
    nb = nbformat.read(NOTEBOOKS / "feeds.ipynb", as_version=4)
    knowledge = {"graph": {"path": str(tmp_path / "graph")}, "vectors": {"path": str(tmp_path / "qdrant")}}
    tagged(nb, "parameters").source = "\n".join(
        [
            f"SOURCES = {str(sources)!r}",
            f"STATE_DIR = {str(tmp_path / 'state')!r}",
            f"KNOWLEDGE = {knowledge!r}",
            "QUESTION = 'Is there a new tram line?'",
            "RAY_ADDRESS = 'local'",
        ]
    )
    NotebookClient(nb, timeout=600, kernel_name=venv_kernel, resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    (health,) = [o.data["text/plain"] for o in tagged(nb, "health").outputs if o.output_type == "execute_result"]
    row = next(line.split() for line in health.splitlines() if line.startswith("city-drop"))
    seen, stored = int(row[1]), int(row[2])
    assert stored == seen >= 3, health  # the fixture's good records; its bad lines are item errors
    (answers,) = [o.data["text/plain"] for o in tagged(nb, "answers").outputs if o.output_type == "execute_result"]
    first = answers.splitlines()[1]
    assert "tram" in first.lower() and "UTC" in first, answers
