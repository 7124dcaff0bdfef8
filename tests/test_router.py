"""Intent routing with the real MiniLM embeddings on utterances that are not among the configured examples."""

from __future__ import annotations

import numpy as np
import pytest

from almquist.config import EmbeddingsConfig, RouterConfig
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.embeddings import SentenceTransformerEngine, validate_texts
from graphs.router import IntentClassifier, TopicClassifier


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
    "text",
    [
        "Hey, how's it going?",
        "You are very funny!",
        "Good night, see you tomorrow.",
        "I'm bored.",
        "Tell me a long story about a dragon who learns to sing.",  # told in words, not drawn
    ],
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


@pytest.mark.parametrize(
    "text",
    [
        "What's the latest news?",
        "latest news about the climate summit",
        "What was the score of the Arsenal game?",
        "who won the game last night?",
        "what's the weather in Berlin?",
        "will it rain this afternoon?",
        "what's the price of Tesla stock?",
        "how are the markets today?",
        "Did Microsoft shares go up?",
    ],
)
def test_news_questions_route_to_graph_rag_as_news(engine, classifier, text):
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert intent == "news", (text, score)
    assert RouterConfig().routes[intent] == "graph_rag"


@pytest.mark.parametrize(
    "text", ["Who directed Inception?", "What movies did Tom Hanks star in?", "Who won the Oscar for best picture?"]
)
def test_movie_questions_stay_knowledge_beside_news(engine, classifier, text):
    """Words like "who won" lean to news too; a movie question must still reach the knowledge graph."""
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert intent == "knowledge", (text, score)


def test_router_tells_graph_rag_the_intent():
    """The route passes the decided intent to `GraphRAG.answer`, which picks the news path by it."""
    import asyncio

    from graphs.router import Router
    from graphs.turn import RouteDecision, Turn

    calls: list[tuple] = []

    class Stream:
        def __init__(self, *args) -> None:
            calls.append(args)

        def __aiter__(self):
            return self

        async def __anext__(self):
            raise StopAsyncIteration

    class Handle:
        def options(self, **_):
            return self

        def __getattr__(self, name):
            return type("Method", (), {"remote": staticmethod(lambda *args: Stream(name, *args))})()

    router = object.__new__(Router.func_or_class)  # the deployment's class, without Serve
    router._config, router._graph_rag, router._llm = RouterConfig(), Handle(), Handle()
    turn = Turn(turn_id="t1", text="who won the game?", system_prompt="")

    async def decide(_turn):
        return RouteDecision(intent="news", route="graph_rag", confidence=0.7)

    router.decide = decide

    async def run() -> list:
        return [item async for item in router.route(turn)]

    assert asyncio.run(run()) == [RouteDecision("news", "graph_rag", 0.7)]
    assert calls == [("answer", turn, "news")]


@pytest.mark.parametrize("text", ["What's up?", "Hello there, how are you doing today?"])
def test_greetings_with_news_words_stay_chitchat(engine, classifier, text):
    """Greetings say "what's up" and "today" like news questions do; a greeting must not be answered with headlines."""
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert intent == "chitchat", (text, score)


@pytest.mark.parametrize(
    "text", ["Draw me a horse.", "Could you paint a rainy street in Paris?", "Make an image of a spaceship."]
)
def test_drawing_requests_route_to_image_generation(engine, classifier, text):
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert (intent, RouterConfig().routes[intent]) == ("draw", "image_gen"), (text, score)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Tell me the latest about the Vermeer sketch", "news"),  # nearest to "draw" by its words alone
        ("What's new with the painting exhibition in Paris?", "news"),
        ("Sketch a lighthouse for me", "draw"),
    ],
)
def test_draw_needs_a_drawing_verb(engine, classifier, text, intent):
    from graphs.router import is_drawing_request

    drawing = is_drawing_request(text)
    allowed = lambda name: drawing or RouterConfig().routes[name] != "image_gen"  # noqa: E731 - as Router.decide
    assert classifier.classify(engine.embed([text], True)[0], allowed)[0] == intent


@pytest.mark.parametrize(
    "text", ["What do you see in this picture?", "What is this thing?", "Is there a cat in the photo?"]
)
def test_picture_questions_are_look(engine, classifier, text):
    intent, score = classifier.classify(engine.embed([text], True)[0])
    assert (intent, RouterConfig().routes[intent]) == ("look", "vision"), (text, score)


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("Draw me a cat.", "a cat"),
        ("Can you draw a castle on a hill?", "a castle on a hill"),
        ("please paint a picture of a red car, please", "a red car"),
        ("Generate an image of a dragon", "a dragon"),
        ("a watercolor fox", "a watercolor fox"),
    ],
)
def test_drawing_prompt_keeps_what_to_draw(text, prompt):
    from graphs.router import drawing_prompt

    assert drawing_prompt(text) == prompt


@pytest.fixture(scope="module")
def topics(engine) -> TopicClassifier:
    config = RouterConfig()
    return TopicClassifier(config, {name: engine.embed(ex, True) for name, ex in config.topic_examples.items()})


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("Which actors starred in The Godfather?", "movies"),
        ("Who won the Champions League final?", "sports"),
        ("What is the best album by Radiohead?", "music"),
        ("Is it going to snow in the mountains this weekend?", "nature"),
        ("What happened in the elections today?", "news"),
        ("What is your name?", "general"),
    ],
)
def test_topics_pick_the_avatars_scene(engine, topics, text, topic):
    found, score = topics.classify(engine.embed([text], True)[0])
    assert found == topic, (text, found, score)
