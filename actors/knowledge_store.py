"""`KnowledgeStore`: the graph store and the vector store of one knowledge base, owned by one named Ray actor.

Embedded stores (ladybug, Qdrant local mode) are single-process, so every read and write of a store path goes
through its actor (`get_knowledge_store(config)`); with servers the same actor is the single writer. In: named
queries, batches of nodes/edges/vectors stamped with a snapshot. Out: rows, `VectorHit`s, counts. Snapshots
(`begin_snapshot` -> batches -> `commit_snapshot`, or `rollback`) are recorded in the graph itself, with the
batches already done, so a crashed ingestion resumes where it stopped.

The actor only stores and serves rows. It handles one call at a time, so anything slow here holds up every read
(each KGQA question among them): graph algorithms (PageRank, Louvain) run in their caller, over the
`edges_of_type` pages (see `graphs.graph_tools.GraphTools`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import ray

from almquist.config.knowledge import KnowledgeConfig
from almquist.errors import FailedPrecondition, InvalidArgument, NotFound
from almquist.stores.factory import open_graph_store
from almquist.stores.graph import GraphStore
from almquist.stores.queries import PUBLIC_QUERIES, QUERIES
from almquist.stores.schema import label_of
from almquist.stores.snapshot import Snapshot
from almquist.stores.vectors import VectorHit, VectorStore

KNOWLEDGE_STORE_NAMESPACE = "almquist"

Status = Literal["open", "committed", "rolled_back"]
EdgeKey = tuple[str, str, str]  # (relationship type, source label, target label)


@dataclass(frozen=True)
class SnapshotRecord:
    """A snapshot and its bookkeeping: status, what it ingested (`fingerprint`), the batches already written."""

    snapshot: Snapshot
    fingerprint: str
    status: Status
    done_batches: tuple[int, ...] = ()
    info: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot.snapshot_id,
            "seq": self.snapshot.seq,
            "source": self.snapshot.source,
            "created_unix_s": self.snapshot.created_unix_s,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "done_batches": list(self.done_batches),
            "info": dict(self.info or {}),
        }


class KnowledgeStore:
    """A graph store plus a vector store, with snapshot bookkeeping; plain class (the actor wraps it)."""

    def __init__(self, config: KnowledgeConfig | Mapping[str, Any] | None = None) -> None:
        self._config = KnowledgeConfig.model_validate(config or {})
        self._graph: GraphStore = open_graph_store(self._config.graph)
        try:
            self._vectors = VectorStore(self._config.vectors)
        except BaseException:
            self._graph.close()
            raise
        self._records = {record.snapshot.snapshot_id: record for record in self._load_records()}

    # ---- reads ----
    def run(self, query_name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a public named query (`queries.PUBLIC_QUERIES`); pass `max_seq` to pin a snapshot."""
        if query_name in QUERIES and query_name not in PUBLIC_QUERIES:
            raise InvalidArgument(f"{query_name!r} is internal; public queries are {list(PUBLIC_QUERIES)}")
        return self._graph.run(query_name, params)

    def search(
        self,
        vector: np.ndarray | Sequence[float],
        limit: int = 10,
        label: str | None = None,
        max_seq: int | None = None,
        collection: str | None = None,
    ) -> list[VectorHit]:
        """Nearest entities to an embedding (of the model in `config.embeddings`)."""
        return self._vectors.search(
            collection or self._config.vectors.collection, np.asarray(vector), limit, label, max_seq
        )

    def latest_committed_seq(self) -> int | None:
        """The seq to pin for a consistent view that leaves out ingestions still running."""
        committed = [r.snapshot.seq for r in self._records.values() if r.status == "committed"]
        return max(committed) if committed else None

    def committed_view(self) -> tuple[int | None, int]:
        """(latest committed seq, snapshots rolled back so far): a reader's cache key for what it may see.

        The seq alone would miss a rollback of an older snapshot, which changes what every later seq sees.
        """
        rolled_back = sum(1 for r in self._records.values() if r.status == "rolled_back")
        return self.latest_committed_seq(), rolled_back

    # ---- snapshots ----
    def begin_snapshot(self, source: str, fingerprint: str = "") -> Snapshot:
        """A new open snapshot; its seq is above every snapshot ever recorded (rolled back ones included)."""
        if not source:
            raise InvalidArgument("name the snapshot's source (e.g. 'metaqa:kb.txt')")
        seq = max((r.snapshot.seq for r in self._records.values()), default=0) + 1
        snapshot = Snapshot(f"s{seq:06d}-{uuid.uuid4().hex[:8]}", seq, source, time.time())
        self._save(SnapshotRecord(snapshot, fingerprint, "open"))
        return snapshot

    def find_snapshot(self, source: str, fingerprint: str, status: Status = "open") -> SnapshotRecord | None:
        """The latest snapshot of `source` with this fingerprint and status, if any."""
        matches = [
            r
            for r in self._records.values()
            if r.snapshot.source == source and r.fingerprint == fingerprint and r.status == status
        ]
        return max(matches, key=lambda r: r.snapshot.seq, default=None)

    def mark_batch_done(self, snapshot_id: str, batch: int) -> None:
        record = self._open(snapshot_id)
        if batch not in record.done_batches:
            self._save(replace(record, done_batches=(*record.done_batches, batch)))

    def commit_snapshot(self, snapshot_id: str, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        record = replace(self._open(snapshot_id), status="committed", info=dict(info or {}))
        self._save(record)
        return record.as_dict()

    def list_snapshots(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in sorted(self._records.values(), key=lambda r: r.snapshot.seq)]

    def rollback(self, snapshot_id: str) -> dict[str, int]:
        """Removes everything the snapshot created from both stores; its record stays, marked `rolled_back`."""
        record = self._record(snapshot_id)
        removed = self._graph.delete_snapshot(snapshot_id)
        removed["vectors"] = self._vectors.delete_snapshot(snapshot_id)
        self._save(replace(record, status="rolled_back", info={**(record.info or {}), "removed": removed}))
        return removed

    # ---- writes ----
    def upsert_batch(
        self,
        snapshot_id: str,
        nodes: Mapping[str, Sequence[Mapping[str, Any]]],
        edges: Mapping[EdgeKey, Sequence[Mapping[str, Any]]] | None = None,
    ) -> dict[str, int]:
        """Nodes per label (`name`), then edges per (type, source label, target label) (`src`, `dst` ids)."""
        snapshot = self._open(snapshot_id).snapshot
        created_nodes = sum(self._graph.upsert_nodes(label, rows, snapshot) for label, rows in nodes.items())
        created_edges = sum(
            self._graph.upsert_edges(rel, src, dst, rows, snapshot) for (rel, src, dst), rows in (edges or {}).items()
        )
        return {"nodes": created_nodes, "edges": created_edges}

    def missing_vectors(self, ids: Sequence[str], collection: str | None = None) -> list[str]:
        return self._vectors.missing(collection or self._config.vectors.collection, ids)

    def vectors(self, ids: Sequence[str], collection: str | None = None) -> dict[str, np.ndarray]:
        """The stored vectors of these entity ids (those that have one)."""
        return self._vectors.vectors(collection or self._config.vectors.collection, ids)

    def upsert_vectors(
        self,
        snapshot_id: str,
        ids: Sequence[str],
        names: Sequence[str],
        vectors: np.ndarray,
        collection: str | None = None,
    ) -> int:
        """Entity vectors stamped with the snapshot; ids that already have a vector keep theirs. Returns new count."""
        snapshot = self._open(snapshot_id).snapshot
        if len(names) != len(ids):
            raise InvalidArgument(f"give one name per id ({len(ids)} ids, {len(names)} names)")
        payloads = [
            {
                "id": entity_id,
                "name": name,
                "label": label_of(entity_id),
                "snapshot_id": snapshot.snapshot_id,
                "snapshot_seq": snapshot.seq,
            }
            for entity_id, name in zip(ids, names, strict=True)
        ]
        return self._vectors.upsert(collection or self._config.vectors.collection, list(ids), vectors, payloads)

    def upsert_documents(
        self,
        snapshot_id: str,
        collection: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]],
    ) -> int:
        """Document chunks (news items) with their payload, stamped with the snapshot; ids already stored keep
        theirs, so a retried batch writes nothing twice. Returns how many were new."""
        snapshot = self._open(snapshot_id).snapshot
        stamped = [
            {**payload, "id": doc_id, "snapshot_id": snapshot.snapshot_id, "snapshot_seq": snapshot.seq}
            for doc_id, payload in zip(ids, payloads, strict=True)
        ]
        for payload in stamped:
            payload.setdefault("name", payload.get("title", ""))
            payload.setdefault("label", "Article")
        return self._vectors.upsert(collection, list(ids), vectors, stamped)

    def search_documents(
        self,
        vector: np.ndarray | Sequence[float],
        collection: str,
        limit: int = 10,
        match: Mapping[str, str] | None = None,
        since: float | None = None,
        max_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """Nearest document chunks with their payload and `score`; `since` keeps chunks published at or after it."""
        hits = self._vectors.search_payloads(
            collection,
            np.asarray(vector),
            limit,
            dict(match or {}),
            {"published": since} if since is not None else None,
            max_seq,
        )
        return [{**payload, "score": score} for payload, score in hits]

    def existing_document_values(self, collection: str, key: str, values: Sequence[str]) -> dict[str, str]:
        """Which of `values` a stored document's payload `key` already holds -> the snapshot that stored it."""
        return self._vectors.existing_values(collection, key, values)

    def nearest_documents(
        self, vectors: np.ndarray, collection: str, key: str = "item_id"
    ) -> list[tuple[str, float] | None]:
        """For each vector, the nearest stored document's `key` and cosine similarity (None: nothing stored)."""
        hits = [self._vectors.search_payloads(collection, np.asarray(v), 1) for v in np.asarray(vectors)]
        return [(str(found[0][0].get(key, "")), found[0][1]) if found else None for found in hits]

    def finish_batch(
        self,
        snapshot_id: str,
        batch: int,
        ids: Sequence[str],
        names: Sequence[str],
        vectors: np.ndarray,
        collection: str | None = None,
    ) -> int:
        """The last step of an ingestion batch: its vectors, then its checkpoint. Returns new vectors."""
        created = self.upsert_vectors(snapshot_id, ids, names, vectors, collection) if len(ids) else 0
        self.mark_batch_done(snapshot_id, batch)
        return created

    # ---- state ----
    def stats(self) -> dict[str, Any]:
        return {
            "graph_backend": self._graph.backend,
            "graph": self._graph.counts(),
            "vectors": {name: self._vectors.count(name) for name in self._vectors.collections()},
            "snapshots": len(self._records),
            "latest_committed_seq": self.latest_committed_seq(),
        }

    def close(self) -> None:
        self._vectors.close()
        self._graph.close()

    def _record(self, snapshot_id: str) -> SnapshotRecord:
        record = self._records.get(snapshot_id)
        if record is None:
            raise NotFound(f"unknown snapshot {snapshot_id!r}; list_snapshots() shows the recorded ones")
        return record

    def _open(self, snapshot_id: str) -> SnapshotRecord:
        record = self._record(snapshot_id)
        if record.status != "open":
            raise FailedPrecondition(
                f"snapshot {snapshot_id} is {record.status}; write into an open one (begin_snapshot)"
            )
        return record

    def _save(self, record: SnapshotRecord) -> None:
        row = record.as_dict()
        row["info"] = json.dumps(row["info"], sort_keys=True)
        self._graph.run("save_snapshot", row)
        self._records[record.snapshot.snapshot_id] = record

    def _load_records(self) -> list[SnapshotRecord]:
        return [
            SnapshotRecord(
                Snapshot(row["snapshot_id"], int(row["seq"]), row["source"], float(row["created_unix_s"])),
                row["fingerprint"],
                row["status"],
                tuple(int(b) for b in row["done_batches"] or ()),
                json.loads(row["info"] or "{}"),
            )
            for row in self._graph.run("list_snapshots")
        ]


# max_task_retries: a call in flight when the actor dies runs again once Ray restarted it (reads are idempotent,
# writes are upserts by id under their snapshot, a rollback of a rolled-back snapshot removes nothing more)
KnowledgeStoreActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)(KnowledgeStore)


