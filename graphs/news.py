"""Answers from real-time items (news, sports scores, forecasts, stock prices): which stored chunks to cite, in
what order, and the facts the LLM phrases. Pure: no Ray, no store; `GraphRAG.answer_news` does the calls.

In: the question's text (for `NewsRetriever.plan`), the `KnowledgeStore.search_documents` hits for the question's
embedding (dicts: a chunk's payload plus `score`, the cosine similarity), and `now` (epoch seconds).
Out: `RankedItem`s, best first and one per item; `Citation`s of them; and a facts prompt that states each item's
time in UTC ("[2026-11-24 01:00 UTC, bbc-news] Title: text").

Ranking (see `almquist.config.NewsConfig`): `similarity * freshness * boost`, where
`freshness = floor + (1 - floor) * 0.5 ** (age_hours / half_life(category))`: a fresh item a little less similar
beats a stale one, but a stale item keeps `floor` of its similarity (recency is preferred, not required).
`boost` is `category_boost` for the category the question's words hint at ("score" -> sports), a soft preference:
a word like "price" is not proof that the question is about stocks.

Questions that name no subject ("what's new?", "who won the game?", "will it rain?") have no useful similarity to
any item: for those the search is limited to the last `recent_window_hours` and to the hinted category (a filter,
since there is nothing else to go on), the similarity gates are off, and recency decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from almquist.config import NewsConfig
from graphs.prompt_fence import one_line
from graphs.turn import Citation


def _vocabulary(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that make a question lean to a category; a soft boost for questions with a subject, a filter without one.
CATEGORY_WORDS: dict[str, frozenset[str]] = {
    "sports": _vocabulary(
        "score scores scored match matches game games won win wins winner beat beaten lost lose draw result results "
        "fixture fixtures league goal goals cup final playoff playoffs standings football soccer basketball nba nfl "
        "tennis cricket rugby kickoff halftime"
    ),
    "weather": _vocabulary(
        "weather rain raining rainy snow snowing sunny sun temperature temperatures forecast wind windy storm "
        "storms hot cold warm degrees umbrella humid humidity"
    ),
    "stocks": _vocabulary(
        "price prices stock stocks share shares ticker market markets nasdaq dow s&p index trading traded "
        "earnings quote quotes"
    ),
}
_CATEGORY_WORDS_ALL = frozenset().union(*CATEGORY_WORDS.values())
# What a question may say without naming a subject: question words, time words and "news" itself.
FILLER_WORDS = _vocabulary(
    "what what's whats who who's how how's is are was were be been will would did do does has have had the a an any "
    "anything there there's new news latest recent recently breaking today today's tonight yesterday yesterday's "
    "tomorrow last night this morning afternoon evening week weekend now right currently current so far tell me us "
    "about on in of for at it it's going happening happened headlines headline update updates give show know you "
    "please and or to up down doing"
)
_WORD = re.compile(r"[a-z0-9&]+(?:'[a-z]+)?")

NO_ITEMS = "I have no recent items about that."  # the answer when no stored item is relevant


@dataclass(frozen=True)
class NewsQuery:
    """What the question's words say: the categories it hints at, and whether it names a subject at all."""

    categories: frozenset[str]
    topical: bool  # False: only filler and category words ("what's new?", "who won the game?")


@dataclass(frozen=True)
class SearchPlan:
    """The arguments of `KnowledgeStore.search_documents` for a question (besides the vector and the pin)."""

    query: NewsQuery
    limit: int
    match: dict[str, str] | None  # {"category": ...} for a subjectless question hinting at one category
    since: float | None  # epoch seconds; subjectless questions look at recent items only


@dataclass(frozen=True)
class RankedItem:
    """One item's best chunk with the numbers that ranked it."""

    item_id: str
    source: str
    category: str
    title: str
    text: str
    url: str
    published: float  # epoch seconds; 0 when unknown
    snapshot_id: str
    similarity: float
    freshness: float  # in [recency_floor, 1]
    score: float


def read_question(text: str) -> NewsQuery:
    """The categories the question's words hint at, and whether any word names a subject (not filler, not a
    category word): "weather in Berlin" is topical, "will it rain today?" is not."""
    words = _WORD.findall(text.lower())
    categories = frozenset(name for name, vocabulary in CATEGORY_WORDS.items() if vocabulary.intersection(words))
    topical = any(word not in FILLER_WORDS and word not in _CATEGORY_WORDS_ALL for word in words)
    return NewsQuery(categories, topical)


def format_time(epoch_s: float) -> str:
    """An epoch time as "2026-11-24 01:00 UTC"; "time unknown" for 0 or a value no calendar holds."""
    if not epoch_s or not math.isfinite(epoch_s):
        return "time unknown"
    try:
        return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return "time unknown"


