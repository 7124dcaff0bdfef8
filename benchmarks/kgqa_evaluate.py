"""Hits@1 of the KGQA engine on MetaQA questions: the one scorer the tests, the benchmark and the notebooks share.

In: a `KGQA` engine and `MetaQAQuestion`s (gold answers, hop count, qtype). Out: `HopScore`: the counts (hits =
the first answer is a gold answer; empty = no answer; path_correct = the classifier's first choice is the qtype's
path) and one `QuestionResult` per question, in the order given, so accuracy can be grouped by question type or
hop afterwards and a miss read with the engine's reason. `QuestionResult.row()` is a plain dict (a DataFrame or
Ray Data row); `HopScore.of` sums results back up, e.g. one qtype's, or those scored in several processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from almquist.stores.graph import QueryRunner
from deployments.kgqa.answer import KGQA
from deployments.kgqa.metaqa import MetaQAQuestion
from deployments.kgqa.paths import path_from_qtype


@dataclass(frozen=True)
class QuestionResult:
    """One question's outcome. `path_correct` is None when the question has no qtype (nothing to compare)."""

    text: str
    qtype: str | None
    hops: int
    gold: tuple[str, ...]
    predicted: tuple[str, ...]  # the engine's ranked answers (empty: it gave none)
    hit: bool
    path_correct: bool | None
    reason: str | None = None  # the engine's why, when it gave no answer

    def row(self) -> dict[str, Any]:
        """The result as plain values (lists, not tuples), one row of a table."""
        row = asdict(self)
        row["gold"], row["predicted"] = list(self.gold), list(self.predicted)
        return row


@dataclass
class HopScore:
    """Counts over a set of questions (usually one hop), and each question's result."""

    questions: int = 0
    hits: int = 0
    empty: int = 0
    path_correct: int = 0
    results: list[QuestionResult] = field(default_factory=list)

    @property
    def answers(self) -> list[list[str]]:
        """The ranked answers of each question, in order (to compare two stores' outputs)."""
        return [list(r.predicted) for r in self.results]

    @property
    def hits_at_1(self) -> float:
        """hits / questions; 0.0 for no questions."""
        return self.hits / self.questions if self.questions else 0.0

    @classmethod
    def of(cls, results: Iterable[QuestionResult]) -> HopScore:
        """The score of these results (e.g. one qtype's, or results gathered from several workers)."""
        score = cls()
        for result in results:
            score.add(result)
        return score

    def add(self, result: QuestionResult) -> None:
        self.questions += 1
        self.hits += result.hit
        self.empty += not result.predicted
        self.path_correct += bool(result.path_correct)
        self.results.append(result)


def evaluate(engine: KGQA, questions: Sequence[MetaQAQuestion]) -> HopScore:
    """Scores `engine` on `questions`; masked texts are embedded once each and handed to `answer` as vectors."""
    linkings = [engine.link(q.text) for q in questions]
    masked = [engine.masked(q.text, linking) for q, linking in zip(questions, linkings, strict=True)]
    vectors = engine.classifier.embed_texts(masked)
    score = HopScore()
    for question, linking, vector in zip(questions, linkings, vectors, strict=True):
        result = engine.answer(question.text, vector=vector, linking=linking)
        path_correct = None
        if question.qtype:  # the classifier's own first choice, before the graph-aware fallback
            path_correct = engine.classifier.rank_vector(vector)[0][0] == path_from_qtype(question.qtype)
        score.add(
            QuestionResult(
                text=question.text,
                qtype=question.qtype,
                hops=question.hops,
                gold=question.answers,
                predicted=tuple(result.answers),
                hit=bool(result.answers) and result.answers[0] in question.answers,
                path_correct=path_correct,
                reason=result.reason,
            )
        )
    return score


def gold_path_reaches(store: QueryRunner, question: MetaQAQuestion) -> bool:
    """Whether the qtype's own path from the topic entity reaches a gold answer (the engine's best case)."""
    if not question.qtype or not question.mention:
        return False
    path = path_from_qtype(question.qtype)
    topic = f"{path.start}:{question.mention}"
    frontier = {topic}
    for relation, direction in path.hops:
        rows = store.run(f"expand_{direction}", {"ids": sorted(frontier), "rel": relation})
        frontier = {row["dst"] for row in rows if row["dst"] != topic}
    return any(node.partition(":")[2] in question.answers for node in frontier)
