"""Real-time knowledge end to end: a local HTTP server serves fixture feeds (BBC-shaped RSS, an ESPN-shaped
scoreboard, and an HTML page where a feed should be), the FeedScheduler actor polls them into the deployed stack's
knowledge base, and questions over gRPC are answered from the items, citing them with their time. Then the feeds
change: new items become answerable, a 304 causes no work, the broken source stops nobody, and the scheduler killed
in the middle of a batch and started again loses no item and stores none twice. Freshness and run time show up on
Ray's Prometheus endpoint. The module rolls its snapshots back, leaving the knowledge base as it found it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from actors.knowledge_store import get_knowledge_store
from almquist.client import Client
from almquist.config.knowledge import KnowledgeConfig
from almquist.stores.schema import NEWS_COLLECTION
from ingestion.feed_scheduler import FeedSchedulerActor
from ingestion.news import SNAPSHOT_PREFIX
from ingestion.sources.model import SourceConfig
from ingestion.sources.parse import load_sources
from tests.feed_server import FEEDS, Server, running_server
from tests.prometheus import settled, total

pytestmark = pytest.mark.serve
EXAMPLES = Path(__file__).parent.parent / "ingestion" / "sources" / "examples"
NEW_STORY = """        <item>
            <title><![CDATA[Museum unveils a lost Vermeer sketch]]></title>
            <description><![CDATA[<p>The Rijksmuseum in Amsterdam showed a Vermeer sketch found in an attic.</p>]]>
            </description>
            <link>https://www.bbc.co.uk/news/articles/vermeer001</link>
            <pubDate>{date}</pubDate>
        </item>
"""


STORY = """        <item>
            <title><![CDATA[{title}]]></title>
            <description><![CDATA[<p>{text}</p>]]></description>
            <link>https://www.bbc.co.uk/news/articles/{slug}</link>
            <pubDate>{date}</pubDate>
        </item>
