"""The relation-path engine (`KGQA`, the family's `KGQAEngine`): question -> linked entity -> relation path ->
hop-by-hop expansion -> ranked answers + facts. `load_engine` is how GraphRAG makes one from the `kgqa:` config.

In: a question (optionally the embedding of its masked text, when the caller already has it). Out: `KGQAResult`:
answer names ranked by how many distinct paths from the topic entity reach them (ties by name), the facts along
one supporting path of each top answer as citations, the linked node ids, the path walked and a confidence
(path probability x link score). Everything comes from `store.run("expand_out" | "expand_in", ...)`, so an
answer always exists in the graph; when nothing is found the answers are empty and `reason` says why.

Decoding is graph-aware: paths are tried most likely first, each from the linked nodes whose label it starts at,
and the first that reaches anything wins; a path after the first must have at least `min_path_probability`, so a
question is never answered by a reading the classifier thinks unlikely; no path that fits the linked entity
reaching `min_confidence` means the question is not one this engine answers (the caller falls back, e.g. to the
LLM alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from almquist.config import KGQAConfig
from almquist.stores.graph import QueryRunner

from .classifier import PathClassifier, mask_mention
from .embedder import Embed, minilm_embedder
from .engine import Fact, KGQAResult
from .linker import EntityLinker, LinkedEntity, Linking, VectorSearch
from .paths import RelationPath


@dataclass
class _Walk:
    counts: dict[str, int]  # node -> supporting paths, at the last hop
    names: dict[str, str]
    back: list[dict[str, str]]  # per hop: node -> one predecessor (the first seen)


class KGQA:
    """Answers questions over a `GraphStore` (any backend) or a runner of its named queries; the family's
    `KGQAEngine` (engine.py). See the module docstring."""

    def __init__(
        self,
        store: QueryRunner,
        classifier: PathClassifier,
        linker: EntityLinker | None = None,
        *,
        max_seq: int | None = None,
        max_answers: int = 100,
        cited_answers: int = 5,
        max_frontier: int = 50_000,
        min_confidence: float = 0.1,
        min_path_probability: float = 0.25,
        max_paths_tried: int = 3,
    ) -> None:
        self.store = store
        self.classifier = classifier
        self.linker = linker or EntityLinker(store, max_seq=max_seq)
        self.max_seq = max_seq
        self.max_answers = max_answers
        self.cited_answers = cited_answers
        self.max_frontier = max_frontier
        self.min_confidence = min_confidence
        self.min_path_probability = min_path_probability
        self.max_paths_tried = max_paths_tried

    @classmethod
    def from_model_dir(
        cls,
        store: QueryRunner,
        model_dir: str | Path,
        *,
        embed: Embed | None = None,
        vector_search: VectorSearch | None = None,
        max_seq: int | None = None,
        torch_threads: int | None = 1,
        **options: Any,
    ) -> KGQA:
        """The engine with a saved classifier and the store's vocabulary loaded into the linker.

        `embed` defaults to the MiniLM variant (int8 or fp32) the model was trained with, run with
        `torch_threads` intra-op threads in this process (one short text gains nothing from more, and on a busy
        2-core machine a second thread multiplies the p99); `options` go to the constructor.
        """
        if embed is None:
            trained_with = str(PathClassifier.read_meta(model_dir).get("embedder") or "")
            embed = minilm_embedder(int8=not trained_with.endswith("/fp32"), threads=torch_threads)
        classifier = PathClassifier.load(model_dir, embed)
        linker = EntityLinker.from_store(store, max_seq=max_seq, vector_search=vector_search)
        return cls(store, classifier, linker, max_seq=max_seq, **options)

    def link(self, question: str) -> Linking:
        return self.linker.link(question)

    def masked(self, question: str, linking: Linking) -> str:
        """The text the classifier embeds; a caller that embeds elsewhere passes the vector to `answer`."""
        return mask_mention(question, linking.mention)

    def answer(self, question: str, *, vector: np.ndarray | None = None, linking: Linking | None = None) -> KGQAResult:
        if not question or not question.strip():
            return KGQAResult([], [], [], None, 0.0, "the question is empty")
        linking = linking or self.linker.link(question)
        if not linking.entities:
            what = f"{linking.mention!r}" if linking.mention else "anything in the question"
            return KGQAResult([], [], [], None, 0.0, f"no entity in the knowledge graph matches {what}")
        if vector is None:
            vector = self.classifier.embed([self.masked(question, linking)])[0]
        ranked = self.classifier.rank_vector(vector)
        linked = [e.id for e in linking.entities]
        tried: list[str] = []
        for path, probability in ranked:
            threshold = self.min_path_probability if tried else self.min_confidence
            if probability < threshold or len(tried) >= self.max_paths_tried:
                break
            for entity in linking.entities:
                if entity.label != path.start:
                    continue
                tried.append(f"{path.key()} from {entity.id}")
                walk = self._walk(entity, path)
                if walk.counts:
                    return self._result(path, walk, probability * entity.score, linked)
        if tried:
            why = "the knowledge graph has no facts along " + "; ".join(tried)
        else:
            labels = "/".join(sorted({e.label for e in linking.entities}))
            why = f"no kind of question this engine knows (p >= {self.min_confidence}) starts at a {labels} node"
        return KGQAResult([], [], linked, ranked[0][0] if ranked else None, 0.0, why)

    def _walk(self, topic: LinkedEntity, path: RelationPath) -> _Walk:
        counts = {topic.id: 1}
        names = {topic.id: topic.name}
        back: list[dict[str, str]] = []
        for relation, direction in path.hops:
            rows = self.store.run(
                f"expand_{direction}", {"ids": list(counts), "rel": relation, "max_seq": self.max_seq}
            )
            step: dict[str, int] = {}
            came_from: dict[str, str] = {}
            for row in rows:
                dst, src = row["dst"], row["src"]
                # a walk never comes back through the question's own entity ("other films by X's director")
                if dst == topic.id or src not in counts:
                    continue
                step[dst] = step.get(dst, 0) + counts[src]
                came_from.setdefault(dst, src)
                names[dst] = row["dst_name"]
            if len(step) > self.max_frontier:  # bound the work on hub nodes: keep the best-supported
                keep = sorted(step, key=lambda n: -step[n])[: self.max_frontier]
                step = {n: step[n] for n in keep}
            counts = step
            back.append(came_from)
            if not counts:
                break
        return _Walk(counts, names, back)

    def _result(self, path: RelationPath, walk: _Walk, confidence: float, linked: list[str]) -> KGQAResult:
        ranked = sorted(walk.counts, key=lambda n: (-walk.counts[n], walk.names[n]))[: self.max_answers]
        facts: dict[Fact, None] = {}
        for answer in ranked[: self.cited_answers]:
            chain, node = [], answer
            for hop in range(len(path.hops) - 1, -1, -1):  # back from the answer to the topic entity
                src = walk.back[hop][node]
                relation, direction = path.hops[hop]
                src_name, dst_name = walk.names[src], walk.names[node]
                chain.append(
                    Fact(src_name, relation, dst_name) if direction == "out" else Fact(dst_name, relation, src_name)
                )
                node = src
            facts.update(dict.fromkeys(reversed(chain)))
        return KGQAResult(
            answers=[walk.names[n] for n in ranked],
            facts=list(facts),
            linked=linked,
            path=path,
            confidence=confidence,
            support=[walk.counts[n] for n in ranked],
        )


def load_engine(store: QueryRunner, config: KGQAConfig, max_seq: int | None = None) -> KGQA:
    """The engine GraphRAG runs (an `engine.EngineLoader`): the classifier saved in `config.model_dir`, the
    store's vocabulary at `max_seq`, the config's answer limits."""
    return KGQA.from_model_dir(
        store,
        Path(config.model_dir).expanduser(),
        max_seq=max_seq,
        max_answers=config.max_answers,
        cited_answers=config.cited_answers,
        min_path_probability=config.min_path_probability,
    )
