"""Entity linking: which graph nodes a question is about.

In: a question. Out: a `Linking`: the mention (the text that names the entity, so the classifier can mask it)
and candidate nodes, best first; one name may be several nodes (a movie and a tag of the same name), and the
relation path's start label later picks among them.

The mention is the `[bracketed]` text when there is one; otherwise the longest span of the question that names an
entity. Each step runs only when the one before found nothing: exact name -> normalised name (case, accents,
punctuation) -> fuzzy (rapidfuzz) -> the optional vector-search hook `(text) -> [(node id, score)]`.

Names come from the store's vocabulary, read once by `from_store` (`entities_by_label`, per label) and kept in
dicts, because a name lookup in the embedded store scans every node table (~10 ms) while a dict answers in
microseconds; `refresh()` re-reads it after an ingestion. Without a vocabulary the linker asks the store
(`find_entities_by_names`) and only exact names link.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz, process

from almquist.stores.graph import QueryRunner
from almquist.stores.schema import NODE_LABELS, label_of, name_of

VectorSearch = Callable[[str], list[tuple[str, float]]]
Entry = tuple[str, str, str]  # (node id, name, label)
BRACKETED = re.compile(r"\[([^\]]+)\]")
TOKEN = re.compile(r"\S+")
EDGE_PUNCTUATION = "?!.,;:\"'()"
# Words that are also the name of some tag or title but alone never carry the entity of a question
_FUNCTION_WORDS = (
    "a an the of in on at to for by with and or is are was were be did do does who whom what which when where "
    "how why whose that this these those it its his her their movie movies film films star starred stars act "
    "acted actor actors direct directed director directors write wrote written writer writers year years genre "
    "genres language languages tag tags release released about also same share shared"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
MIN_FUZZY_SPAN = 7  # characters of a free-text span before it may match a name approximately


@dataclass(frozen=True)
class LinkedEntity:
    id: str
    name: str
    label: str
    score: float  # 1.0 exact; less for normalised, fuzzy and vector matches
    method: str  # "exact" | "normalised" | "fuzzy" | "vector"


@dataclass(frozen=True)
class Linking:
    mention: str | None
    entities: tuple[LinkedEntity, ...]


def normalise(text: str) -> str:
    """Lower case, accents and punctuation removed, spaces collapsed: "Amélie!" -> "amelie"."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^\w$]+", " ", plain).split())


def read_vocabulary(
    store: QueryRunner, max_seq: int | None = None, labels: Sequence[str] = NODE_LABELS, page: int = 100_000
) -> list[Entry]:
    """Every (id, name, label) the store holds at `max_seq`, read label by label, `page` rows at a time."""
    entries: list[Entry] = []
    for label in labels:
        skip = 0
        while True:
            params = {"label": label, "max_seq": max_seq, "skip": skip, "limit": page}
            rows = store.run("entities_by_label", params)
            entries += [(row["id"], row["name"], row["label"]) for row in rows]
            if len(rows) < page:
                break
            skip += page
    return entries