"""
SUBJECTS = ("A jazz trio", "The city council", "A rowing club", "Two astronomers", "A bakery chain",
            "The national orchestra", "A chess prodigy", "Wildlife rangers")  # fmt: skip
PLACES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Quito")
DEEDS = ("opens a festival of", "votes on a plan for", "wins a prize for", "spots a comet near", "recalls a batch of")
THINGS = ("folk music", "cycle lanes", "river races", "the moon", "sourdough loaves", "winter concerts",
          "endgame studies", "rhino calves")  # fmt: skip


def distinct_stories(count: int) -> list[tuple[str, str]]:
    """Stories that differ in subject, place and deed: no two are near-duplicates of each other."""
    stories = []
    for n in range(count):
        subject, place = SUBJECTS[n % len(SUBJECTS)], PLACES[n // len(SUBJECTS) % len(PLACES)]
        deed, thing = DEEDS[(n * 3) % len(DEEDS)], THINGS[(n * 5) % len(THINGS)]
        stories.append((f"{subject} in {place} {deed} {thing}", f"{subject} in {place} {deed} {thing}, reports say."))
    return stories


@dataclass
class Feeds:
    server: Server
    scheduler: object
    config: KnowledgeConfig
    state_dir: Path
    sources: list[SourceConfig]
    client: Client


def rss_date(epoch: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(epoch))


def news_snapshots(config: KnowledgeConfig) -> list[dict]:
    records = ray.get(get_knowledge_store(config).list_snapshots.remote())
    return [r for r in records if r["source"].startswith(SNAPSHOT_PREFIX)]


def news_chunks(config: KnowledgeConfig) -> int:
    return ray.get(get_knowledge_store(config).stats.remote())["vectors"].get(NEWS_COLLECTION, 0)


def start(feeds_state: Path, sources: list[SourceConfig], config: KnowledgeConfig, name: str):
    actor = FeedSchedulerActor.options(name=name, namespace="feeds-test", max_restarts=0).remote(
        sources, str(feeds_state), config.model_dump(mode="json")
    )
    ray.get(actor.health.remote())
    return actor


def answer(client: Client, question: str) -> tuple[list, str, str]:
    """(citations, route, text) of one AskStream turn."""
    citations, route, text = [], "", []
    for event in client.ask_stream(question, max_tokens=24):
        kind = event.WhichOneof("event")
        if kind == "citation":
            citations.append(event.citation)
        elif kind == "turn_started":
            route = f"{event.turn_started.route}:{event.turn_started.intent}"
        elif kind == "token":
            text.append(event.token.text)
    return citations, route, "".join(text)


@pytest.fixture(scope="module")
def feeds(serve_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feeds]:
    config = KnowledgeConfig.model_validate(serve_stack.knowledge)
    store = get_knowledge_store(config)
    before = {r["snapshot_id"] for r in ray.get(store.list_snapshots.remote())}
    with running_server() as server:
        server.state.serve("/bbc.xml", "bbc_news.rss", "application/rss+xml; charset=utf-8")
        server.state.serve("/scores.json", "espn_scoreboard.json", "application/json")
        server.state.serve("/broken.xml", "not_a_feed.html", "text/html; charset=utf-8")
        [espn] = load_sources(EXAMPLES / "sports.yaml")
        sources = [
            SourceConfig(name="bbc", kind="rss", url=server.url("/bbc.xml"), poll_interval_s=3600),
            replace_url(espn, server.url("/scores.json")),
            SourceConfig(name="broken", kind="rss", url=server.url("/broken.xml"), poll_interval_s=3600),
        ]
        state = tmp_path_factory.mktemp("feeds-state")
        scheduler = start(state, sources, config, "feeds-1")
        with Client(serve_stack.target) as client:
            feeds = Feeds(server, scheduler, config, state, sources, client)
            yield feeds
        for actor in {scheduler, feeds.scheduler}:
            ray.kill(actor)
    # every snapshot this module made, whatever its state: the other Serve tests expect the KB as it was
    for record in reversed(ray.get(store.list_snapshots.remote())):
        if record["snapshot_id"] not in before and record["status"] != "rolled_back":
            ray.get(store.rollback.remote(record["snapshot_id"]))
    ours = [r for r in ray.get(store.list_snapshots.remote()) if r["snapshot_id"] not in before]
    assert all(r["status"] == "rolled_back" for r in ours), ours


def replace_url(source: SourceConfig, url: str) -> SourceConfig:
    return source.model_copy(update={"url": url, "poll_interval_s": 3600.0})


def test_polled_items_are_stored_and_the_broken_source_stops_nobody(feeds):
    for source in feeds.sources:
        ray.get(feeds.scheduler.poll_once.remote(source.name))
    health = ray.get(feeds.scheduler.health.remote())
    assert health["bbc"]["items_stored"] == health["bbc"]["items_seen"] == 4
    assert health["espn-premier-league"]["items_stored"] >= 2
    broken = health["broken"]
    assert broken["items_stored"] == 0 and broken["item_errors"] == 1
    assert "HTML page" in broken["recent_item_errors"][0]
    assert len(news_snapshots(feeds.config)) == 2 and ray.get(feeds.scheduler.pending_batches.remote()) == []


def test_questions_are_answered_from_the_items_with_their_time(feeds):
    citations, route, text = answer(feeds.client, "What's the latest news about the storm?")
    assert route == "graph_rag:news", route
    assert citations and "Storm" in citations[0].title
    assert citations[0].published_unix_s > 1.7e9 and "bbc.co.uk/news/articles" in citations[0].uri
    assert text.strip()
    citations, route, _ = answer(feeds.client, "What was the score of the Arsenal game?")
    assert route == "graph_rag:news" and any("Arsenal" in c.title for c in citations)


def test_a_304_is_no_work_and_a_changed_feed_becomes_answerable(feeds):
    chunks, snapshots = news_chunks(feeds.config), len(news_snapshots(feeds.config))
    health = ray.get(feeds.scheduler.poll_once.remote("bbc"))
    assert health["not_modified"] == 1
    assert news_chunks(feeds.config) == chunks and len(news_snapshots(feeds.config)) == snapshots
    body = (FEEDS / "bbc_news.rss").read_text(encoding="utf-8")
    changed = body.replace("        <item>", NEW_STORY.format(date=rss_date(time.time() - 30)) + "        <item>", 1)
    feeds.server.state.routes["/bbc.xml"] = (changed.encode(), "application/rss+xml; charset=utf-8")
    health = ray.get(feeds.scheduler.poll_once.remote("bbc"))
    assert health["items_stored"] == 5 and health["duplicates"] == 4  # only the new story is new
    citations, route, _ = answer(feeds.client, "Tell me the latest about the Vermeer sketch")
    assert route == "graph_rag:news" and "Vermeer" in citations[0].title
    assert time.time() - citations[0].published_unix_s < 600


def test_killed_mid_batch_the_scheduler_loses_nothing_and_duplicates_nothing(feeds):
    body = (FEEDS / "bbc_news.rss").read_text(encoding="utf-8")
    stories = "".join(
        STORY.format(title=title, text=text, slug=f"batch-{n:03d}", date=rss_date(time.time() - 10))
        for n, (title, text) in enumerate(distinct_stories(40))
    )
    feeds.server.state.routes["/bbc.xml"] = (
        body.replace("        <item>", stories + "        <item>", 1).encode(),
        "application/rss+xml; charset=utf-8",
    )
    before = ray.get(feeds.scheduler.health.remote())["bbc"]
    polling = feeds.scheduler.poll_once.remote("bbc")
    deadline = time.monotonic() + 60
    while not ray.get(feeds.scheduler.pending_batches.remote()):  # fetched and parsed: the batch is in the inbox
        assert time.monotonic() < deadline, "the poll never reached the inbox"
        time.sleep(0.05)
    ray.kill(feeds.scheduler)  # mid-batch: the pipeline is embedding or writing
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(polling)
    feeds.scheduler = start(feeds.state_dir, feeds.sources, feeds.config, "feeds-2")
    assert ray.get(feeds.scheduler.pending_batches.remote())  # the killed one never finished the batch
    ray.get(feeds.scheduler.drain.remote())
    assert ray.get(feeds.scheduler.pending_batches.remote()) == []
    stored = ray.get(feeds.scheduler.health.remote())["bbc"]["items_stored"]
    assert stored == before["items_stored"] + 40  # counted once, by whichever scheduler committed the batch
    store = get_knowledge_store(feeds.config)
    chunks = ray.get(store.search_documents.remote(_vector(feeds, "reports say"), NEWS_COLLECTION, 100))
    titles = {title for title, _ in distinct_stories(40)}
    batch = [c for c in chunks if c["title"] in titles]
    assert len({c["item_id"] for c in batch}) == 40 and len(batch) == 40  # each once
    assert not any(r["status"] == "open" for r in news_snapshots(feeds.config))


def _vector(feeds: Feeds, text: str):
    from deployments.embeddings import SentenceTransformerEngine

    [vector] = SentenceTransformerEngine(feeds.config.embeddings).embed([text], normalize=True)
    return vector


def test_freshness_and_run_time_reach_rays_prometheus_endpoint(feeds, serve_stack):
    fresh = "ray_almquist_ingestion_freshness_seconds_count"
    series = settled(serve_stack.metrics_port, lambda s: total(s, fresh, source="bbc") >= 45)
    assert total(series, fresh, source="bbc") >= 45  # 4 + 1 + 40 stored items
    assert total(series, "ray_almquist_ingestion_freshness_seconds_sum", source="bbc") > 0
    runs = total(series, "ray_almquist_ingestion_run_seconds_count", source="bbc")
    assert runs >= 3 and total(series, "ray_almquist_ingestion_run_seconds_count", source="espn-premier-league") >= 1
