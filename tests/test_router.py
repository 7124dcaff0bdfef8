"""Intent routing with the real MiniLM embeddings on utterances that are not among the configured examples."""

from __future__ import annotations

import numpy as np
import pytest

from almquist.config import EmbeddingsConfig, RouterConfig
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.embeddings import SentenceTransformerEngine, validate_texts
from graphs.router import IntentClassifier


@pytest.fixture(scope="module")
def engine() -> SentenceTransformerEngine:
    return SentenceTransformerEngine(EmbeddingsConfig())


@pytest.fixture(scope="module")
def classifier(engine) -> IntentClassifier:
    config = RouterConfig()
    vectors = {name: engine.embed(examples, True) for name, examples in config.intent_examples.items()}
    return IntentClassifier(config, vectors)


def test_embeddings_are_unit_vectors_with_meaningful_similarity(engine):
    vectors = engine.embed(["guitar", "strumming", "stock market"], True)
    assert vectors.shape == (3, engine.dimensions) == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


@pytest.mark.parametrize(
    "text",
    [
        "Who directed Inception?",
        "Which actors starred in The Godfather?",
        "When was Jurassic Park released?",
        "Who composed the music for Star Wars?",
        "What films has Meryl Streep been in?",
    ],
)
def test_knowledge_questions_route_to_graph_rag(engine, classifier, text):
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert intent == "knowledge", (text, score)
    assert RouterConfig().routes[intent] == "graph_rag"


@pytest.mark.parametrize(
    "text", ["Hey, how's it going?", "You are very funny!", "Good night, see you tomorrow.", "I'm bored."]
)
def test_chitchat_routes_to_the_llm(engine, classifier, text):
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert intent == "chitchat", (text, score)


def test_low_similarity_falls_back():
    config = RouterConfig(intent_examples={"knowledge": ["x"]}, min_similarity=0.99, fallback_intent="chitchat")
    classifier = IntentClassifier(config, {"knowledge": np.array([[1.0, 0.0]], dtype=np.float32)})
    assert classifier.classify(np.array([0.6, 0.8], dtype=np.float32))[0] == "chitchat"


def test_embedding_input_limits():
    config = EmbeddingsConfig(max_texts=2, max_chars=5)
    with pytest.raises(InvalidArgument):
        validate_texts([], config)
    with pytest.raises(InvalidArgument, match="text 1 is empty"):
        validate_texts(["ok", " "], config)
    with pytest.raises(ResourceExhausted, match="limit is 2"):
        validate_texts(["a", "b", "c"], config)
    with pytest.raises(ResourceExhausted, match="limit is 5"):
        validate_texts(["abcdef"], config)
