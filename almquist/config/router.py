"""Typed configuration of per-turn routing (`router:` in a profile; graphs/router.py): the example sentences of each
intent and topic, and where each intent goes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from almquist.config.base import Strict

DEFAULT_INTENT_EXAMPLES: dict[str, list[str]] = {
    "knowledge": [
        "Who directed Inception?",
        "Which movies did Tom Hanks star in?",
        "What year was The Matrix released?",
        "Who wrote the screenplay of Pulp Fiction?",
        "What genre is Alien?",
        "Which films were directed by Christopher Nolan?",
        "Which language is Amelie in?",
        "Who acted in Titanic?",
        "What films did Steven Spielberg direct?",
        "Who played the lead in Casablanca?",
    ],
    # Real-time items (news, scores, forecasts, prices): graph-RAG over the `news` collection, recency preferred.
    "news": [
        "What's new today?",
        "What is the latest news about the election?",
        "Any breaking news?",
        "What are today's headlines?",
        "What was the score last night?",
        "Who won the game yesterday?",
        "How did Arsenal do this weekend?",
        "What's the weather in Berlin today?",
        "Will it rain tomorrow?",
        "What is the price of Apple stock?",
        "How are the markets doing?",
        "Is the Nasdaq up today?",
        "Tell me the latest on the transfer rumours.",  # "tell me ..." is news too, not only stories
    ],
    # "draw me ...": image generation (deployments/image_gen); with a picture attached, an edit of that picture.
    "draw": [
        "Draw me a cat.",
        "Can you draw a castle on a hill?",
        "Paint a sunset over the ocean.",
        "Make a picture of a robot playing guitar.",
        "Generate an image of a dragon.",
        "Sketch a portrait of a jazz singer.",
        "Create a poster for a football match.",
        "Draw this in watercolor.",
    ],
    # questions about a picture the user sends (an ImageFrame with text): answered from detections (graphs/vision)
    "look": [
        "What do you see?",
        "What's in this picture?",
        "Describe this image.",
        "Is there a dog in this photo?",
        "What am I holding?",
        "How many people are in this picture?",
        "What is on the table?",
        "Can you tell what this is?",
    ],
    "chitchat": [
        "Hello there!",
        "How are you today?",
        "Tell me a joke.",
        "Thanks, that was helpful.",
        "Good morning!",
        "What do you like to do for fun?",
        "I am feeling a bit tired.",
        "Nice to meet you.",
        "Can you cheer me up?",
        "Goodbye, talk to you later.",
        "Hey, what's up with you?",  # a greeting, not a request for news
        # stories and poems are told in words: without these, "tell me a story about a dragon" sits nearer "draw"
        "Tell me a story.",
        "Tell me a long story about a knight and a dragon.",
        "Can you tell me a bedtime story about the sea?",
        "Write a short poem about autumn.",
    ],
}


# What a turn is about (the avatar's scene follows it: AvatarConfig.scenes). Below min_topic_similarity: "general".
DEFAULT_TOPIC_EXAMPLES: dict[str, list[str]] = {
    "movies": [
        "Who directed Inception?",
        "What's a good film to watch tonight?",
        "Which movies did Tom Hanks star in?",
        "Tell me about the Oscars.",
        "Who played the lead in Casablanca?",
        "Tell me about movies.",
        "I loved the new Dune movie.",
    ],
    "sports": [
        "Who won the game yesterday?",
        "How did Arsenal do this weekend?",
        "What was the score last night?",
        "Tell me about the World Cup.",
        "Who is the best tennis player?",
        "When is the next Formula 1 race?",
    ],
    "music": [
        "Who sang Bohemian Rhapsody?",
        "Recommend me some jazz albums.",
        "What's your favourite band?",
        "Tell me about the new Taylor Swift album.",
        "Which songs did the Beatles write?",
        "Tell me about music.",
    ],
    "news": [
        "What's new today?",
        "What are today's headlines?",
        "Any breaking news?",
        "What is the latest news about the election?",
        "How are the markets doing?",
        "What is the price of Apple stock?",
    ],
    "nature": [
        "What's the weather in Berlin today?",
        "Will it rain tomorrow?",
        "Tell me about the national parks.",
        "What are the best hiking trails?",
        "How do birds migrate?",
        "I love walking in the forest.",
    ],
}


Route = Literal["llm", "graph_rag", "image_gen", "vision"]

DEFAULT_ROUTES: dict[str, Route] = {
    "chitchat": "llm",
    "knowledge": "graph_rag",
    "news": "graph_rag",
    "draw": "image_gen",
    "look": "vision",
}


class RouterConfig(Strict):
    """Per-turn routing: intents recognised by nearest examples in embedding space, and where each goes."""

    intent_examples: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_INTENT_EXAMPLES))
    routes: dict[str, Route] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    fallback_intent: str = "chitchat"
    min_similarity: float = Field(0.2, description="Below this best similarity the fallback intent is used.")
    topic_examples: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_TOPIC_EXAMPLES))
    fallback_topic: str = "general"
    min_topic_similarity: float = Field(0.3, description="Below this best similarity the topic is the fallback.")

    @field_validator("intent_examples", "topic_examples")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        empty = [name for name, examples in value.items() if not examples]
        if not value or empty:
            raise ValueError(f"every intent needs at least one example (empty: {empty or 'all'})")
        return value
