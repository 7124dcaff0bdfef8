"""Real-time items through the news pipeline (ingestion/news.py) into the KnowledgeStore actor on a local Ray:
duplicates (same URL, same words, a near-identical rewording) are stored once, entities are linked to what the
graph knows and hints become Teams, a batch retried after a crash writes nothing twice, and stored chunks are found
by meaning with their time."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from actors.knowledge_store import get_knowledge_store, release_knowledge_store
from almquist.config.knowledge import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from almquist.stores.schema import NEWS_COLLECTION
from deployments.embeddings import SentenceTransformerEngine
from ingestion.batches import SimulatedCrash
from ingestion.news import NewsReport, article_id, candidate_names, chunk_text, ingest_items
from ingestion.sources.model import Item, item_id_for

NOW = time.time()


def item(key: str, title: str, text: str, category: str = "news", entities: tuple[str, ...] = (), **kw) -> Item:
    return Item(
        source=kw.pop("source", "wire"),
        category=category,
        item_id=kw.pop("item_id", item_id_for("url", f"https://example.org/{key}")),
        title=title,
        text=text,
        url=f"https://example.org/{key}",
        published=NOW - 60,
        seen_at=NOW - 30,
        entities=entities,
        **kw,
    )


HANKS = item(
    "hanks", "Tom Hanks joins a space drama", "Tom Hanks will star in a new space drama, the studio said on Monday."
)
HANKS_AGAIN_URL = item("hanks", "Tom Hanks joins a space drama (updated)", "Same story, updated later.")
HANKS_SAME_WORDS = item(  # other URL, same words up to case and spacing
    "hanks-copy",
    "Tom Hanks joins a  SPACE drama",
    "Tom Hanks will star in a new space drama, the studio said on  Monday.",
)
HANKS_REWORDED = item(
    "hanks-reworded",
    "Tom Hanks joins a space drama!",
    "Tom Hanks will star in a new space drama, the studio said on Monday!",
)
DERBY = item(
    "derby",
    "Arsenal 2-1 Chelsea",
    "Arsenal beat Chelsea 2-1 in the London derby on Sunday evening.",
    category="sports",
    entities=("Arsenal", "Chelsea"),
    source="scores",
    item_id=item_id_for("scores", "match-991"),
)
WEATHER = item("weather", "Berlin: light rain, 7 C", "Light rain in Berlin with 7 degrees and wind 12 km/h.", "weather")


@pytest.fixture(scope="module")
def store(local_ray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KnowledgeConfig, object]]:
    root: Path = tmp_path_factory.mktemp("news-kb")
    config = KnowledgeConfig(graph=GraphStoreConfig(path=root / "graph"), vectors=VectorStoreConfig(path=root / "q"))
    actor = get_knowledge_store(config)
    # the graph already knows a person and a movie (as MetaQA would have loaded them)
    snapshot = ray.get(actor.begin_snapshot.remote("seed"))
    nodes = {
        "Person": [{"id": "Person:Tom Hanks", "name": "Tom Hanks"}],
        "Movie": [{"id": "Movie:Cast Away", "name": "Cast Away"}],
    }
    ray.get(actor.upsert_batch.remote(snapshot.snapshot_id, nodes, {}))
    ray.get(actor.commit_snapshot.remote(snapshot.snapshot_id))
    yield config, actor
    release_knowledge_store(config)


def graph_counts(actor) -> dict[str, int]:
    return ray.get(actor.stats.remote())["graph"]


def test_chunks_cover_the_text_with_overlap():
    text = " ".join(f"Sentence number {i} says something." for i in range(80))
    pieces = chunk_text(text, 300, 50)
    assert len(pieces) > 5 and all(len(p) <= 300 for p in pieces)
    assert pieces[0].startswith("Sentence number 0") and pieces[-1].endswith("number 79 says something.")
    for before, after in itertools.pairwise(pieces):
        assert before[-20:].split()[-1] in after  # the overlap repeats the end of the previous piece
    assert chunk_text("short", 300, 50) == ["short"] and chunk_text("   ", 300, 50) == []


def test_candidate_names_start_with_hints_then_capitalised_phrases():
    names = candidate_names(DERBY, 50)
    assert names[:2] == ["Arsenal", "Chelsea"]
    assert "London" in names
    assert "Tom Hanks" in candidate_names(HANKS, 50) and "Tom" in candidate_names(HANKS, 50)


def test_a_batch_is_stored_once_deduplicated_and_linked(store):
    config, actor = store
    before = graph_counts(actor)
    items = [HANKS, HANKS_AGAIN_URL, HANKS_SAME_WORDS, HANKS_REWORDED, DERBY, WEATHER]
    report = ingest_items(items, config, batch_key="wire-1", store=actor)
    assert report.status == "committed" and report.items_in == 6
    assert (report.duplicates, report.near_duplicates, report.stored) == (2, 1, 3)
    assert report.stored_ids == sorted([HANKS.item_id, DERBY.item_id, WEATHER.item_id])
    after = graph_counts(actor)
    assert after["Article"] - before.get("Article", 0) == 3
    assert after["Team"] - before.get("Team", 0) == 2  # the sports item's hints became teams
    mentions = ray.get(actor.run.remote("expand_out", {"ids": [article_id(HANKS)], "rel": "MENTIONS"}))
    assert {row["dst"] for row in mentions} >= {"Person:Tom Hanks"}
    # seen 30 s before NOW (set when the module was collected, which may be long before this test runs):
    # freshness is from then to the commit, so at least 30 s and at most the time since then
    since_seen = time.time() - (NOW - 30)
    assert len(report.freshness_s) == 3 and all(25 <= f <= since_seen for f in report.freshness_s)
    # the same batch again: its snapshot is committed, nothing runs
    again = ingest_items(items, config, batch_key="wire-1", store=actor)
    assert again.status == "up_to_date" and graph_counts(actor) == after
    # the same items in a later batch: all duplicates of stored ones
    snapshots = len(ray.get(actor.list_snapshots.remote()))
    later = ingest_items([HANKS, DERBY], config, batch_key="wire-2", store=actor)
    assert (later.status, later.duplicates, later.stored, later.created_vectors) == ("nothing_new", 2, 0, 0)
    assert graph_counts(actor) == after
    assert len(ray.get(actor.list_snapshots.remote())) == snapshots  # no empty snapshot for a batch of duplicates


def test_stored_chunks_are_found_by_meaning_with_their_time(store):
    config, actor = store
    [vector] = SentenceTransformerEngine(config.embeddings).embed(["who won the Arsenal game?"], normalize=True)
    hits = ray.get(actor.search_documents.remote(np.asarray(vector), NEWS_COLLECTION, 3))
    assert hits[0]["item_id"] == DERBY.item_id and hits[0]["category"] == "sports"
    assert hits[0]["published"] == pytest.approx(DERBY.published) and hits[0]["url"].endswith("/derby")
    recent = ray.get(actor.search_documents.remote(np.asarray(vector), NEWS_COLLECTION, 10, None, NOW + 10))
    assert recent == []  # nothing published after now


def test_a_batch_retried_after_a_crash_writes_nothing_twice(store):
    config, actor = store
    story = item("premiere", "Cast Away returns to cinemas", "Cast Away returns to cinemas for its anniversary.")
    with pytest.raises(SimulatedCrash):
        ingest_items([story], config, batch_key="wire-3", store=actor, crash_before_commit=True)
    written = ray.get(actor.stats.remote())
    report: NewsReport = ingest_items([story], config, batch_key="wire-3", store=actor)
    assert report.status == "committed" and report.stored == 1 and report.duplicates == 0
    assert report.created_vectors == 0 and report.created_nodes == 0  # all written before the crash
    assert ray.get(actor.stats.remote())["vectors"] == written["vectors"]
    hanks_article = ray.get(actor.run.remote("expand_out", {"ids": [article_id(story)], "rel": "MENTIONS"}))
    assert {row["dst"] for row in hanks_article} == {"Movie:Cast Away"}


def test_a_live_item_with_new_content_is_a_new_version(store):
    config, actor = store
    update = item(
        "derby",
        "Arsenal 3-1 Chelsea",
        "Arsenal beat Chelsea 3-1 in the London derby after a late goal.",
        category="sports",
        entities=("Arsenal", "Chelsea"),
        source="scores",
        item_id=DERBY.item_id,  # the same match: the feed keeps its id while the score changes
    )
    report = ingest_items([update], config, batch_key="scores-2", store=actor)
    assert (report.stored, report.duplicates, report.near_duplicates) == (1, 0, 0)
    [vector] = SentenceTransformerEngine(config.embeddings).embed(["Arsenal Chelsea score"], normalize=True)
    hits = ray.get(actor.search_documents.remote(np.asarray(vector), NEWS_COLLECTION, 5, {"item_id": DERBY.item_id}))
    assert {hit["title"] for hit in hits} == {"Arsenal 2-1 Chelsea", "Arsenal 3-1 Chelsea"}


def test_batch_mode_from_the_command_line(tmp_path):
    """`python -m ingestion feeds` (what `almquist ingest` runs): one poll of each source, ingested, a health table;
    run again, the drop folder has nothing new and nothing is stored twice."""
    import json
    import shutil
    import subprocess
    import sys

    drop = tmp_path / "drop"
    shutil.copytree(Path(__file__).parent / "fixtures" / "feeds" / "drop", drop)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - name: city-drop\n    kind: folder\n    path: {drop}\n")
    knowledge = {"graph": {"path": str(tmp_path / "graph")}, "vectors": {"path": str(tmp_path / "q")}}
    command = [sys.executable, "-m", "ingestion", "--knowledge", json.dumps(knowledge), "feeds", str(sources)]
    command += ["--state-dir", str(tmp_path / "state")]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**env, "COLUMNS": "200"})
    assert first.returncode == 0, first.stderr[-3000:]
    row = next(line for line in first.stdout.splitlines() if "city-drop" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    seen, stored = int(cells[1]), int(cells[2])
    assert stored == seen >= 3 and int(cells[5]) >= 2, first.stdout  # good records stored; bad lines reported
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**env, "COLUMNS": "200"})
    assert second.returncode == 0, second.stderr[-3000:]
    row = next(line for line in second.stdout.splitlines() if "city-drop" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert (int(cells[1]), int(cells[2]), int(cells[4])) == (seen, stored, 1)  # counts kept; one "no new files"