def knowledge_store_name(config: KnowledgeConfig) -> str:
    """The actor's name: one per graph location and vector location."""
    graph = config.graph
    where = [graph.backend, str(graph.path) if graph.backend == "ladybug" else f"{graph.uri}/{graph.database}"]
    where.append(config.vectors.url or str(config.vectors.path))
    return "almquist_knowledge_" + hashlib.sha1("|".join(where).encode()).hexdigest()[:16]


def get_knowledge_store(config: KnowledgeConfig | Mapping[str, Any] | None = None):
    """The cluster's one `KnowledgeStore` actor for these store locations, created on first use."""
    config = KnowledgeConfig.model_validate(config or {})
    return KnowledgeStoreActor.options(
        name=knowledge_store_name(config),
        namespace=KNOWLEDGE_STORE_NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
    ).remote(config)


def release_knowledge_store(config: KnowledgeConfig | Mapping[str, Any] | None = None) -> bool:
    """Closes the stores and ends the actor (so another process may open the folders); False if there was none."""
    config = KnowledgeConfig.model_validate(config or {})
    try:
        actor = ray.get_actor(knowledge_store_name(config), namespace=KNOWLEDGE_STORE_NAMESPACE)
    except ValueError:
        return False
    ray.get(actor.close.remote())
    ray.kill(actor, no_restart=True)
    return True
