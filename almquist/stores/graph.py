"""`GraphStore`: the small interface every graph backend implements (ladybug embedded, Neo4j by URI, in memory),
and `QueryRunner`, its read half: what a reader that only runs named queries needs (KGQA, the graph algorithms).

Reads are named queries from `queries.py` (`store.run("expand_out", {"ids": [...], "rel": "STARS"})`), always
parameterised. Writes MERGE by node `id` and by (source, type, target) for edges, so a repeated write creates
nothing; an existing node or edge keeps the snapshot fields it was created with (`snapshot.Snapshot`). The
backend a config names is opened by `factory.open_graph_store`; this module imports no backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from almquist.stores.snapshot import Snapshot


class QueryRunner(Protocol):
    """Anything that answers named queries: a `GraphStore`, or a runner over the KnowledgeStore actor."""

    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]: ...


class GraphStore(Protocol):
    @property
    def backend(self) -> str:
        """The backend's name (`GraphStoreConfig.backend`); read-only, so a backend may declare it a Literal."""

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
