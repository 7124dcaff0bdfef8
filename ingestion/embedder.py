"""`EntityEmbedder`: the pipeline's embedding stage, one per actor of Ray Data's actor pool.

In: `GraphBatch`es whose `embed_names` need vectors. Out: the same batches with `vectors` (float32, normalised).
It reuses the serving engine (`deployments.embeddings.SentenceTransformerEngine`, MiniLM in the local profile) and
loads it on the first batch that has something to embed, so a re-run with nothing new never loads the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from almquist.config import EmbeddingsConfig


class EntityEmbedder:
    def __init__(self, config: EmbeddingsConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = EmbeddingsConfig.model_validate(config)
        self._engine_cls = engine_cls
        self._engine: Any = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = list(batch["item"])
        for item in items:
            if item.embed_names:
                item.vectors = self._engine_or_load().embed(list(item.embed_names), normalize=True)
        return {"item": np.array(items, dtype=object)}

    def _engine_or_load(self) -> Any:
        if self._engine is None:
            from deployments.embeddings import SentenceTransformerEngine

            self._engine = (self._engine_cls or SentenceTransformerEngine)(self._config)
        return self._engine