class EntityLinker:
    """See the module docstring."""

    def __init__(
        self,
        store: QueryRunner,
        *,
        max_seq: int | None = None,
        vocabulary: Iterable[Entry] | None = None,
        vector_search: VectorSearch | None = None,
        fuzzy_cutoff: float = 88.0,
        max_span_words: int = 12,
    ) -> None:
        self.store = store
        self.max_seq = max_seq
        self.vector_search = vector_search
        self.fuzzy_cutoff = fuzzy_cutoff
        self.max_span_words = max_span_words
        self._set_vocabulary(vocabulary)

    @classmethod
    def from_store(cls, store: QueryRunner, *, max_seq: int | None = None, **options: Any) -> EntityLinker:
        return cls(store, max_seq=max_seq, vocabulary=read_vocabulary(store, max_seq), **options)

    def refresh(self) -> int:
        """Re-reads the vocabulary from the store (after an ingestion); returns how many entities it holds."""
        entries = read_vocabulary(self.store, self.max_seq)
        self._set_vocabulary(entries)
        return len(entries)

    def _set_vocabulary(self, vocabulary: Iterable[Entry] | None) -> None:
        self._by_name: dict[str, list[Entry]] | None = None
        self._by_norm: dict[str, list[str]] = defaultdict(list)
        if vocabulary is None:
            self._norm_keys: list[str] = []
            return
        self._by_name = defaultdict(list)
        for entry in vocabulary:
            name = entry[1]
            if not self._by_name[name]:
                key = normalise(name)
                if key:
                    self._by_norm[key].append(name)
            self._by_name[name].append(entry)
        self._norm_keys = list(self._by_norm)

    def link(self, question: str) -> Linking:
        bracketed = BRACKETED.search(question)
        if bracketed:
            mention = bracketed.group(1).strip()
            return Linking(mention, tuple(self._link_mention(mention)))
        return self._link_free_text(question)

    # ---- names -> nodes ----
    def _lookup(self, names: Iterable[str], method: str, score: float) -> list[LinkedEntity]:
        names = list(dict.fromkeys(names))
        if not names:
            return []
        if self._by_name is not None:
            entries = [entry for name in names for entry in self._by_name.get(name, ())]
        else:
            rows = self.store.run("find_entities_by_names", {"names": names, "max_seq": self.max_seq})
            entries = [(row["id"], row["name"], row["label"]) for row in rows]
        return [LinkedEntity(node, name, label, score, method) for node, name, label in entries]

    def _known(self, names: Iterable[str]) -> set[str]:
        names = list(dict.fromkeys(names))
        if self._by_name is not None:
            return {name for name in names if name in self._by_name}
        rows = self.store.run("find_entities_by_names", {"names": names, "max_seq": self.max_seq})
        return {row["name"] for row in rows}

    def _vector(self, text: str) -> list[LinkedEntity]:
        if self.vector_search is None:
            return []
        return [
            LinkedEntity(node, name_of(node), label_of(node), float(score), "vector")
            for node, score in self.vector_search(text)
        ]

    # ---- a known mention ----
    def _link_mention(self, mention: str) -> list[LinkedEntity]:
        if not mention:
            return []
        found = self._lookup([mention], "exact", 1.0)
        if not found:
            found = self._lookup(self._by_norm.get(normalise(mention), []), "normalised", 0.95)
        if not found and self._norm_keys:
            matches = process.extract(
                normalise(mention), self._norm_keys, scorer=fuzz.ratio, score_cutoff=self.fuzzy_cutoff, limit=5
            )
            for key, score, _ in matches:
                found += self._lookup(self._by_norm[key], "fuzzy", score / 100.0)
        return found or self._vector(mention)

    # ---- free text: find the span first ----
    def _link_free_text(self, question: str) -> Linking:
        spans = self._spans(question)
        exact = self._known(spans) if spans else set()
        candidates = [(span, "exact") for span in spans if span in exact]
        candidates += [(s, "normalised") for s in spans if s not in exact and normalise(s) in self._by_norm]
        content = [(span, how) for span, how in candidates if normalise(span) not in FUNCTION_WORDS]
        if content:
            # the longest span wins ("The Dark Knight Rises" over "The Dark Knight"); exact beats normalised
            span, how = max(content, key=lambda c: (len(normalise(c[0])), c[1] == "exact"))
            if how == "exact":
                return Linking(span, tuple(self._lookup([span], "exact", 1.0)))
            return Linking(span, tuple(self._lookup(self._by_norm[normalise(span)], "normalised", 0.95)))
        return self._fuzzy_span(spans) or Linking(None, tuple(self._vector(question)))

    def _spans(self, question: str) -> list[str]:
        """Every run of up to `max_span_words` words, as written and with edge punctuation stripped."""
        words = [m.group(0) for m in TOKEN.finditer(question)]
        spans: dict[str, None] = {}
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + self.max_span_words) + 1):
                text = " ".join(words[i:j])
                spans[text] = None
                spans[text.strip(EDGE_PUNCTUATION)] = None
        spans.pop("", None)
        return list(spans)

    def _fuzzy_span(self, spans: list[str]) -> Linking | None:
        best: tuple[float, int, str, str] | None = None
        for span in spans:
            key = normalise(span)
            # short spans match too much by edit distance ("hello" ~ "hell")
            if len(key) < MIN_FUZZY_SPAN or key in FUNCTION_WORDS or not self._norm_keys:
                continue
            match = process.extractOne(key, self._norm_keys, scorer=fuzz.ratio, score_cutoff=self.fuzzy_cutoff)
            if match and (best is None or (match[1], len(key)) > (best[0], best[1])):
                best = (match[1], len(key), span, match[0])
        if best is None:
            return None
        score, _, span, key = best
        return Linking(span, tuple(self._lookup(self._by_norm[key], "fuzzy", score / 100.0)))
