"""The router: decides each turn's intent and route, then streams the chosen part's answer back.

In: a `Turn`. Out: one `RouteDecision`, then the answer's `TokenChunk`s. Intents are recognised by nearest
examples in embedding space (the embeddings deployment), so adding an intent is configuration: a name, a few
example utterances and a route. GraphRAG is told the intent (`GraphRAG.answer(turn, intent)`): "knowledge" is answered
from the knowledge graph, "news" from real-time items with a recency preference.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from almquist import metrics
from almquist.config import RouterConfig
from almquist.errors import FailedPrecondition
from deployments.llm.engine import TokenChunk
from graphs.handles import streaming
from graphs.turn import MediaItem, RouteDecision, Turn, TurnEvent

_DRAW_PREFIX = re.compile(
    r"^\s*(?:please\s+)?(?:(?:can|could|would|will)\s+you\s+)?(?:please\s+)?"
    r"(?:draw|paint|sketch|make|create|generate|render|design)\s+(?:me\s+|us\s+)?"
    r"(?:(?:a|an)\s+(?:picture|image|drawing|painting|sketch|poster|illustration)\s+of\s+)?",
    re.IGNORECASE,
)


def is_drawing_request(text: str) -> bool:
    """True when the turn asks for a picture with a drawing verb ("draw me ...", "could you paint ..."): the
    "draw" intent is an action, and topic words alone ("the latest about the Vermeer sketch") must not start it."""
    return _DRAW_PREFIX.match(text) is not None


def drawing_prompt(text: str) -> str:
    """'Can you draw me a castle on a hill?' -> 'a castle on a hill': what to draw, for the image model."""
    prompt = _DRAW_PREFIX.sub("", text).strip().rstrip("?.! ")
    prompt = re.sub(r"[\s,]+please$", "", prompt, flags=re.IGNORECASE)
    return prompt or text.strip()


class NearestExamples:
    """Nearest-example classification over unit-length embeddings: the label whose examples are closest, or the
    fallback below `min_similarity`."""

    def __init__(self, example_vectors: dict[str, np.ndarray], fallback: str, min_similarity: float) -> None:
        self._examples = example_vectors
        self._fallback = fallback
        self._min_similarity = min_similarity

    def classify(self, vector: np.ndarray, allowed: Callable[[str], bool] = lambda _: True) -> tuple[str, float]:
        """The best intent among those `allowed` (a turn may rule an intent out, e.g. "draw" with no drawing verb)."""
        # Mean of the 3 best matches per intent: steadier than the single best, still local.
        scores = {
            intent: float(np.mean(np.sort(examples @ vector)[-3:]))
            for intent, examples in self._examples.items()
            if allowed(intent)
        }
        if not scores:
            return self._fallback, 0.0
        label, best = max(scores.items(), key=lambda item: item[1])
        if best < self._min_similarity:
            return self._fallback, best
        return label, best


class IntentClassifier(NearestExamples):
    """The router's intents (RouterConfig.intent_examples)."""

    def __init__(self, config: RouterConfig, example_vectors: dict[str, np.ndarray]) -> None:
        super().__init__(example_vectors, config.fallback_intent, config.min_similarity)


class TopicClassifier(NearestExamples):
    """What a turn is about (RouterConfig.topic_examples): the avatar's scene follows it."""

    def __init__(self, config: RouterConfig, example_vectors: dict[str, np.ndarray]) -> None:
        super().__init__(example_vectors, config.fallback_topic, config.min_topic_similarity)


