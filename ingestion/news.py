"""Real-time items (news, scores, forecasts, prices) into the knowledge base, on Ray Data.

In: one batch of `Item`s (an inbox batch of the FeedScheduler, or `almquist ingest`), a key naming the batch, and
the knowledge config. Stages: exact dedup (in the batch by item id = canonical URL or the source's id, and by
content hash; against the store by content hash, so a live item whose score or price changed is a new version of
it) -> chunk -> embed (a Ray Data actor pool of MiniLM) -> near-duplicate drop (a first chunk this close to another
item's) -> entity linking (names the graph knows, and the item's own hints for teams, places and stocks) -> under
one snapshot: Article nodes and MENTIONS edges in the graph, chunk vectors with their payload in Qdrant's `news`
collection -> commit. Out: a `NewsReport`, and per stored item its freshness (seconds
from when it appeared, see `Item.seen_at`, to answerable) as the `almquist_ingestion_freshness_seconds` metric.

Idempotent and resumable: the batch's snapshot is found again by its key, so a retried batch resumes it; graph
writes MERGE and vector upserts skip stored ids, so nothing is written twice; a crash before the commit leaves an
open snapshot that no reader sees (readers pin the latest committed one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray

from actors.knowledge_store import get_knowledge_store
from almquist import metrics
from almquist.config import EmbeddingsConfig
from almquist.config.knowledge import KnowledgeConfig
from almquist.stores.schema import NEWS_COLLECTION, node_id
from ingestion.batches import SimulatedCrash
from ingestion.sources.model import Item

SNAPSHOT_PREFIX = "news:"
# The graph labels an item's own entity hints become when the graph does not know them yet, by category.
HINT_LABELS = {"sports": "Team", "weather": "Place", "stocks": "Stock"}
LINKABLE_LABELS = ("Person", "Movie", "Team", "Place", "Stock")
_CAPITALISED = re.compile(r"\b(?:[A-Z][\w'&.-]*)(?:\s+(?:of|the|de|van|von|[A-Z][\w'&.-]*)){0,4}")


@dataclass(frozen=True)
class NewsSettings:
    chunk_chars: int = 800
    chunk_overlap: int = 100
    near_duplicate: float = 0.97  # cosine of first chunks: rewordings of one wire story, not two stories
    embed_actors: int = 1
    embed_batch_size: int = 64
    max_candidates: int = 200  # capitalised phrases per item tried against the graph's names


@dataclass
class NewsReport:
    batch_key: str
    snapshot_id: str
    seq: int
    status: str  # "committed" | "up_to_date" (committed before) | "nothing_new" (all duplicates: no snapshot)
    items_in: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    stored: int = 0
    chunks: int = 0
    created_vectors: int = 0
    linked: int = 0
    created_nodes: int = 0
    created_edges: int = 0
    stored_ids: list[str] = field(default_factory=list)
    freshness_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    embed_s: float = 0.0


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """Pieces of about `size` characters, cut at a sentence or word end, each repeating `overlap` of the last."""
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = max(text.rfind(". ", start, end), text.rfind(" ", start, end))
            if cut > start + size // 2:
                end = cut + 1
        pieces.append(text[start:end].strip())
        if end >= len(text):
            break
        start = max(end - overlap, start + 1)
    return [piece for piece in pieces if piece]


def candidate_names(item: Item, limit: int) -> list[str]:
    """The item's own entity hints, then capitalised phrases of its title and text and their sub-phrases."""
    found: dict[str, None] = dict.fromkeys(name.strip() for name in item.entities if name.strip())
    for match in _CAPITALISED.finditer(f"{item.title}. {item.text}"):
        words = match.group(0).split()
        for length in range(len(words), 0, -1):
            for start in range(len(words) - length + 1):
                found.setdefault(" ".join(words[start : start + length]).strip(".,;:!?'\""), None)
                if len(found) >= limit:
                    return list(found)
    return list(found)


