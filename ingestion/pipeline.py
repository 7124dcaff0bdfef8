"""The ingestion pipeline shared by every graph source, on Ray Data.

In: a source name and a fingerprint of what it ingests, a list of batch specs, and `load(spec) -> GraphBatch`.
Stages: load+parse (tasks) -> nodes/edges through the KnowledgeStore actor (tasks) -> embed new entity names
(`EntityEmbedder`, an actor pool) -> their vectors through the actor, then the batch's checkpoint (tasks). Out: an
`IngestReport`.

Everything one run writes carries one snapshot. A run that finds an open snapshot of the same source and
fingerprint resumes it, skipping the batches it checkpointed; one that finds a committed one does nothing unless
`force`. MERGE makes a repeated batch create nothing, so a crash between a write and its checkpoint is harmless.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from actors.knowledge_store import get_knowledge_store
from almquist.config.knowledge import KnowledgeConfig
from ingestion.batches import GraphBatch, SimulatedCrash
from ingestion.embedder import EntityEmbedder


@dataclass
class IngestReport:
    """What one run did: a resumed run counts (and reports the errors of) only the batches it wrote."""

    source: str
    snapshot_id: str
    seq: int
    status: str  # "committed" | "up_to_date"
    batches: int = 0  # batches this run wrote
    resumed_batches: int = 0  # batches an earlier, interrupted run had checkpointed
    lines: int = 0
    created_nodes: int = 0
    created_edges: int = 0
    created_vectors: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass(frozen=True)
class Source:
    """What to ingest: `specs[i]` is batch i's description; `load(spec)` turns it into a `GraphBatch`."""

    name: str
    fingerprint: str
    specs: Sequence[Any]
    load: Callable[[Any], GraphBatch]
    lines: Sequence[int]  # progress units per batch
    unit: str = "line"


def run_pipeline(
    source: Source,
    config: KnowledgeConfig,
    *,
    store: Any = None,
    force: bool = False,
    progress: bool = True,
    crash_after_batches: int | None = None,
    engine_cls: type | None = None,
) -> IngestReport:
    """Ingests `source` into the knowledge store of `config` (or the actor `store`); see the module docstring.

    `engine_cls` replaces the embedding engine (default `SentenceTransformerEngine`); `crash_after_batches` makes the
    driver raise `SimulatedCrash` once that many batches are done (tests).
    """
    started = time.perf_counter()
    store = store or get_knowledge_store(config)
    record = ray.get(store.find_snapshot.remote(source.name, source.fingerprint, "open"))
    if record is None and not force:
        committed = ray.get(store.find_snapshot.remote(source.name, source.fingerprint, "committed"))
        if committed is not None:
            snap = committed.snapshot
            return IngestReport(source.name, snap.snapshot_id, snap.seq, "up_to_date", wall_s=_since(started))
    if record is not None:
        snapshot, done = record.snapshot, set(record.done_batches)
    else:
        snapshot, done = ray.get(store.begin_snapshot.remote(source.name, source.fingerprint)), set()
    report = IngestReport(source.name, snapshot.snapshot_id, snapshot.seq, "committed", resumed_batches=len(done))
    todo = [i for i in range(len(source.specs)) if i not in done]
    total, initial = sum(source.lines), sum(source.lines[i] for i in done)
    with _ray_data_settings(), _progress_bar(total, initial, source, progress) as bar:
        if todo:
            for item in _dataset(source, todo, store, snapshot.snapshot_id, config, engine_cls).iter_rows():
                batch: GraphBatch = item["item"]
                report.batches += 1
                report.lines += batch.lines
                report.created_nodes += batch.created_nodes
                report.created_edges += batch.created_edges
                report.created_vectors += batch.created_vectors
                report.errors.extend(batch.errors)
                bar.update(batch.lines)
                if crash_after_batches is not None and report.batches >= crash_after_batches:
                    raise SimulatedCrash(f"stopped after {report.batches} batches (crash_after_batches)")
    created = {key: getattr(report, key) for key in ("created_nodes", "created_edges", "created_vectors")}
    info: dict[str, Any] = {"batches": len(source.specs), "lines": total, "resumed_batches": report.resumed_batches}
    info |= {"last_run": {**created, "errors": len(report.errors)}}
    ray.get(store.commit_snapshot.remote(snapshot.snapshot_id, info))
    report.wall_s = _since(started)
    return report


