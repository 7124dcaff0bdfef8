"""Answers from real-time items: the ranking of `graphs.news` on hand-made hits (recency preferred over a little
similarity, not over relevance; one citation per item; times in UTC; category hints; noise dropped), and GraphRAG's
news path end to end on a plain `KnowledgeStore` (Qdrant local mode) with the real MiniLM embeddings: the right
items cited for a score and a weather question, an uncommitted ingestion invisible, an honest answer with nothing
stored, and the KGQA path still taken for the other intents."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from actors.knowledge_store import KnowledgeStore
from almquist import metrics
from almquist.config import EmbeddingsConfig, KGQAConfig, NewsConfig
from almquist.config.knowledge import GraphStoreConfig, KnowledgeConfig, VectorStoreConfig
from almquist.stores.schema import NEWS_COLLECTION
from deployments.embeddings import SentenceTransformerEngine
from deployments.llm.engine import GenerationRequest, TokenChunk
from graphs import graph_rag as graph_rag_module
from graphs.graph_rag import NEWS_GROUNDED_NOTE, UNGROUNDED_NOTE, GraphRAG
from graphs.news import NO_ITEMS, NewsQuery, NewsRetriever, format_time, read_question
from graphs.turn import Citation, Turn
from ingestion.news import chunk_text
from ingestion.sources.model import Item, item_id_for
from tests.local_actor import LocalActor

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0
TOPICAL = NewsQuery(frozenset(), True)


def hit(item_id: str, similarity: float, age_h: float, category: str = "news", **payload: Any) -> dict[str, Any]:
    """A `search_documents` row: a chunk's payload plus its cosine `score`."""
    return {
        "id": f"{item_id}:{payload.pop('chunk', 0)}",
        "item_id": item_id,
        "source": payload.pop("source", "wire"),
        "category": category,
        "title": payload.pop("title", item_id),
        "text": payload.pop("text", f"text of {item_id}"),
        "url": payload.pop("url", ""),
        "published": NOW - age_h * HOUR,
        "seen_at": NOW - age_h * HOUR,
        "snapshot_id": "s000001-test",
        "score": similarity,
        **payload,
    }


# ---- ranking (pure) ----


def test_a_fresh_slightly_less_similar_item_beats_a_stale_very_similar_one():
    retriever = NewsRetriever()
    ranked = retriever.rank([hit("stale", 0.80, 48), hit("fresh", 0.70, 1)], TOPICAL, NOW)
    assert [r.item_id for r in ranked] == ["fresh", "stale"]
    # the blend: 48 h is two news half-lives -> freshness 0.2 + 0.8 * 0.25
    assert ranked[1].freshness == pytest.approx(0.4) and ranked[1].score == pytest.approx(0.8 * 0.4)


def test_recency_is_a_preference_not_a_requirement():
    retriever = NewsRetriever()
    # nothing fresh is about the question: the stale relevant item still answers, ahead of fresh noise
    ranked = retriever.rank([hit("old-report", 0.75, 24 * 14), hit("fresh-noise", 0.12, 0.1)], TOPICAL, NOW)
    assert [r.item_id for r in ranked] == ["old-report"]
    assert ranked[0].freshness == pytest.approx(0.2, abs=1e-3), "a very old item keeps the floor of its similarity"


def test_min_similarity_and_margin_drop_items_about_something_else():
    retriever = NewsRetriever(NewsConfig(min_similarity=0.3, similarity_margin=0.2))
    assert retriever.rank([hit("a", 0.29, 0), hit("b", 0.1, 0)], TOPICAL, NOW) == []
    ranked = retriever.rank([hit("on-topic", 0.80, 30), hit("fresh-other", 0.55, 0)], TOPICAL, NOW)
    assert [r.item_id for r in ranked] == ["on-topic"], "0.55 is more than 0.2 below the best 0.80"


def test_one_citation_per_item_from_its_best_chunk():
    retriever = NewsRetriever(NewsConfig(cited_items=2))
    hits = [
        hit("bill", 0.62, 2, chunk=1, text="second part"),
        hit("bill", 0.71, 2, chunk=0, text="first part"),
        hit("other", 0.60, 2),
        hit("third", 0.58, 2),
    ]
    ranked = retriever.rank(hits, TOPICAL, NOW)
    assert [r.item_id for r in ranked] == ["bill", "other"], "cited_items=2, one per item"
    assert ranked[0].text == "first part" and ranked[0].similarity == 0.71
    assert [c.source_id for c in retriever.citations(ranked)] == ["bill", "other"]


