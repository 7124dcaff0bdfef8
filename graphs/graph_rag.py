"""Graph-RAG: answers knowledge questions from the movie knowledge graph, and "what's new / score / weather / price"
questions from real-time items; the LLM only phrases the answer.

In: a `Turn` and the router's intent. Out: `Citation`s (the graph facts behind the answer), then `TokenChunk`s.
The answer set comes from the KGQA family (deployments/kgqa, run in this replica as a library: one engine per
snapshot pin, made by the injected `kgqa_engine` loader, by default `deployments.kgqa.load_engine`): entity linking
(exact, normalised, fuzzy name match, then vector search over entity names), a learned relation-path classifier,
and hop-by-hop parameterised Cypher through the `KnowledgeStore` actor (the one process that owns the embedded
stores). When the graph has no answer, the turn says so instead of guessing. The intent "news" goes to
`answer_news` instead: the question's embedding against the `news` collection's chunks, ranked with a recency
preference by `graphs.news.NewsRetriever`; the citations carry each item's time and URL.
Also serves the `Knowledge` gRPC methods' work: `query`, `search`, snapshots and rollback, and the graph tools
(`influential`, `community`, `shortest_path`), which `graphs.graph_tools.GraphTools` computes in this replica, not
in the actor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from actors.knowledge_store import get_knowledge_store
from almquist import metrics
from almquist.config import KGQAConfig, NewsConfig
from almquist.config.knowledge import KnowledgeConfig
from almquist.errors import FailedPrecondition, InvalidArgument
from almquist.stores.algorithms import DEFAULT_LIMIT, Community, GraphPath, RankedEntity
from almquist.stores.schema import NEWS_COLLECTION
from deployments.kgqa import EngineLoader, KGQAEngine, KGQAResult, load_engine
from deployments.llm.engine import TokenChunk
from graphs.graph_tools import DEFAULT_MAX_HOPS, ActorQueryRunner, GraphTools
from graphs.handles import streaming
from graphs.news import NO_ITEMS, NewsRetriever, RankedItem
from graphs.prompt_fence import fenced_request, one_line
from graphs.turn import Citation, Turn

logger = logging.getLogger("ray.serve")

UNGROUNDED_NOTE = (
    " The knowledge graph is not loaded on this deployment: answer from what you know, briefly, and do not invent"
    " sources."
)
GROUNDED_NOTE = (
    " Answer the user's question in one or two sentences using only the facts and the answer in the data block."
    " Do not add names, dates or titles that are not in them."
)
NEWS_GROUNDED_NOTE = (
    " Answer the user's question in one or two sentences using only the items in the data block, and say when the"
    " item you use is from (its time is given in UTC). If they do not"
    " answer the question, say that you have no recent item about it. Do not add names, scores, prices or dates"
    " that are not in them."
)
NEWS_INTENT = "news"  # the router's intent (almquist.config.DEFAULT_INTENT_EXAMPLES) answered by `answer_news`

MAX_ENGINES = 4  # KGQA engines (one per snapshot seq asked about) a replica keeps


def facts_prompt(result: KGQAResult, limit: int) -> str:
    """The facts for the LLM, one per line; each name on one line, neutralised (graphs.prompt_fence): the graph
    holds ingested text, and `answer` fences this block as data."""
    facts = "\n".join(
        f"- {one_line(f.subject)} {one_line(f.relation.replace('_', ' '))} {one_line(f.object)}"
        for f in result.facts[:limit]
    )
    answers = ", ".join(one_line(answer) for answer in result.answers[:limit])
    return f"Facts from the knowledge graph:\n{facts}\nAnswer: {answers}."


def citations_of(result: KGQAResult, limit: int) -> list[Citation]:
    return [
        Citation(
            source_id=f"{fact.subject}|{fact.relation}|{fact.object}",
            title=fact.subject,
            snippet=f"{fact.subject} {fact.relation} {fact.object}",
            path=(fact.subject, fact.relation, fact.object),
            score=result.confidence,
        )
        for fact in result.facts[:limit]
    ]


@serve.deployment(name="GraphRAG", ray_actor_options={"num_cpus": 0.25})
class GraphRAG:
    def __init__(
        self,
        llm: DeploymentHandle,
        embeddings: DeploymentHandle,
        knowledge: KnowledgeConfig | dict | None = None,
        kgqa: KGQAConfig | dict | None = None,
        news: NewsConfig | dict | None = None,
        kgqa_engine: EngineLoader | None = None,
    ) -> None:
        self._llm = llm
        self._embeddings = embeddings
        self._knowledge = KnowledgeConfig.model_validate(knowledge or {})
        self._config = KGQAConfig.model_validate(kgqa or {})
        self._news = NewsRetriever(news)
        self._store = get_knowledge_store(self._knowledge)
        self._runner = ActorQueryRunner(self._store)
        self._graph_tools = GraphTools(self._store, self._runner)
        self._load_engine: EngineLoader = kgqa_engine or load_engine
        self._engines: dict[tuple[int, int], KGQAEngine] = {}  # by committed_view, oldest first
        self._lock = asyncio.Lock()

    async def _engine(self, max_seq: int | None = None) -> KGQAEngine:
        """The KGQA engine for a snapshot pin, loaded on first use; unpinned means the latest committed snapshot.

        Pinning unpinned questions to the latest commit keeps a running ingestion's half-written batches out of
        answers, and a new commit (or a rollback) gives a new engine whose linker knows the new vocabulary.
        """
        model_dir = Path(self._config.model_dir).expanduser()
        if not (model_dir / "meta.json").exists():
            raise FailedPrecondition(f"no relation-path model in {model_dir}: run `almquist kb train` first")
        latest, rolled_back = await self._store.committed_view.remote()
        if latest is None:
            raise FailedPrecondition("the knowledge base is empty: run `almquist kb metaqa` first")
        seq = latest if max_seq is None else min(max_seq, latest)
        key = (seq, rolled_back)
        async with self._lock:
            if key not in self._engines:
                self._engines[key] = await asyncio.to_thread(self._load_engine, self._runner, self._config, seq)
                while len(self._engines) > MAX_ENGINES:  # each holds a vocabulary: keep the newest few
                    del self._engines[next(iter(self._engines))]
            return self._engines[key]

    async def _pin(self, snapshot_id: str) -> int | None:
        if not snapshot_id:
            return None
        for record in await self._store.list_snapshots.remote():
            if record["snapshot_id"] == snapshot_id:
                return int(record["seq"])
        raise InvalidArgument(f"unknown snapshot {snapshot_id!r}; list them with `almquist kb snapshots`")

    async def query(self, question: str, snapshot_id: str = "") -> KGQAResult:
        if not question or not question.strip():
            raise InvalidArgument("the question is empty")
        if len(question) > self._config.max_question_chars:
            raise InvalidArgument(
                f"the question has {len(question)} characters; the limit is {self._config.max_question_chars}"
            )
        engine = await self._engine(await self._pin(snapshot_id))
        return await asyncio.to_thread(engine.answer, question)

    async def answer(self, turn: Turn, intent: str = "") -> AsyncIterator[Citation | TokenChunk]:
        """The turn's citations, then its answer's tokens. `intent` is the router's: "news" is answered from
        real-time items (`answer_news`), anything else (or none) by KGQA over the knowledge graph."""
        if intent == NEWS_INTENT:
            async for item in self.answer_news(turn):
                yield item
            return
        try:
            # A turn's `retrieval` stage (almquist.metrics): the Knowledge service's Query is no turn, so it is
            # timed here and not in `query`. Finding the knowledge base empty is timed too: the turn waited for it.
            with metrics.time_stage("retrieval"):
                result = await self.query(turn.text)
        except FailedPrecondition:
            # No knowledge base yet (`almquist kb metaqa` + `almquist kb train` load one): the model answers alone
            # and is told so, rather than the turn failing.
            request = turn.generation_request(turn.system_prompt + UNGROUNDED_NOTE)
            async for chunk in streaming(self._llm.options(stream=True).generate.remote(request)):
                yield chunk
            return
        if not result.answers:
            # the engine's reason names labels and probabilities: for the log, not for the person listening
            logger.info("no answer in the knowledge graph: %s", result.reason)
            yield TokenChunk(
                token_id=-1,
                text=(
                    "I couldn't find that in my knowledge graph. Try naming the film or the person, "
                    "for example: who directed Alien?"
                ),
                index=0,
                finish_reason="stop",
            )
            return
        for citation in citations_of(result, self._config.cited_answers):
            yield citation
        # the graph's text is data: fenced in the user message, out of the system message (graphs/prompt_fence.py)
        request = fenced_request(turn, GROUNDED_NOTE, facts_prompt(result, self._config.cited_answers))
        async for chunk in streaming(self._llm.options(stream=True).generate.remote(request)):
            yield chunk

    async def news_items(self, text: str, now: float | None = None) -> list[RankedItem]:
        """The `graphs.news.RankedItem`s for a question, best first: its embedding searched in the `news`
        collection, pinned to the latest committed snapshot (a running ingestion's half-written batch stays out),
        then ranked with a recency preference. Empty when nothing is stored, committed or relevant."""
        now = time.time() if now is None else now
        plan = self._news.plan(text, now)
        latest = await self._store.latest_committed_seq.remote()
        if latest is None:
            return []
        [vector] = await self._embeddings.embed.remote([text])
        hits = await self._store.search_documents.remote(
            vector, NEWS_COLLECTION, plan.limit, plan.match, plan.since, latest
        )
        ranked = self._news.rank(hits, plan.query, now)
        if not ranked and (plan.match or plan.since is not None):
            # A subject-less reading found nothing recent in its category ("the storm" reads as weather, but the
            # story may be news of any age): search everything by meaning before saying there is nothing.
            hits = await self._store.search_documents.remote(vector, NEWS_COLLECTION, plan.limit, None, None, latest)
            ranked = self._news.rank(hits, dataclasses.replace(plan.query, topical=True), now)
        return ranked

    async def answer_news(self, turn: Turn) -> AsyncIterator[Citation | TokenChunk]:
        """A "what's new / score / weather / price" turn: the items' citations (with time and URL), then the LLM's
        tokens phrasing them; with no relevant item, a short honest answer and no LLM call (it would invent one)."""
        now = time.time()
        with metrics.time_stage("retrieval"):  # the turn's retrieval stage, as for KGQA
            ranked = await self.news_items(turn.text, now)
        if not ranked:
            yield TokenChunk(token_id=-1, text=NO_ITEMS, index=0, finish_reason="stop")
            return
        for citation in self._news.citations(ranked):
            yield citation
        # feed text is data, never instructions: fenced in the user message (graphs/prompt_fence.py)
        request = fenced_request(turn, NEWS_GROUNDED_NOTE, self._news.facts_prompt(ranked, now))
        async for chunk in streaming(self._llm.options(stream=True).generate.remote(request)):
            yield chunk

    async def search(self, text: str, limit: int = 10, kind: str = "") -> list[dict[str, Any]]:
        [vector] = await self._embeddings.embed.remote([text])
        hits = await self._store.search.remote(vector, limit or 10, kind or None)
        return [{"id": h.id, "name": h.name, "label": h.label, "score": h.score} for h in hits]

    async def snapshots(self) -> list[dict[str, Any]]:
        return await self._store.list_snapshots.remote()

    async def rollback(self, snapshot_id: str) -> dict[str, int]:
        return await self._store.rollback.remote(snapshot_id)  # the next question sees a new committed_view

    # ---- graph algorithms (the Knowledge service's Influential, Community and ShortestPath) ----
    async def influential(
        self, label: str = "", limit: int = 0, relations: list[str] | None = None, snapshot_id: str = ""
    ) -> list[RankedEntity]:
        """Top entities by PageRank over the people-movie graph; an empty label means people."""
        seq = await self._pin(snapshot_id)
        return await self._graph_tools.pagerank(label or "Person", limit or DEFAULT_LIMIT, relations or None, seq)

    async def community(
        self,
        entity_id: str = "",
        limit: int = 0,
        label: str = "",
        relations: list[str] | None = None,
        snapshot_id: str = "",
        communities: int = 0,
    ) -> tuple[list[Community], int]:
        """The community of `entity_id`, or without one the largest `communities`; and the graph's community count."""
        seq = await self._pin(snapshot_id)
        if entity_id:
            found, total = await self._graph_tools.community_of(
                entity_id, limit or DEFAULT_LIMIT, label or None, relations or None, seq
            )
            return [found], total
        return await self._graph_tools.communities(
            communities or DEFAULT_LIMIT, limit or DEFAULT_LIMIT, label or None, relations or None, seq
        )

    async def shortest_path(
        self, src_id: str, dst_id: str, max_hops: int = 0, snapshot_id: str = ""
    ) -> GraphPath | None:
        """A shortest path between two entities (any relationship), or None when none is within `max_hops`."""
        seq = await self._pin(snapshot_id)
        return await self._graph_tools.shortest_path(src_id, dst_id, max_hops or DEFAULT_MAX_HOPS, seq)