def _dataset(
    source: Source, todo: list[int], store: Any, snapshot_id: str, config: KnowledgeConfig, engine_cls: type | None
) -> ray.data.Dataset:
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    collection = config.vectors.collection
    # thin stages mostly wait on the store actor, leaving CPUs to the embedding actors; load and graph writes have
    # the same settings so Ray Data fuses them into one task (fewer worker processes to start)
    thin: dict[str, Any] = {"batch_size": 1, "num_cpus": 0.25, "compute": TaskPoolStrategy(size=2)}
    specs = ray.data.from_items([{"item": source.specs[i]} for i in todo], override_num_blocks=len(todo))
    # Ray types map_batches' function as taking the batch alone; fn_kwargs passes the rest
    return (
        specs.map_batches(_load, fn_kwargs={"load": source.load}, **thin)  # type: ignore[arg-type]
        .map_batches(
            _write_graph,  # type: ignore[arg-type]
            fn_kwargs={"store": store, "snapshot_id": snapshot_id, "collection": collection},
            **thin,
        )
        .map_batches(
            EntityEmbedder,
            fn_constructor_kwargs={"config": config.embeddings, "engine_cls": engine_cls},
            compute=ActorPoolStrategy(size=config.embed_actors),
            batch_size=1,
            **config.embed_actor_options(),
        )
        .map_batches(
            _write_vectors,  # type: ignore[arg-type]
            fn_kwargs={"store": store, "snapshot_id": snapshot_id, "collection": collection},
            **thin,
        )
    )


def _load(batch: dict[str, np.ndarray], load: Callable[[Any], GraphBatch]) -> dict[str, np.ndarray]:
    return {"item": np.array([load(spec) for spec in batch["item"]], dtype=object)}


def _write_graph(batch: dict[str, np.ndarray], store: Any, snapshot_id: str, collection: str) -> dict[str, np.ndarray]:
    items: list[GraphBatch] = list(batch["item"])
    for item in items:
        created = ray.get(store.upsert_batch.remote(snapshot_id, item.node_rows(), item.edge_rows()))
        item.created_nodes, item.created_edges = created["nodes"], created["edges"]
        entities = item.entities()
        item.embed_ids = ray.get(store.missing_vectors.remote(list(entities), collection))
        item.embed_names = [entities[i] for i in item.embed_ids]
    return {"item": np.array(items, dtype=object)}


def _write_vectors(
    batch: dict[str, np.ndarray], store: Any, snapshot_id: str, collection: str
) -> dict[str, np.ndarray]:
    items: list[GraphBatch] = list(batch["item"])
    for item in items:
        vectors = item.vectors if item.vectors is not None else np.zeros((0, 0), dtype=np.float32)
        item.created_vectors = ray.get(
            store.finish_batch.remote(snapshot_id, item.batch, item.embed_ids, item.embed_names, vectors, collection)
        )
        item.vectors = None  # the driver needs counts, not vectors
    return {"item": np.array(items, dtype=object)}


@contextlib.contextmanager
def _ray_data_settings() -> Iterator[None]:
    """For one run: our progress bar instead of Ray Data's; GraphBatch rows declared as Python objects (rather than
    have Ray Data try Arrow first and warn); batches handed back in order, so that when the driver stops after k
    batches, the first k are the ones checkpointed (execution stays parallel)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    options = context.execution_options
    saved = context.enable_progress_bars, context.enable_fallback_to_arrow_object_ext_type, options.preserve_order
    context.enable_progress_bars, context.enable_fallback_to_arrow_object_ext_type = False, True
    options.preserve_order = True
    try:
        yield
    finally:
        context.enable_progress_bars, context.enable_fallback_to_arrow_object_ext_type, options.preserve_order = saved


def _progress_bar(total: int, initial: int, source: Source, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"ingest {source.name}", unit=source.unit, disable=not enabled)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