def _clip(text: str, limit: int) -> str:
    # One line per item: a feed's own newlines could otherwise fake another "[time, source]" line in the prompt;
    # and no chat-template token or fence-like bracket run (graphs.prompt_fence: feed text is data, never instructions).
    flat = one_line(text)
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


class NewsRetriever:
    """Plans the store search for a question, ranks its hits, and turns the best into citations and a prompt."""

    def __init__(self, config: NewsConfig | Mapping[str, Any] | None = None) -> None:
        self.config = NewsConfig.model_validate(config or {})

    def half_life_hours(self, category: str) -> float:
        return self.config.half_life_hours.get(category, self.config.default_half_life_hours)

    def plan(self, text: str, now: float) -> SearchPlan:
        """How to search for `text`: more chunks than cited (several may be one item's, some are stale), and for a
        subjectless question only recent ones, of its one hinted category if it hints at exactly one."""
        query = read_question(text)
        limit = self.config.cited_items * self.config.candidates_per_citation
        if query.topical:
            return SearchPlan(query, limit, None, None)
        match = {"category": next(iter(query.categories))} if len(query.categories) == 1 else None
        return SearchPlan(query, limit, match, now - self.config.recent_window_hours * 3600.0)

    def freshness(self, published: float, category: str, now: float) -> float:
        """`floor + (1 - floor) * 0.5 ** (age_h / half_life)`; an unknown time counts as very old, a future one
        (clock skew, a fixture's kickoff) as now."""
        floor = self.config.recency_floor
        if not published:
            return floor
        age_h = max(0.0, now - published) / 3600.0
        return floor + (1.0 - floor) * 0.5 ** (age_h / self.half_life_hours(category))

    def rank(self, hits: Sequence[Mapping[str, Any]], query: NewsQuery, now: float) -> list[RankedItem]:
        """The best `cited_items` items among `hits`, best first, one (its best chunk) per item.

        A question with a subject drops hits below `min_similarity` and more than `similarity_margin` below the
        best hit (about something else, however fresh); a subjectless one keeps every hit (the search already
        kept only recent ones of its category) and maps similarity to [0, 1] so recency decides.
        """
        if not hits:
            return []
        config = self.config
        similarities = [float(hit.get("score", 0.0)) for hit in hits]
        best_similarity = max(similarities)
        best: dict[str, RankedItem] = {}
        for hit, similarity in zip(hits, similarities, strict=True):
            if query.topical:
                if similarity < config.min_similarity or similarity < best_similarity - config.similarity_margin:
                    continue
                relevance = similarity
            else:
                if query.categories and hit.get("category") not in query.categories:
                    continue  # several hinted categories: the store could not filter them all
                relevance = (1.0 + similarity) / 2.0
            category = str(hit.get("category", ""))
            published = float(hit.get("published") or hit.get("seen_at") or 0.0)
            freshness = self.freshness(published, category, now)
            boost = config.category_boost if query.topical and category in query.categories else 1.0
            item_id = str(hit.get("item_id") or hit.get("id", ""))
            ranked = RankedItem(
                item_id=item_id,
                source=str(hit.get("source", "")),
                category=category,
                title=str(hit.get("title", "")),
                text=str(hit.get("text", "")),
                url=str(hit.get("url") or ""),
                published=published,
                snapshot_id=str(hit.get("snapshot_id", "")),
                similarity=similarity,
                freshness=freshness,
                score=relevance * freshness * boost,
            )
            if item_id not in best or ranked.score > best[item_id].score:
                best[item_id] = ranked
        ordered = sorted(best.values(), key=lambda r: (-r.score, -r.published, r.item_id))
        return ordered[: config.cited_items]

    def snippet(self, item: RankedItem) -> str:
        """The item as "Title: text", or one of them when the other is empty or the same (a title-only item's
        chunk is its title)."""
        title, text = _clip(item.title, 200), _clip(item.text, self.config.max_snippet_chars)
        if not text or text == title:
            return title
        return f"{title}: {text}" if title else text

    def citations(self, ranked: Sequence[RankedItem]) -> list[Citation]:
        """One citation per ranked item, with its time and address; `path` is its source and category."""
        return [
            Citation(
                source_id=item.item_id,
                title=item.title,
                snippet=_clip(item.text or item.title, self.config.max_snippet_chars),
                path=(item.source, item.category),
                snapshot_id=item.snapshot_id,
                score=item.score,
                published=item.published,
                url=item.url,
            )
            for item in ranked
        ]

    def facts_prompt(self, ranked: Sequence[RankedItem], now: float) -> str:
        """The items for the LLM, best first, each line "[YYYY-MM-DD HH:MM UTC, source] title: text"; `now` is
        stated so that the answer can say how old an item is."""
        lines = "\n".join(
            f"[{format_time(item.published)}, {_clip(item.source, 80)}] {self.snippet(item)}" for item in ranked
        )
        return f"The time now is {format_time(now)}. Recent items, best match first:\n{lines}"
