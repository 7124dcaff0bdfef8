"""`GraphStore`: the small interface every graph backend implements, the `Snapshot` writes are stamped with, and
`open_graph_store(config)` that picks the backend (ladybug embedded by default, Neo4j by URI).

Reads are named queries from `queries.py` (`store.run("expand_out", {"ids": [...], "rel": "STARS"})`), always
parameterised. Writes MERGE by node `id` and by (source, type, target) for edges, so a repeated write creates
nothing; an existing node or edge keeps the snapshot fields it was created with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from almquist.stores.config import GraphStoreConfig


@dataclass(frozen=True)
class Snapshot:
    """A batch of writes: everything it creates carries `snapshot_id` and `snapshot_seq` (monotonic)."""

    snapshot_id: str
    seq: int
    source: str
    created_unix_s: float


class GraphStore(Protocol):
    backend: str

    def ensure_schema(self) -> None:
        """Tables / constraints / indexes; idempotent, called on open."""

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of the named query (see `queries.QUERIES`); `max_seq` pins a snapshot where the query takes it."""

    def upsert_nodes(self, label: str, rows: Sequence[Mapping[str, Any]], snapshot: Snapshot) -> int:
        """MERGE nodes (`name`, optional `id`) by id; returns how many were created."""

    def upsert_edges(
        self, rel_type: str, src_label: str, dst_label: str, rows: Sequence[Mapping[str, Any]], snapshot: Snapshot
    ) -> int:
        """MERGE edges (`src`, `dst` node ids) of `rel_type`; returns how many were created."""

    def delete_snapshot(self, snapshot_id: str) -> dict[str, int]:
        """Removes the nodes and edges stamped with `snapshot_id`; returns counts removed."""

    def counts(self) -> dict[str, int]:
        """Entities per label and edges per relationship type."""

    def close(self) -> None: ...


def open_graph_store(config: GraphStoreConfig) -> GraphStore:
    """The configured backend, opened and with its schema in place."""
    if config.backend == "ladybug":
        from almquist.stores.ladybug_store import LadybugGraphStore

        return LadybugGraphStore(config)
    from almquist.stores.neo4j_store import Neo4jGraphStore

    return Neo4jGraphStore(config)
