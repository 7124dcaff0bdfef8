"""The FeedScheduler's bookkeeping without the network: items reach the inbox before the cursor moves, a failed
batch stays for the next drain (by the same or a new scheduler on the same state folder), 304s cause no work, one
failing source backs off without holding up the others, and an item's appearance time is estimated as documented.
(tests/test_feeds_live.py runs it as a Ray actor against a local HTTP server and the real pipeline.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingestion.feed_scheduler import FeedScheduler
from ingestion.news import NewsReport
from ingestion.sources.model import Cursor, FetchResult, Item, ItemError, SourceConfig, item_id_for

GOOD = SourceConfig(name="good", kind="rss", url="http://feeds.invalid/good.xml", poll_interval_s=60)
BAD = SourceConfig(name="bad-feed", kind="rss", url="http://feeds.invalid/bad.xml", poll_interval_s=10)


class FakeNetwork:
    """Answers fetches from a script per source; records the cursor each fetch was given."""

    def __init__(self) -> None:
        self.responses: dict[str, list[FetchResult]] = {"good": [], "bad-feed": []}
        self.cursors: dict[str, list[Cursor]] = {"good": [], "bad-feed": []}

    def fetch(self, config: SourceConfig, cursor: Cursor, secrets: Any = None) -> FetchResult:
        self.cursors[config.name].append(cursor)
        script = self.responses[config.name]
        if not script:
            raise RuntimeError("connection reset by the test")
        return script.pop(0)


def parse(config: SourceConfig, result: FetchResult, seen_at: float) -> tuple[list[Item], list[ItemError]]:
    items, errors = [], []
    for n, line in enumerate(result.body.decode().splitlines()):
        if line == "garbage":
            errors.append(ItemError(config.name, f"item {n}", "not an item"))
        else:
            items.append(Item(config.name, config.category, item_id_for(config.name, line), line, line, published=1e9))
    return items, errors


class RecordingIngest:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[str]]] = []
        self.fail = False

    def __call__(self, items: list[Item], knowledge: Any, *, batch_key: str) -> NewsReport:
        if self.fail:
            raise RuntimeError("the pipeline died")
        self.batches.append((batch_key, [item.title for item in items]))
        return NewsReport(batch_key, "s1", 1, "committed", items_in=len(items), stored=len(items))


def new(body: str, etag: str) -> FetchResult:
    return FetchResult(status="new", body=body.encode(), cursor=Cursor(etag=etag))


def scheduler(state: Path, network: FakeNetwork, ingest: RecordingIngest) -> FeedScheduler:
    return FeedScheduler([GOOD, BAD], state, fetch_fn=network.fetch, parse_fn=parse, ingest_fn=ingest)


def test_items_are_ingested_and_the_cursor_is_sent_back(tmp_path):
    network, ingest = FakeNetwork(), RecordingIngest()
    network.responses["good"] = [new("a\ngarbage\nb", "v1"), FetchResult(status="not_modified", cursor=Cursor("v1"))]
    feeds = scheduler(tmp_path, network, ingest)
    health = feeds.poll_once("good", now=1000.0)
    assert [titles for _, titles in ingest.batches] == [["a", "b"]]
    assert (health["items_seen"], health["items_stored"], health["item_errors"]) == (2, 2, 1)
    assert health["recent_item_errors"] == ["item 1: not an item"] and health["next_poll_at"] == 1060.0
    health = feeds.poll_once("good", now=1060.0)
    assert network.cursors["good"] == [Cursor(), Cursor(etag="v1")]  # a conditional request the second time
    assert health["not_modified"] == 1 and len(ingest.batches) == 1  # a 304 is no work
    assert feeds.pending_batches() == []


def test_a_failing_source_backs_off_and_the_others_go_on(tmp_path):
    network, ingest = FakeNetwork(), RecordingIngest()
    network.responses["bad-feed"] = [FetchResult(status="error", error="HTTP 500 from http://feeds.invalid/bad.xml")]
    network.responses["good"] = [new("fresh", "v1")]
    feeds = scheduler(tmp_path, network, ingest)
    bad = feeds.poll_once("bad-feed", now=0.0)
    assert bad["consecutive_errors"] == 1 and bad["next_poll_at"] == 20.0 and "HTTP 500" in bad["last_error"]
    bad = feeds.poll_once("bad-feed", now=20.0)  # the script is empty now: the fetch raises
    assert bad["consecutive_errors"] == 2 and bad["next_poll_at"] == 60.0 and "connection reset" in bad["last_error"]
    for _ in range(10):
        bad = feeds.poll_once("bad-feed", now=100.0)
    assert bad["next_poll_at"] == 100.0 + 3600.0  # capped at max_backoff_s
    assert feeds.poll_once("good", now=100.0)["items_stored"] == 1
    assert feeds.due(now=200.0) == ["good"]


def test_a_batch_that_fails_stays_in_the_inbox_for_a_new_scheduler(tmp_path):
    network, ingest = FakeNetwork(), RecordingIngest()
    network.responses["good"] = [new("x\ny", "v2")]
    ingest.fail = True
    feeds = scheduler(tmp_path, network, ingest)
    health = feeds.poll_once("good", now=5.0)
    assert "the pipeline died" in health["last_error"] and health["items_stored"] == 0
    [pending] = feeds.pending_batches()
    assert pending.startswith("good-")
    # the process dies; a new scheduler on the same folder has the cursor and the batch
    ingest.fail = False
    again = scheduler(tmp_path, network, ingest)
    assert again.pending_batches() == [pending]
    reports = again.drain()
    assert [r["batch_key"] for r in reports] == [pending] and ingest.batches == [(pending, ["x", "y"])]
    network.responses["good"] = [FetchResult(status="not_modified", cursor=Cursor("v2"))]
    again.poll_once("good", now=70.0)
    assert network.cursors["good"][-1] == Cursor(etag="v2")  # the cursor persisted before the crash
    assert again.health()["good"]["items_stored"] == 2


def test_appearance_time_is_the_publication_only_when_it_is_since_the_last_poll(tmp_path):
    network, ingest = FakeNetwork(), RecordingIngest()
    seen: list[float] = []

    def keep(items: list[Item], knowledge: Any, *, batch_key: str) -> NewsReport:
        seen.extend(item.seen_at for item in items)
        return ingest(items, knowledge, batch_key=batch_key)

    feeds = FeedScheduler([GOOD], tmp_path, fetch_fn=network.fetch, parse_fn=parse, ingest_fn=keep)
    network.responses["good"] = [new("first", "v1"), new("second", "v2")]
    feeds.poll_once("good", now=0.9e9)  # first poll: published (1e9) is in the future of this clock -> poll time
    feeds.poll_once("good", now=1.1e9)  # published 1e9 falls since the previous poll (0.9e9) -> publication time
    assert seen == [0.9e9, 1e9]


def test_unknown_sources_and_duplicate_names_are_refused(tmp_path):
    network, ingest = FakeNetwork(), RecordingIngest()
    feeds = scheduler(tmp_path, network, ingest)
    with pytest.raises(KeyError, match="unknown source 'nope'"):
        feeds.poll_once("nope")
    with pytest.raises(ValueError, match="unique"):
        FeedScheduler([GOOD, GOOD], tmp_path, fetch_fn=network.fetch, parse_fn=parse, ingest_fn=ingest)