def test_half_lives_differ_by_category():
    retriever = NewsRetriever()
    quote, article = (retriever.freshness(NOW - 3 * HOUR, category, NOW) for category in ("stocks", "news"))
    assert quote == pytest.approx(0.2 + 0.8 * 0.5**3) and article == pytest.approx(0.2 + 0.8 * 0.5 ** (3 / 24))
    assert retriever.freshness(NOW + HOUR, "sports", NOW) == 1.0, "a time in the future counts as now"
    assert retriever.freshness(0.0, "news", NOW) == 0.2, "an unknown time counts as very old"


def test_the_facts_prompt_states_each_items_time_in_utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "America/New_York")  # the machine's zone must not leak into the prompt
    time.tzset()
    try:
        retriever = NewsRetriever()
        published = datetime(2026, 11, 24, 1, 0, tzinfo=UTC).timestamp()
        row = hit("bbc-1", 0.7, 0, source="bbc-news", title="Storm Bert", text="Flood\nwarnings across Wales.")
        row["published"] = published
        prompt = retriever.facts_prompt(retriever.rank([row], TOPICAL, NOW), NOW)
    finally:
        monkeypatch.undo()  # the machine's own TZ (or none) back, then re-read by the C library
        time.tzset()
    assert prompt.splitlines() == [
        "The time now is 2026-11-24 03:00 UTC. Recent items, best match first:",
        "[2026-11-24 01:00 UTC, bbc-news] Storm Bert: Flood warnings across Wales.",  # one line per item
    ]
    assert format_time(0.0) == "time unknown" and format_time(float("nan")) == "time unknown"


def test_citations_carry_time_and_url_into_the_grpc_message():
    from protos.build import build

    build()
    from graphs.knowledge import citation_proto

    retriever = NewsRetriever()
    row = hit("x1", 0.7, 2, source="espn", category="sports", url="https://example.org/a", title="Arsenal 2-1")
    [citation] = retriever.citations(retriever.rank([row], TOPICAL, NOW))
    assert citation.published == NOW - 2 * HOUR and citation.url == "https://example.org/a"
    assert citation.path == ("espn", "sports") and citation.snapshot_id == "s000001-test"
    message = citation_proto(citation)
    assert message.uri == "https://example.org/a" and message.published_unix_s == NOW - 2 * HOUR
    assert message.source_id == "x1" and message.title == "Arsenal 2-1"


@pytest.mark.parametrize(
    ("text", "categories", "topical"),
    [
        ("What was the score last night?", {"sports"}, False),
        ("Who won the game?", {"sports"}, False),
        ("what was the score of the Arsenal game?", {"sports"}, True),
        ("Will it rain today?", {"weather"}, False),
        ("weather in Berlin", {"weather"}, True),
        ("What's the temperature in Madrid?", {"weather"}, True),
        ("price of Apple stock", {"stocks"}, True),
        ("How are the markets?", {"stocks"}, False),
        ("What's new?", set(), False),
        ("Any breaking news today?", set(), False),
        ("Tell me about the climate bill", set(), True),
    ],
)
def test_category_hints_from_the_question(text: str, categories: set[str], topical: bool):
    assert read_question(text) == NewsQuery(frozenset(categories), topical)


def test_a_subjectless_question_filters_by_its_category_and_recency_decides():
    retriever = NewsRetriever()
    plan = retriever.plan("who won the game?", NOW)
    assert plan.match == {"category": "sports"} and plan.since == NOW - 72 * HOUR and plan.limit == 5 * 4
    topical = retriever.plan("what was the score of the Arsenal game?", NOW)
    assert topical.match is None and topical.since is None, "a hint is only a boost when the question has a subject"
    # "who won the game?" is close to no item: the gates are off, the newest result leads
    ranked = retriever.rank([hit("yesterday", 0.25, 20, "sports"), hit("tonight", 0.15, 1, "sports")], plan.query, NOW)
    assert [r.item_id for r in ranked] == ["tonight", "yesterday"]
    # two hinted categories cannot be one store filter: the others are dropped here
    both = read_question("scores and weather")
    assert (
        both == NewsQuery(frozenset({"sports", "weather"}), False)
        and retriever.plan("scores and weather", NOW).match is None
    )
    kept = retriever.rank([hit("s", 0.2, 1, "sports"), hit("w", 0.2, 1, "weather"), hit("n", 0.2, 1)], both, NOW)
    assert {r.item_id for r in kept} == {"s", "w"}