@serve.deployment(name="Router", ray_actor_options={"num_cpus": 0.1})
class Router:
    def __init__(
        self,
        llm: DeploymentHandle,
        graph_rag: DeploymentHandle,
        embeddings: DeploymentHandle,
        config: RouterConfig | dict | None = None,
        scene: DeploymentHandle | None = None,
        image_gen: DeploymentHandle | None = None,
    ) -> None:
        self._config = RouterConfig.model_validate(config or {})
        self._llm = llm
        self._graph_rag = graph_rag
        self._embeddings = embeddings
        self._scene = scene
        self._image_gen = image_gen
        self._classifiers: tuple[IntentClassifier, TopicClassifier] | None = None
        self._classifier_lock = asyncio.Lock()

    async def _embed_examples(self, examples: dict[str, list[str]]) -> dict[str, np.ndarray]:
        names = list(examples)
        vectors = await asyncio.gather(*(self._embeddings.embed.remote(examples[name]) for name in names))
        return dict(zip(names, vectors, strict=True))

    async def _get_classifiers(self) -> tuple[IntentClassifier, TopicClassifier]:
        async with self._classifier_lock:  # embed the examples once, on first use (the embeddings may still load)
            if self._classifiers is None:
                intents, topics = await asyncio.gather(
                    self._embed_examples(self._config.intent_examples),
                    self._embed_examples(self._config.topic_examples),
                )
                self._classifiers = IntentClassifier(self._config, intents), TopicClassifier(self._config, topics)
        return self._classifiers

    async def decide(self, turn: Turn) -> RouteDecision:
        """The turn's intent and route; its time is the turn's `router` stage (almquist.metrics)."""
        # The first turn also pays for embedding the examples: the stage histogram shows that as it happened.
        with metrics.time_stage("router"):
            classifier, topics = await self._get_classifiers()
            [vector] = await self._embeddings.embed.remote([turn.text])
            drawing = is_drawing_request(turn.text)
            intent, score = classifier.classify(
                vector, lambda name: drawing or self._config.routes.get(name) != "image_gen"
            )
            topic, _ = topics.classify(vector)
        route = self._config.routes.get(intent, "llm")
        if turn.image is not None and route != "image_gen":
            route = "vision"  # a question about a picture is answered from what the picture holds
        elif turn.image is None and route == "vision":
            route = "llm"  # "what do you see?" with no picture: a conversational answer, not an error
        return RouteDecision(intent=intent, route=route, confidence=max(0.0, min(1.0, score)), topic=topic)

    async def route(self, turn: Turn) -> AsyncIterator[TurnEvent]:
        decision = await self.decide(turn)
        yield decision
        if decision.route == "image_gen":
            async for item in self._draw(turn):
                yield item
            return
        if decision.route == "vision":
            if self._scene is None:
                raise FailedPrecondition(
                    "this deployment cannot look at pictures: configure vision.detection in the Serve config"
                )
            stream = self._scene.options(stream=True).describe.remote(turn)
        elif decision.route == "graph_rag":
            # the intent picks GraphRAG's path: the knowledge graph, or real-time items for "news"
            stream = self._graph_rag.options(stream=True).answer.remote(turn, decision.intent)
        else:
            stream = self._llm.options(stream=True).generate.remote(turn.generation_request())
        async for chunk in streaming(stream):
            yield chunk

    async def _draw(self, turn: Turn) -> AsyncIterator[TokenChunk | MediaItem]:
        """A drawing for a "draw" turn: a caption, then the image (the turn's picture, redrawn, when it has one)."""
        if self._image_gen is None:
            raise FailedPrecondition("this deployment cannot draw: configure vision.image_gen in the Serve config")
        prompt = drawing_prompt(turn.text)
        init_image = (turn.image.data, turn.image.mime_type) if turn.image is not None else None
        output = None
        stream = self._image_gen.options(stream=True).generate.remote(prompt, init_image=init_image)
        async for item in streaming(stream):
            output = item  # progress events, then the image; Converse has no progress event: keep the last
        assert output is not None  # ImageGen's stream ends with the image, or raises
        caption = f"Here is {prompt}." if init_image is None else f"Here is your picture, redrawn as {prompt}."
        words = re.findall(r"\S+\s*", caption)
        for i, word in enumerate(words):
            yield TokenChunk(token_id=-1, text=word, index=i, finish_reason="stop" if i == len(words) - 1 else None)
        yield MediaItem(
            kind="image",
            mime_type="image/png",
            data=output.png,
            description=prompt,
            metadata=(
                ("seed", str(output.seed)),
                ("steps", str(output.steps)),
                ("size", f"{output.width}x{output.height}"),
                ("mode", output.mode),
                ("model", output.model),
            ),
        )
