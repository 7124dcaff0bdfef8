"""What every KGQA engine accepts and gives: a question in, a `KGQAResult` out.

In: a question; optionally its `Linking` and the embedding of its masked text, when the caller has them already
(the scorer in benchmarks/kgqa_evaluate.py embeds every question of a run in one batch). Out: a `KGQAResult`:
answer names ranked, the facts along one supporting path of each top answer (the citations), the linked node ids,
the relation path walked and a confidence; no answer is an empty list and a `reason`. An engine reads the graph
only through a `QueryRunner` (the read half of `almquist.stores.graph.GraphStore`: any backend, or GraphRAG's
runner over the KnowledgeStore actor), so an answer always exists in the graph.

The family is a library, not a Serve deployment: GraphRAG (graphs/graph_rag.py) runs its engines in its own
replica, one per snapshot pin, each made by an injected `EngineLoader`; the default, `answer.load_engine`, is the
trained relation-path classifier (`answer.KGQA`) over the embeddings family's traced MiniLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from almquist.config import KGQAConfig
from almquist.stores.graph import QueryRunner

from .linker import Linking
from .paths import RelationPath


@dataclass(frozen=True)
class Fact:
    """One edge in the graph's own direction: (movie, relation, object)."""

    subject: str
    relation: str
    object: str


@dataclass
class KGQAResult:
    """`path` is the path walked (when nothing was found: the classifier's best guess, or None)."""

    answers: list[str]
    facts: list[Fact]
    linked: list[str]
    path: RelationPath | None
    confidence: float
    reason: str | None = None  # set when `answers` is empty
    support: list[int] = field(default_factory=list)  # supporting paths of each answer


@runtime_checkable
class KGQAEngine(Protocol):
    """Answers questions over one graph (at one snapshot pin); `link` and `masked` let a caller embed first."""

    def link(self, question: str) -> Linking: ...

    def masked(self, question: str, linking: Linking) -> str: ...

    def answer(
        self, question: str, *, vector: np.ndarray | None = None, linking: Linking | None = None
    ) -> KGQAResult: ...


class EngineLoader(Protocol):
    """Makes the engine for a store pinned at `max_seq` (None: every snapshot), with the `kgqa:` config's limits."""

    def __call__(self, store: QueryRunner, config: KGQAConfig, max_seq: int | None) -> KGQAEngine: ...