def test_the_category_hint_is_a_soft_boost_for_questions_with_a_subject():
    retriever = NewsRetriever()
    query = read_question("weather in Berlin")
    ranked = retriever.rank([hit("marathon", 0.60, 1, "sports"), hit("forecast", 0.56, 1, "weather")], query, NOW)
    assert [r.item_id for r in ranked] == ["forecast", "marathon"], "boosted, not filtered: both stay"


# ---- GraphRAG's news path over a real store and the real MiniLM ----


@pytest.fixture(scope="module")
def engine() -> SentenceTransformerEngine:
    return SentenceTransformerEngine(EmbeddingsConfig())


@pytest.fixture
def store(tmp_path: Path):
    knowledge = KnowledgeStore(
        KnowledgeConfig(graph=GraphStoreConfig(path=tmp_path / "graph"), vectors=VectorStoreConfig(path=tmp_path / "q"))
    )
    yield knowledge
    knowledge.close()


def item(source: str, category: str, key: str, title: str, text: str, age_h: float, url: str = "") -> Item:
    seen = NOW - age_h * HOUR
    return Item(source, category, item_id_for(source, key), title, text, url, published=seen, seen_at=seen)


ITEMS = [
    item(
        "football-api",
        "sports",
        "m1",
        "Arsenal 2-1 Chelsea",
        "Saka scored the winner in the 88th minute.",
        5,
        "https://example.org/m1",
    ),
    item("football-api", "sports", "m0", "Arsenal 0-0 Tottenham", "A goalless north London derby.", 24 * 7),
    item("football-api", "sports", "m2", "Liverpool 3-0 Everton", "Salah scored twice in the Merseyside derby.", 2),
    item("open-meteo", "weather", "ber-now", "Berlin weather", "Light rain, 8°C, wind 20 km/h from the west.", 1),
    item("open-meteo", "weather", "ber-old", "Berlin weather", "Sunny, 12°C, calm.", 26),
    item("open-meteo", "weather", "mad-now", "Madrid weather", "Sunny, 18°C.", 1),
    item("quotes", "stocks", "aapl", "AAPL 231.40 (+1.2%)", "Apple shares rose after the earnings report.", 0.5),
    item(
        "bbc-news",
        "news",
        "bill",
        "Parliament passes climate bill",
        "The bill cuts emissions by half by 2035. " * 40,
        3,
    ),  # several chunks: still one citation
]


def store_items(store: KnowledgeStore, engine: SentenceTransformerEngine, items: list[Item], commit: bool = True):
    """What ingestion/news.py stores: chunks (the first embedded with its title) with their payload, one snapshot."""
    snapshot = store.begin_snapshot("news:test", str(len(items)) + str(commit))
    ids, texts, payloads = [], [], []
    for it in items:
        for index, piece in enumerate(chunk_text(it.text, 800, 100)):
            ids.append(f"{it.item_id}:{index}")
            texts.append(f"{it.title}. {piece}" if index == 0 else piece)
            payloads.append(
                {
                    "item_id": it.item_id, "source": it.source, "category": it.category, "title": it.title,
                    "text": piece, "url": it.url, "published": float(it.published or it.seen_at),
                    "seen_at": it.seen_at, "entities": list(it.entities), "chunk": index,
                }
            )  # fmt: skip
    store.upsert_documents(snapshot.snapshot_id, NEWS_COLLECTION, ids, engine.embed(texts, True), payloads)
    if commit:
        store.commit_snapshot(snapshot.snapshot_id)
    return snapshot


class LocalEmbeddings:
    def __init__(self, engine: SentenceTransformerEngine) -> None:
        self._engine = engine

    def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        return self._engine.embed(texts, normalize)


