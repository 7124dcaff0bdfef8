"""`GraphBatch`: one checkpoint unit of an ingestion, as it flows through the pipeline's stages.

A source parser fills `nodes`, `edges` and `errors` (a malformed input names its line); the graph stage fills the
created counts and which entities still need a vector; the embedding stage fills `vectors`. Every node and edge is
written again whenever its batch runs (MERGE), so a batch may repeat safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from almquist.config import data_dir as config_data_dir
from almquist.stores.schema import node_id


class SimulatedCrash(RuntimeError):
    """Raised where a test asks an ingestion to die mid-run (`crash_after_batches` in the knowledge-base pipeline,
    `crash_before_commit` in the news one), to prove that the rerun loses nothing and stores nothing twice."""


EdgeKey = tuple[str, str, str]  # (relationship type, source label, target label)


def data_dir() -> Path:
    """Where the shared data sets live (see `almquist.config.data_dir`)."""
    return config_data_dir()


@dataclass
class GraphBatch:
    batch: int
    lines: int = 0  # source lines (or statements) this batch covers: the progress unit
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)  # label -> {id: name}
    edges: dict[EdgeKey, dict[tuple[str, str], None]] = field(default_factory=dict)  # ordered set of (src, dst)
    errors: list[str] = field(default_factory=list)
    # filled in by the pipeline
    created_nodes: int = 0
    created_edges: int = 0
    created_vectors: int = 0
    embed_ids: list[str] = field(default_factory=list)
    embed_names: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None

    def add_node(self, label: str, name: str) -> str:
        entity_id = node_id(label, name)
        self.nodes.setdefault(label, {})[entity_id] = name
        return entity_id

    def add_edge(self, rel: str, src_label: str, src_name: str, dst_label: str, dst_name: str) -> None:
        src, dst = self.add_node(src_label, src_name), self.add_node(dst_label, dst_name)
        self.edges.setdefault((rel, src_label, dst_label), {})[(src, dst)] = None

    def node_rows(self) -> dict[str, list[dict[str, Any]]]:
        return {label: [{"id": i, "name": n} for i, n in ids.items()] for label, ids in self.nodes.items()}

    def edge_rows(self) -> dict[EdgeKey, list[dict[str, Any]]]:
        return {key: [{"src": s, "dst": d} for s, d in pairs] for key, pairs in self.edges.items()}

    def entities(self) -> dict[str, str]:
        """id -> name of every node in the batch."""
        return {i: n for ids in self.nodes.values() for i, n in ids.items()}