class ChunkEmbedder:
    """Ray Data actor: rows {"doc_id", "embed_text", ...} in, the same rows with "vector" out (MiniLM, normalised).
    Also the body of `EmbedderActor`, a warm model a long-lived caller (the FeedScheduler) keeps across batches."""

    def __init__(self, config: EmbeddingsConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        from deployments.embeddings import SentenceTransformerEngine

        self._engine = (engine_cls or SentenceTransformerEngine)(EmbeddingsConfig.model_validate(config))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**batch, "vector": self.embed(list(batch["embed_text"]))}

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._engine.embed(texts, normalize=True), dtype=np.float32)


EmbedderActor = ray.remote(ChunkEmbedder)


def start_embedder(config: KnowledgeConfig, engine_cls: type | None = None) -> Any:
    """A warm embedding actor with the pipeline's resources (`KnowledgeConfig.embed_actor_options`: CPUs, and on a
    cluster a GPU fraction and a node-type pin). A caller that ingests batch after batch passes it as
    `ingest_items(embedder=...)`, so no batch waits for a model to load (seconds on a CPU, most of a small batch)."""
    return EmbedderActor.options(**config.embed_actor_options()).remote(config.embeddings, engine_cls)


def _embed_remote(batch: dict[str, np.ndarray], embedder: Any) -> dict[str, np.ndarray]:
    return {**batch, "vector": ray.get(embedder.embed.remote(list(batch["embed_text"])))}


def _embed(
    rows: list[dict[str, Any]],
    config: KnowledgeConfig,
    settings: NewsSettings,
    engine_cls: type | None,
    embedder: Any = None,
) -> dict[str, np.ndarray]:
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    context = DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        dataset: ray.data.Dataset = ray.data.from_items(rows)
        if embedder is not None:  # a warm model: thin tasks hand it the batches
            # Ray types map_batches' function as taking the batch alone; fn_kwargs passes the rest
            dataset = dataset.map_batches(
                _embed_remote,  # type: ignore[arg-type]
                fn_kwargs={"embedder": embedder},
                batch_size=settings.embed_batch_size,
                compute=TaskPoolStrategy(size=2),
                num_cpus=0.1,
            )
        else:  # a pool of its own for this run (batch mode: one run, many items)
            dataset = dataset.map_batches(
                ChunkEmbedder,
                fn_constructor_kwargs={"config": config.embeddings, "engine_cls": engine_cls},
                compute=ActorPoolStrategy(size=settings.embed_actors),
                batch_size=settings.embed_batch_size,
                **config.embed_actor_options(),
            )
        return {row["doc_id"]: np.asarray(row["vector"], dtype=np.float32) for row in dataset.take_all()}
    finally:
        context.enable_progress_bars = saved


