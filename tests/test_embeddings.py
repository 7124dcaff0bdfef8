"""The embeddings family's engines on the same texts: the traced engine (TorchScript, one text at a time) gives
sentence-transformers' vectors in fp32 and close ones in int8, a text's vector never depends on its batch, and
`EmbeddingsConfig.engine` picks the engine the deployment runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from almquist.config import EmbeddingsConfig
from deployments.embeddings import ENGINES, SentenceTransformerEngine, TracedEngine

TEXTS = [
    "who directed NE",
    "what films did NE star in",
    "the films that share actors with the film NE were released in which years",
    "which language is Amélie in?",
    "Who won the game yesterday?",
]


@pytest.fixture(scope="module")
def engines():
    threads = torch.get_num_threads()
    reference = SentenceTransformerEngine(EmbeddingsConfig())
    fp32 = TracedEngine(EmbeddingsConfig(engine="traced-fp32"), threads=1)
    int8 = TracedEngine(EmbeddingsConfig(engine="traced-int8"), threads=1)
    yield reference, fp32, int8
    torch.set_num_threads(threads)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_traced_fp32_gives_the_sentence_transformers_vectors(engines):
    reference, fp32, _ = engines
    expected = reference.embed(TEXTS, True)
    vectors = fp32.embed(TEXTS, True)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape == (len(TEXTS), fp32.dimensions)
    assert cosines(vectors, expected).min() > 0.9999
    assert np.abs(vectors - expected).max() < 1e-4
    # MiniLM's pipeline ends in Normalize: encode() gives unit vectors either way, and so does the traced engine
    assert np.abs(fp32.embed(TEXTS, False) - reference.embed(TEXTS, False)).max() < 1e-4
    assert (fp32.name, fp32.dimensions) == (reference.name, reference.dimensions)
    assert fp32.vectors == f"{EmbeddingsConfig().model}/fp32"


def test_traced_int8_is_close_and_independent_of_its_batch(engines):
    reference, _, int8 = engines
    vectors = int8.embed(TEXTS, True)
    similarity = cosines(vectors, reference.embed(TEXTS, True))
    assert similarity.min() > 0.9, similarity  # quantised: close, not equal (~0.95 on short questions)
    assert similarity.max() < 0.9999  # really int8: the fp32 engine gives the same vectors
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([int8.embed([text], True) for text in TEXTS])
    assert np.array_equal(vectors, one_by_one)  # the vector a classifier was trained on is the one it is served
    assert int8.embed([], True).shape == (0, int8.dimensions)
    assert int8.vectors == f"{EmbeddingsConfig().model}/int8"


def test_the_config_picks_the_engine():
    assert ENGINES[EmbeddingsConfig().engine] is SentenceTransformerEngine  # the default is unchanged
    assert ENGINES[EmbeddingsConfig(engine="traced-int8").engine] is TracedEngine
    assert ENGINES[EmbeddingsConfig(engine="traced-fp32").engine] is TracedEngine
    with pytest.raises(ValidationError):
        EmbeddingsConfig(engine="onnx")
