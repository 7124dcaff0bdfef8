"""Ingestion on a local Ray: MetaQA's kb.txt (a slice with one malformed line) and Neo4j's movies.cypher through
the Ray Data pipeline into the KnowledgeStore actor: counts match the reference, a malformed line is reported, a
second run creates nothing, a run that crashes after some batches resumes to exactly a clean run's counts, and a
rollback restores the previous counts of both stores.

Each pipeline that embeds starts an actor that imports sentence-transformers (~10 s on 2 cores), so the tests share
one store and the crash is simulated on the movies graph ingested on top of the MetaQA slice."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import ray

from actors.knowledge_store import get_knowledge_store, knowledge_store_name, release_knowledge_store
from almquist.config.knowledge import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from almquist.errors import InvalidArgument
from ingestion.batches import SimulatedCrash
from ingestion.metaqa import default_kb, ingest_metaqa, parse_lines, plan_batches
from ingestion.neo4j_movies import default_movies, ingest_movies, parse_movies, to_batches
from tests.test_stores import Reference

SLICE_LINES = 1000
BAD_LINE = 617  # where the slice gets a malformed line
BATCH = 250


@pytest.fixture(scope="module")
def kb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with open(default_kb(), "rb") as f:
        lines = list(itertools.islice(f, SLICE_LINES))
    lines.insert(BAD_LINE - 1, b"Some Movie|directed_by\n")
    path = tmp_path_factory.mktemp("kb") / "kb_slice.txt"
    path.write_bytes(b"".join(lines))
    return path


def store_config(root: Path) -> KnowledgeConfig:
    return KnowledgeConfig(
        graph=GraphStoreConfig(path=root / "graph"), vectors=VectorStoreConfig(path=root / "qdrant"), batch_size=BATCH
    )


def stats(config: KnowledgeConfig) -> dict:
    return ray.get(get_knowledge_store(config).stats.remote())


@pytest.fixture(scope="module")
def ingested(local_ray, kb_file: Path, tmp_path_factory: pytest.TempPathFactory):
    config = store_config(tmp_path_factory.mktemp("clean"))
    report = ingest_metaqa(kb_file, config, progress=False)
    yield config, report
    release_knowledge_store(config)


def reference(kb_file: Path) -> Reference:
    return Reference(parse_lines(kb_file.read_bytes(), 0, 1, kb_file.name))


def test_ingest_matches_the_reference_and_reports_the_bad_line(ingested, kb_file: Path):
    config, report = ingested
    ref = reference(kb_file)
    assert report.status == "committed" and report.batches == len(plan_batches(kb_file, BATCH)[0]) == 5
    assert report.lines == SLICE_LINES + 1
    assert report.errors == [
        f"kb_slice.txt:{BAD_LINE}: expected head|relation|tail (3 fields), found 2: 'Some Movie|directed_by'"
    ]
    assert stats(config)["graph"] == ref.counts()
    assert stats(config)["vectors"] == {"entities": len(ref.nodes)}
    created = (report.created_nodes, report.created_edges, report.created_vectors)
    assert created == (len(ref.nodes), len(ref.edges), len(ref.nodes))
    store = get_knowledge_store(config)
    movies = sorted(i for i, (_, label) in ref.nodes.items() if label == "Movie")[:25]
    rows = ray.get(store.run.remote("expand_out", {"ids": movies, "rel": "STARS"}))
    assert rows == ref.expand(movies, "STARS", "out")


def test_vectors_are_name_embeddings_stamped_and_searchable(ingested):
    config, report = ingested
    store = get_knowledge_store(config)
    twins = ["Movie:1984", "Year:1984"]  # one name, two entities: one embedding
    vectors = ray.get(store.vectors.remote(twins))
    assert vectors["Movie:1984"].shape == (384,) and np.linalg.norm(vectors["Movie:1984"]) == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(vectors["Movie:1984"], vectors["Year:1984"], atol=1e-6)
    hits = ray.get(store.search.remote(vectors["Movie:1984"], 2, "Year"))
    assert hits[0].id == "Year:1984" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert ray.get(store.search.remote(vectors["Movie:1984"], 1, None, report.seq - 1)) == []


def test_second_run_creates_nothing(ingested, kb_file: Path):
    config, first = ingested
    before = stats(config)
    again = ingest_metaqa(kb_file, config, progress=False)
    assert again.status == "up_to_date" and again.snapshot_id == first.snapshot_id
    forced = ingest_metaqa(kb_file, config, progress=False, force=True)
    assert forced.status == "committed" and forced.seq == first.seq + 1
    assert (forced.created_nodes, forced.created_edges, forced.created_vectors) == (0, 0, 0)
    after = stats(config)
    assert after["graph"] == before["graph"] and after["vectors"] == before["vectors"]


def test_crash_resume_then_rollback_of_the_movies_graph(ingested, kb_file: Path):
    config, _ = ingested
    before = stats(config)
    movies = parse_movies(default_movies().read_text(encoding="utf-8"))
    assert not movies.errors and len(movies.edges) == 253 + 38  # the file's relationships + RELEASED_IN
    batches = to_batches(movies, 100)
    expected = Reference(parse_lines(kb_file.read_bytes(), 0, 1, kb_file.name), *batches)

    with pytest.raises(SimulatedCrash):
        ingest_movies(default_movies(), config, batch_size=100, progress=False, crash_after_batches=1)
    store = get_knowledge_store(config)
    crashed = ray.get(store.list_snapshots.remote())[-1]
    assert crashed["status"] == "open" and 0 in crashed["done_batches"]  # batches come back in order
    resumed = ingest_movies(default_movies(), config, batch_size=100, progress=False)
    assert resumed.snapshot_id == crashed["snapshot_id"] and resumed.resumed_batches >= 1
    assert resumed.batches + resumed.resumed_batches == len(batches) == 3
    clean_like = stats(config)
    assert clean_like["graph"] == expected.counts()
    assert clean_like["vectors"] == {"entities": len(expected.nodes)}
    rows = ray.get(store.run.remote("expand_in", {"ids": ["Movie:The Matrix"], "rel": "ACTED_IN"}))
    assert {r["dst_name"] for r in rows} >= {"Keanu Reeves", "Carrie-Anne Moss", "Laurence Fishburne"}

    removed = ray.get(store.rollback.remote(resumed.snapshot_id))
    after = stats(config)
    assert after["graph"] == before["graph"] and after["vectors"] == before["vectors"]
    assert removed["vectors"] == clean_like["vectors"]["entities"] - before["vectors"]["entities"]
    assert [s["status"] for s in ray.get(store.list_snapshots.remote())][-1] == "rolled_back"


def test_one_actor_per_store_path(ingested, tmp_path: Path):
    config, _ = ingested
    assert get_knowledge_store(config)._actor_id == get_knowledge_store(config)._actor_id
    other = store_config(tmp_path)
    assert knowledge_store_name(other) != knowledge_store_name(config)


def test_bad_options_and_batches_split_the_way_the_source_says(kb_file: Path):
    with pytest.raises(InvalidArgument, match="limit must be positive"):
        ingest_metaqa(kb_file, limit=0)
    ranges, fingerprint = plan_batches(kb_file, 300, limit=700)
    assert [(r.first_line, r.lines) for r in ranges] == [(1, 300), (301, 300), (601, 100)]
    assert fingerprint != plan_batches(kb_file, 300, limit=600)[1]
    batches = to_batches(parse_movies(default_movies().read_text(encoding="utf-8")), 100)
    assert [b.batch for b in batches] == [0, 1, 2] and len(batches[0].nodes["Movie"]) == 38