def ingest_items(
    items: Sequence[Item],
    config: KnowledgeConfig,
    *,
    batch_key: str,
    store: Any = None,
    settings: NewsSettings | None = None,
    engine_cls: type | None = None,
    embedder: Any = None,
    crash_before_commit: bool = False,
) -> NewsReport:
    """Stores a batch of items under one snapshot; see the module docstring. Safe to call again with the same
    `batch_key` after a crash: it resumes the batch's open snapshot and writes nothing twice. `embedder`: a warm
    `EmbedderActor` (see `start_embedder`) instead of a pool started for this call."""
    started = time.perf_counter()
    settings = settings or NewsSettings()
    store = store or get_knowledge_store(config)
    source, fingerprint = SNAPSHOT_PREFIX + batch_key, batch_key
    record = ray.get(store.find_snapshot.remote(source, fingerprint, "open"))
    if record is None:
        committed = ray.get(store.find_snapshot.remote(source, fingerprint, "committed"))
        if committed is not None:  # a retry of a batch that committed: report what it stored then
            snap, info = committed.snapshot, committed.info or {}
            stored = int(info.get("stored", 0))
            return NewsReport(batch_key, snap.snapshot_id, snap.seq, "up_to_date", items_in=len(items), stored=stored)
    report = NewsReport(batch_key, "", 0, "committed", items_in=len(items))
    fresh = _drop_exact_duplicates(items, store, record.snapshot.snapshot_id if record else "", report)
    rows: list[dict[str, Any]] = [
        {
            "doc_id": doc_id(item, index),
            "item_id": item.item_id,
            "chunk": index,
            "text": piece,
            "embed_text": f"{item.title}. {piece}" if index == 0 else piece,
        }
        for item in fresh
        for index, piece in enumerate(chunk_text(item.text or item.title, settings.chunk_chars, settings.chunk_overlap))
    ]
    embed_started = time.perf_counter()
    vectors = _embed(rows, config, settings, engine_cls, embedder) if rows else {}
    report.embed_s = time.perf_counter() - embed_started
    kept = _drop_near_duplicates(fresh, vectors, store, settings, report)
    kept_ids = {item.item_id for item in kept}
    rows = [row for row in rows if row["item_id"] in kept_ids]
    if not kept and record is None:
        # Nothing new (a feed whose ETag changed with the same items): no snapshot, so readers' caches, keyed by
        # the latest commit, stay valid. Running the batch again finds the same duplicates.
        report.status = "nothing_new"
        report.wall_s = time.perf_counter() - started
        return report
    snapshot = record.snapshot if record else ray.get(store.begin_snapshot.remote(source, fingerprint))
    report.snapshot_id, report.seq = snapshot.snapshot_id, snapshot.seq

    nodes, edges, linked = _graph_rows(kept, store, settings)
    created = ray.get(store.upsert_batch.remote(snapshot.snapshot_id, nodes, edges))
    report.created_nodes, report.created_edges, report.linked = created["nodes"], created["edges"], linked
    by_id = {item.item_id: item for item in kept}
    payloads = [_payload(by_id[row["item_id"]], row) for row in rows]
    if rows:
        matrix = np.stack([vectors[row["doc_id"]] for row in rows])
        ids = [row["doc_id"] for row in rows]
        report.created_vectors = ray.get(
            store.upsert_documents.remote(snapshot.snapshot_id, NEWS_COLLECTION, ids, matrix, payloads)
        )
    report.chunks, report.stored, report.stored_ids = len(rows), len(kept), sorted(kept_ids)
    if crash_before_commit:
        raise SimulatedCrash(f"batch {batch_key}: written, not committed (crash_before_commit)")
    info = {"kind": "news", "items": len(items), "stored": report.stored, "chunks": report.chunks}
    info["last_run"] = {"created_nodes": report.created_nodes, "created_edges": report.created_edges}
    ray.get(store.commit_snapshot.remote(snapshot.snapshot_id, info))
    answerable = time.time()
    for item in kept:
        delay = max(0.0, answerable - item.seen_at) if item.seen_at else None
        if delay is not None:
            report.freshness_s.append(delay)
            metrics.record(metrics.INGESTION_FRESHNESS_SECONDS, delay, source=item.source)
    report.wall_s = time.perf_counter() - started
    sources = {item.source for item in items}
    metrics.record(metrics.INGESTION_RUN_SECONDS, report.wall_s, source=sources.pop() if len(sources) == 1 else "mixed")
    return report


def _drop_exact_duplicates(items: Sequence[Item], store: Any, snapshot_id: str, report: NewsReport) -> list[Item]:
    """First of each item id and content hash in the batch, and none the store holds from another snapshot."""
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    unique: list[Item] = []
    for item in items:
        if item.item_id in seen_ids or item.content_hash in seen_hashes:
            report.duplicates += 1
            continue
        seen_ids.add(item.item_id)
        seen_hashes.add(item.content_hash)
        unique.append(item)
    # Against the store by content only: a live item (a match, a quote) keeps its id while its score or price
    # changes, and each new content is a new version of it.
    stored_hashes = ray.get(
        store.existing_document_values.remote(NEWS_COLLECTION, "content_hash", [i.content_hash for i in unique])
    )
    fresh = []
    for item in unique:
        # stored by this very batch before a crash: keep it (its writes repeat as no-ops, the report counts it)
        if stored_hashes.get(item.content_hash, snapshot_id) != snapshot_id:
            report.duplicates += 1
        else:
            fresh.append(item)
    return fresh


