"""What every Cypher backend shares: checked upserts that count what they create, snapshot deletion, counts.

A backend supplies `_read(text, params)` and `_transaction(work)`: `work(run)` runs statements through
`run(text, params) -> rows` inside one write transaction. The statements themselves all come from `queries.py`.
Created counts assume one writer per store (architecture decision 6): existing ids are read, and only the rest
written, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from almquist.errors import InvalidArgument
from almquist.stores.queries import Backend, bind
from almquist.stores.rows import unique_edges, unique_nodes
from almquist.stores.schema import NODE_LABELS, RELATIONSHIPS
from almquist.stores.snapshot import Snapshot

Run = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
T = TypeVar("T")

WRITE_CHUNK = 5_000  # rows per UNWIND statement


class CypherGraphStore:
    """The backend-independent half of a `GraphStore`."""

    backend: Backend

    # ---- supplied by a backend ----
    def _read(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _transaction(self, work: Callable[[Run], T]) -> T:
        raise NotImplementedError

    # ---- the GraphStore interface ----
    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        query, text, values = bind(query_name, params, self.backend)
        if query.write:
            return self._transaction(lambda run: run(text, values))
        return self._read(text, values)

    def upsert_nodes(self, label: str, rows: Sequence[Mapping[str, Any]], snapshot: Snapshot) -> int:
        unique = list(unique_nodes(label, rows).values())

        def work(run: Run) -> int:
            created = 0
            for chunk in _chunks(unique, WRITE_CHUNK):
                found = self._run_in(run, "existing_nodes", {"ids": [row["id"] for row in chunk], "label": label})
                existing = {row["id"] for row in found}
                missing = [row for row in chunk if row["id"] not in existing]
                if missing:
                    stamp = {"snapshot_id": snapshot.snapshot_id, "snapshot_seq": snapshot.seq}
                    self._run_in(run, "merge_nodes", {"rows": missing, "label": label, **stamp})
                created += len(missing)
            return created

        return self._transaction(work)

    def upsert_edges(
        self, rel_type: str, src_label: str, dst_label: str, rows: Sequence[Mapping[str, Any]], snapshot: Snapshot
    ) -> int:
        unique = unique_edges(rel_type, src_label, dst_label, rows)
        ends = {"src_label": src_label, "dst_label": dst_label}

        def work(run: Run) -> int:
            created = 0
            for chunk in _chunks(unique, WRITE_CHUNK):
                for label, key in ((src_label, "src"), (dst_label, "dst")):
                    wanted = sorted({row[key] for row in chunk})
                    found = {row["id"] for row in self._run_in(run, "existing_nodes", {"ids": wanted, "label": label})}
                    absent = [i for i in wanted if i not in found]
                    if absent:
                        raise InvalidArgument(
                            f"{len(absent)} {rel_type} edge ends do not exist (e.g. {absent[:3]}); upsert the nodes "
                            "first (nothing of this call was written)"
                        )
                srcs = sorted({row["src"] for row in chunk})
                edges = self._run_in(run, "existing_edges", {"srcs": srcs, "rel": rel_type, **ends})
                existing = {(row["src"], row["dst"]) for row in edges}
                missing = [row for row in chunk if (row["src"], row["dst"]) not in existing]
                if missing:
                    stamp = {"snapshot_id": snapshot.snapshot_id, "snapshot_seq": snapshot.seq}
                    self._run_in(run, "merge_edges", {"rows": missing, "rel": rel_type, **ends, **stamp})
                created += len(missing)
            return created

        return self._transaction(work)

    def delete_snapshot(self, snapshot_id: str) -> dict[str, int]:
        """Per label and type, plus totals: `nodes`, `edges` (own and `dependent_edges`: later edges on own nodes)."""
        removed: dict[str, int] = {}
        for rel in RELATIONSHIPS:
            removed[rel] = self._delete_all("delete_snapshot_edges", {"rel": rel, "snapshot_id": snapshot_id})
        own_edges = sum(removed.values())
        edges_before = sum(self.edge_counts().values())
        for label in NODE_LABELS:
            removed[label] = self._delete_all("delete_snapshot_nodes", {"label": label, "snapshot_id": snapshot_id})
        dependent = edges_before - sum(self.edge_counts().values())
        totals = {
            "nodes": sum(removed[label] for label in NODE_LABELS),
            "edges": own_edges + dependent,
            "dependent_edges": dependent,
        }
        return {**totals, **{key: n for key, n in removed.items() if n}}

    def node_counts(self, max_seq: int | None = None) -> dict[str, int]:
        return {row["label"]: int(row["count"]) for row in self.run("node_count", {"max_seq": max_seq})}

    def edge_counts(self, max_seq: int | None = None) -> dict[str, int]:
        return {row["rel"]: int(row["count"]) for row in self.run("edge_count", {"max_seq": max_seq})}

    def counts(self) -> dict[str, int]:
        return {**self.node_counts(), **self.edge_counts()}

    def _run_in(self, run: Run, query_name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        _, text, values = bind(query_name, params, self.backend)
        return run(text, values)

    def _delete_all(self, query_name: str, params: dict[str, Any]) -> int:
        total = 0
        while True:
            rows = self.run(query_name, params)
            removed = int(rows[0]["removed"]) if rows else 0
            total += removed
            if removed == 0:
                return total


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
