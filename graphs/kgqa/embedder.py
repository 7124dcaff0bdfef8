"""Sentence embeddings for the path classifier: `Embed` = texts -> L2-normalised float32 rows.

Two ways in. `engine_embedder(engine)` adapts any `deployments.embeddings` engine (e.g. the shared
`SentenceTransformerEngine`). `MiniLMEmbedder` is the same MiniLM-L6 called lean for one short question at a time
(tokenizer -> transformer -> mean pooling -> normalise, no `encode()` bookkeeping), by default int8 and traced:
~4 ms instead of ~17 ms per question on one CPU core, which is most of the latency budget. An int8 model gives
different vectors (cosine ~0.95 to fp32), so a classifier is trained and served with the same `name`, which
`meta.json` records.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

import numpy as np

from almquist.config import EmbeddingsConfig, resolve_model_ref

Embed = Callable[[list[str]], np.ndarray]
PROBES = (
    "who is NE",
    "who directed the films written by NE",
    "the films that share actors with the film NE were released in which years, and who wrote them, and in "
    "which languages are they, and what are their genres",
)


class EngineEmbedder:
    """An embedding engine (`embed(texts, normalize)`) as an `Embed`."""

    def __init__(self, engine, name: str | None = None) -> None:
        self._engine = engine
        self.name = name or f"{getattr(engine, 'name', type(engine).__name__)}/fp32"

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._engine.embed(list(texts), True), dtype=np.float32)


def engine_embedder(engine) -> EngineEmbedder:
    return EngineEmbedder(engine)


class MiniLMEmbedder:
    """The configured sentence-transformers model (MiniLM-L6 by default), one text at a time, mean-pooled by hand.

    int8 (CPU) quantises the linear layers; the transformer is then traced with TorchScript, which removes the
    Python of every layer (~half of the remaining time for a ten-word question) and is kept only if it gives
    exactly the eager model's vectors on probes of several lengths. One text at a time because int8 activations
    are scaled per batch: in a batch, a text's vector would depend on its batch-mates and their padding, and
    training and serving vectors must be the same.
    """

    def __init__(
        self, config: EmbeddingsConfig | None = None, *, int8: bool = True, threads: int | None = None
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads is not None:  # process-wide: torch has one intra-op pool
            torch.set_num_threads(threads)
        config = config or EmbeddingsConfig()
        model = SentenceTransformer(resolve_model_ref(config.model), device=config.device, local_files_only=True)
        self._torch = torch
        self._tokenizer = model.tokenizer
        self._max_length = int(model.max_seq_length)
        self._device = config.device
        self._eager = model[0].auto_model.eval()
        self._traced = None
        # a fast tokenizer set to truncate is not safe to call from two threads at once ("Already borrowed"),
        # and callers run answer() in worker threads
        self._lock = threading.Lock()
        self.dimensions = int(self._eager.config.hidden_size)
        # the lean path must give what encode() gives (mean pooling + normalise), or it is the wrong model
        reference = model.encode([PROBES[1]], normalize_embeddings=True, convert_to_numpy=True)
        if float(np.abs(self([PROBES[1]]) - reference).max()) > 1e-4:
            raise ValueError(f"{config.model}: not a mean-pooled, normalised model; use engine_embedder()")
        self.int8 = int8 and config.device == "cpu"
        with warnings.catch_warnings():  # torch marks eager quantisation and TorchScript deprecated; both work
            warnings.simplefilter("ignore")
            if self.int8:
                self._eager = torch.ao.quantization.quantize_dynamic(self._eager, {torch.nn.Linear}, dtype=torch.qint8)
            self._traced = self._trace()
        self.name = f"{config.model}/{'int8' if self.int8 else 'fp32'}"

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

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), np.float32)
        with self._lock:
            return np.concatenate([self._one(text) for text in texts])

    def _one(self, text: str) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            ids, mask = self._tokens(text)
            if self._traced is not None:
                hidden = self._traced(ids, mask)["last_hidden_state"]
            else:
                hidden = self._eager(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = hidden.mean(dim=1)  # one text, no padding: the mean over its tokens is mean pooling
            return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()


def minilm_embedder(
    int8: bool = True, config: EmbeddingsConfig | None = None, threads: int | None = None
) -> MiniLMEmbedder:
    return MiniLMEmbedder(config, int8=int8, threads=threads)