def _drop_near_duplicates(
    items: list[Item], vectors: dict[str, np.ndarray], store: Any, settings: NewsSettings, report: NewsReport
) -> list[Item]:
    if not items:
        return []
    firsts = np.stack([vectors[doc_id(item, 0)] for item in items])
    nearest = ray.get(store.nearest_documents.remote(firsts, NEWS_COLLECTION))
    kept: list[Item] = []
    kept_rows: list[int] = []
    for index, item in enumerate(items):
        hit = nearest[index]
        near_stored = hit is not None and hit[0] != item.item_id and hit[1] >= settings.near_duplicate
        near_batch = any(float(firsts[index] @ firsts[j]) >= settings.near_duplicate for j in kept_rows)
        if near_stored or near_batch:
            report.near_duplicates += 1
            continue
        kept.append(item)
        kept_rows.append(index)
    return kept


def _graph_rows(items: list[Item], store: Any, settings: NewsSettings) -> tuple[dict, dict, int]:
    """Article nodes, the entities they mention (known to the graph, or the item's hints by category), edges."""
    candidates = {item.item_id: candidate_names(item, settings.max_candidates) for item in items}
    names = sorted({name for found in candidates.values() for name in found})
    known: dict[str, list[tuple[str, str]]] = {}
    for start in range(0, len(names), 1000):
        rows = ray.get(store.run.remote("find_entities_by_names", {"names": names[start : start + 1000]}))
        for row in rows:
            if row["label"] in LINKABLE_LABELS:
                known.setdefault(row["name"], []).append((row["id"], row["label"]))
    nodes: dict[str, dict[str, dict[str, str]]] = {}
    edges: dict[tuple[str, str, str], dict[tuple[str, str], None]] = {}
    linked = 0

    def node(label: str, node_id: str, name: str) -> None:
        nodes.setdefault(label, {})[node_id] = {"id": node_id, "name": name}

    for item in items:
        article = article_id(item)
        node("Article", article, article_name(item))
        targets: dict[str, str] = {}
        for name in candidates[item.item_id]:
            for known_id, label in known.get(name, []):
                targets[known_id] = label
        hint_label = HINT_LABELS.get(item.category)
        for name in item.entities:
            if hint_label and name.strip() and name.strip() not in known:
                hinted = node_id(hint_label, name.strip())
                node(hint_label, hinted, name.strip())
                targets[hinted] = hint_label
        for target, label in targets.items():
            edges.setdefault(("MENTIONS", "Article", label), {})[(article, target)] = None
        linked += len(targets)
    node_rows = {label: list(rows.values()) for label, rows in nodes.items()}
    edge_rows = {key: [{"src": s, "dst": d} for s, d in pairs] for key, pairs in edges.items()}
    return node_rows, edge_rows, linked


def doc_id(item: Item, chunk: int) -> str:
    """A chunk's id: the item, its content version (a live item's new score is a new version) and the chunk."""
    return f"{item.item_id}:{item.content_hash[:12]}:{chunk}"


def article_name(item: Item) -> str:
    """An Article node's name: its title, made unique by the item id (two stories may share a headline)."""
    return f"{item.title} #{item.item_id[:12]}"


def article_id(item: Item) -> str:
    return node_id("Article", article_name(item))


def _payload(item: Item, row: dict[str, Any]) -> dict[str, Any]:
    published = item.published if item.published is not None else item.seen_at
    return {
        "item_id": item.item_id,
        "source": item.source,
        "category": item.category,
        "title": item.title,
        "text": row["text"],
        "url": item.url,
        "published": float(published),
        "seen_at": float(item.seen_at),
        "entities": list(item.entities),
        "chunk": int(row["chunk"]),
        "content_hash": item.content_hash,
        "truncated": item.truncated,
    }


def item_to_dict(item: Item) -> dict[str, Any]:
    """An item as JSON-ready data (the scheduler's inbox files)."""
    return asdict(item)


def item_from_dict(data: dict[str, Any]) -> Item:
    return Item(**{**data, "entities": tuple(data.get("entities", ()))})