class RecordingLLM:
    """The LLM handle's stand-in: records each request, streams two tokens."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []
        self.generate = self

    def options(self, **_: Any) -> RecordingLLM:
        return self

    def remote(self, request: GenerationRequest):
        self.requests.append(request)

        async def tokens():
            for index, text in enumerate(("It ", "was.")):
                yield TokenChunk(token_id=index, text=text, index=index, finish_reason="stop" if index else None)

        return tokens()


def graph_rag(store: KnowledgeStore, engine: SentenceTransformerEngine, tmp_path: Path) -> GraphRAG:
    # the deployment's class, without Serve or the actor
    rag = object.__new__(GraphRAG.func_or_class)  # type: ignore[attr-defined]
    rag._store = LocalActor(store)
    rag._embeddings = LocalActor(LocalEmbeddings(engine))
    rag._llm = RecordingLLM()
    rag._news = NewsRetriever()
    rag._config = KGQAConfig(model_dir=tmp_path / "no-kgqa-model")
    rag._engines, rag._lock = {}, asyncio.Lock()
    return rag


def answer(rag: GraphRAG, text: str, intent: str) -> list[Citation | TokenChunk]:
    async def collect() -> list[Citation | TokenChunk]:
        return [x async for x in rag.answer(Turn(turn_id="t", text=text, system_prompt="Be brief."), intent)]

    return asyncio.run(collect())


def test_graph_rag_answers_news_turns_from_the_right_items(store, engine, tmp_path, monkeypatch):
    stages: list[str] = []
    monkeypatch.setattr(metrics, "observe_stage", lambda stage, seconds: stages.append(stage))
    monkeypatch.setattr(graph_rag_module, "time", SimpleNamespace(time=lambda: NOW))  # GraphRAG's clock only
    rag = graph_rag(store, engine, tmp_path)
    by_key = {it.title + it.text[:5]: it.item_id for it in ITEMS}
    arsenal_last_night, arsenal_last_week = by_key["Arsenal 2-1 ChelseaSaka "], by_key["Arsenal 0-0 TottenhamA goa"]
    berlin_now, berlin_yesterday = by_key["Berlin weatherLight"], by_key["Berlin weatherSunny"]

    assert answer(rag, "what was the score of the Arsenal game?", "news") == [TokenChunk(-1, NO_ITEMS, 0, "stop")]
    assert rag._llm.requests == [], "nothing stored: an honest answer, no LLM call to invent one"
    assert stages == ["retrieval"]

    store_items(store, engine, ITEMS)
    store_items(  # an ingestion still running: its batch must stay invisible
        store, engine, [item("football-api", "sports", "m9", "Arsenal 5-0 Chelsea", "Half written.", 0.1)], False
    )

    out = answer(rag, "what was the score of the Arsenal game?", "news")
    citations = [x for x in out if isinstance(x, Citation)]
    assert out[: len(citations)] == citations and "".join(x.text for x in out[len(citations) :]) == "It was."
    cited = [c.source_id for c in citations]
    assert cited[0] == arsenal_last_night, [c.title for c in citations]
    assert arsenal_last_week in cited and cited.index(arsenal_last_week) > 0, "stale: cited, after last night's"
    assert "Arsenal 5-0 Chelsea" not in {c.title for c in citations}, "uncommitted snapshot seen"
    assert len(cited) == len(set(cited))
    first = citations[0]
    assert first.published == NOW - 5 * HOUR and first.url == "https://example.org/m1"
    [request] = rag._llm.requests
    system, question = request.messages[0].content, request.messages[-1].content
    assert system.startswith("Be brief." + NEWS_GROUNDED_NOTE)
    # the items are data: fenced in the user message after the question, never in the system message
    # (graphs/prompt_fence.py; tests/test_prompt_fence.py)
    assert "Arsenal 2-1" not in system
    assert question.startswith("what was the score of the Arsenal game?\n\n<<<untrusted-data ")
    assert "\n[2026-11-23 22:00 UTC, football-api] Arsenal 2-1 Chelsea: Saka scored the winner" in question

    weather = [x for x in answer(rag, "weather in Berlin", "news") if isinstance(x, Citation)]
    assert [c.source_id for c in weather[:2]] == [berlin_now, berlin_yesterday], [c.title for c in weather]
    assert all(c.path[1] == "weather" for c in weather), "the weather hint and similarity keep other news out"

    bill = [x for x in answer(rag, "tell me about the climate bill", "news") if isinstance(x, Citation)]
    assert [c.title for c in bill] == ["Parliament passes climate bill"], "its chunks make one citation"
    assert stages == ["retrieval"] * 4


def test_graph_rag_keeps_the_kgqa_path_for_other_intents(store, engine, tmp_path):
    rag = graph_rag(store, engine, tmp_path)
    store_items(store, engine, ITEMS)
    for intent in ("knowledge", ""):
        out = answer(rag, "Who directed Inception?", intent)
        assert not any(isinstance(x, Citation) for x in out)
    # no relation-path model here: KGQA's own fallback (the LLM told it is ungrounded), not the news path
    assert [r.messages[0].content for r in rag._llm.requests] == ["Be brief." + UNGROUNDED_NOTE] * 2


def test_nothing_relevant_gets_an_honest_short_answer(store, engine, tmp_path):
    rag = graph_rag(store, engine, tmp_path)
    store_items(store, engine, ITEMS)
    assert answer(rag, "Who is the new pope?", "news") == [TokenChunk(-1, NO_ITEMS, 0, "stop")]
    assert rag._llm.requests == []
