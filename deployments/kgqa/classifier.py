"""Relation-path classifier: a question (its entity mention masked) -> which `RelationPath` it asks to walk.

In: question texts and an `Embed` function (texts -> L2-normalised float32 rows; MiniLM-L6, see embedder.py). Out:
`predict(question) -> (path, probability)` and `rank(...)`, every known path with its probability. The model is a
multinomial logistic regression over the sentence embedding, fitted with scikit-learn and kept as plain numpy
arrays, so `save(dir)` writes `coef.npy`, `intercept.npy` and `meta.json` (the path keys) and `load(dir)` reads
them back without unpickling anything; `meta.json` also names the embedder, and `load` refuses another one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embedder import Embed
from .paths import RelationPath

Progress = Callable[[int, int], None]  # (texts embedded so far, texts to embed)
MASK = "NE"  # what replaces the entity mention: the path depends on the wording, not on which entity
FORMAT_VERSION = 1
BRACKETED = re.compile(r"\[[^\]]*\]")


def mask_mention(question: str, mention: str | None = None) -> str:
    """Replaces the `[bracketed]` mention, else every occurrence of `mention`, with MASK."""
    if BRACKETED.search(question):
        return BRACKETED.sub(MASK, question)
    if mention:
        return re.sub(re.escape(mention), MASK, question, flags=re.IGNORECASE)
    return question


class PathClassifier:
    """See the module docstring. `labels[i]` is the path of row i of `coef`."""

    def __init__(
        self,
        embed: Embed,
        labels: Sequence[RelationPath] = (),
        coef: np.ndarray | None = None,
        intercept: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.embed = embed
        self.labels = list(labels)
        self.coef = coef
        self.intercept = intercept
        self.meta = dict(meta or {})

    def embed_texts(self, texts: Sequence[str], batch: int = 256, progress: Progress | None = None) -> np.ndarray:
        """Texts -> embeddings, each distinct text embedded once, `batch` at a time; `progress(done, total)`
        after each batch (MetaQA's ~40k questions are ~500 distinct texts once masked)."""
        unique = list(dict.fromkeys(texts))
        if not unique:
            return np.zeros((0, 0), np.float32)
        rows = []
        for start in range(0, len(unique), batch):
            rows.append(np.asarray(self.embed(unique[start : start + batch]), dtype=np.float32))
            if progress:
                progress(min(start + batch, len(unique)), len(unique))
        index = {text: i for i, text in enumerate(unique)}
        return np.concatenate(rows)[[index[t] for t in texts]]

    def fit(
        self,
        questions: Sequence[str],
        paths: Sequence[RelationPath],
        *,
        c: float = 100.0,
        progress: Progress | None = None,
    ) -> PathClassifier:
        """Fits on questions (mentions in brackets) labelled with their paths.

        Each distinct (masked text, path) pair is one row, however often it occurs: the path depends on the
        wording, and MetaQA repeats a few hundred wordings tens of times each, unevenly.
        """
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        if len(questions) != len(paths) or not questions:
            raise ValueError(f"fit needs as many paths as questions, at least one ({len(questions)}, {len(paths)})")
        pairs = dict.fromkeys(zip((mask_mention(q) for q in questions), paths, strict=True))
        vectors = self.embed_texts([text for text, _ in pairs], progress=progress)
        self.labels = sorted(set(paths), key=RelationPath.key)
        index = {path: i for i, path in enumerate(self.labels)}
        y = np.array([index[path] for _, path in pairs])
        if len(self.labels) == 1:  # sklearn needs two classes; one path is always that path
            self.coef = np.zeros((1, vectors.shape[1]), np.float32)
            self.intercept = np.zeros(1, np.float32)
        else:
            # a few hundred rows: BLAS threads only add contention (6.5 s instead of 0.1 s on a busy 2-core box)
            with threadpool_limits(1):
                model = LogisticRegression(C=c, max_iter=5000).fit(vectors, y)
            self.coef = model.coef_.astype(np.float32)
            self.intercept = model.intercept_.astype(np.float32)
            if len(self.labels) == 2:  # binary sklearn keeps one row: class 1 against class 0
                self.coef = np.concatenate([-self.coef / 2, self.coef / 2])
                self.intercept = np.concatenate([-self.intercept / 2, self.intercept / 2])
        self.meta.update(
            {
                "format": FORMAT_VERSION,
                "embedder": getattr(self.embed, "name", None),
                "c": c,
                "trained_on": len(questions),
                "distinct_texts": len(pairs),
                "mask": MASK,
            }
        )
        return self

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Embeddings (n, d) -> path probabilities (n, len(labels))."""
        if self.coef is None or self.intercept is None:
            raise RuntimeError("the classifier is not fitted: call fit() or load()")
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def rank_vector(self, vector: np.ndarray) -> list[tuple[RelationPath, float]]:
        """One masked question's embedding -> every path with its probability, most likely first."""
        probs = self.probabilities(vector.reshape(1, -1))[0]
        return [(self.labels[i], float(probs[i])) for i in np.argsort(-probs)]

    def rank(self, question: str, mention: str | None = None) -> list[tuple[RelationPath, float]]:
        return self.rank_vector(self.embed([mask_mention(question, mention)])[0])

    def predict(self, question: str, mention: str | None = None) -> tuple[RelationPath, float]:
        return self.rank(question, mention)[0]

    def predict_many(self, questions: Sequence[str]) -> list[RelationPath]:
        """Batch prediction (mentions in brackets), for evaluation."""
        vectors = self.embed_texts([mask_mention(q) for q in questions])
        return [self.labels[i] for i in self.probabilities(vectors).argmax(axis=1)]

    def save(self, folder: str | Path) -> Path:
        if self.coef is None or self.intercept is None:
            raise RuntimeError("nothing to save: the classifier is not fitted")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "coef.npy", self.coef, allow_pickle=False)
        np.save(folder / "intercept.npy", self.intercept, allow_pickle=False)
        meta = {**self.meta, "labels": [p.key() for p in self.labels]}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    @staticmethod
    def read_meta(folder: str | Path) -> dict[str, Any]:
        return json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))

    @classmethod
    def load(cls, folder: str | Path, embed: Embed) -> PathClassifier:
        """The saved model, embedding with `embed`, which must be the embedder it was trained with."""
        folder = Path(folder)
        meta = cls.read_meta(folder)
        trained_with, given = meta.get("embedder"), getattr(embed, "name", None)
        if trained_with and given and trained_with != given:
            raise ValueError(f"{folder} was trained on {trained_with} embeddings, not {given}")
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{folder}: model format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
        labels = [RelationPath.from_key(k) for k in meta.pop("labels")]
        coef = np.load(folder / "coef.npy", allow_pickle=False)
        intercept = np.load(folder / "intercept.npy", allow_pickle=False)
        if coef.shape[0] != len(labels) or intercept.shape != (len(labels),):
            raise ValueError(f"{folder}: {len(labels)} labels but weights of shape {coef.shape}")
        return cls(embed, labels, coef, intercept, meta)
