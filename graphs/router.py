"""The router: decides each turn's intent and route, then streams the chosen part's answer back.

In: a `Turn`. Out: one `RouteDecision`, then the answer's `TokenChunk`s. Intents are recognised by nearest
examples in embedding space (the embeddings deployment), so adding an intent is configuration: a name, a few
example utterances and a route. GraphRAG is told the intent (`GraphRAG.answer(turn, intent)`): "knowledge" is answered
from the knowledge graph, "news" from real-time items with a recency preference.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from almquist import metrics
from almquist.config import RouterConfig
from deployments.llm.engine import TokenChunk
from graphs.turn import RouteDecision, Turn


class IntentClassifier:
    """Nearest-example intent classification over unit-length embeddings."""

    def __init__(self, config: RouterConfig, example_vectors: dict[str, np.ndarray]) -> None:
        self._config = config
        self._examples = example_vectors

    def classify(self, vector: np.ndarray) -> tuple[str, float]:
        # Mean of the 3 best matches per intent: steadier than the single best, still local.
        scores = {
            intent: float(np.mean(np.sort(examples @ vector)[-3:])) for intent, examples in self._examples.items()
        }
        intent, best = max(scores.items(), key=lambda item: item[1])
        if best < self._config.min_similarity:
            return self._config.fallback_intent, best
        return intent, best


@serve.deployment(name="Router", ray_actor_options={"num_cpus": 0.1})
class Router:
    def __init__(
        self,
        llm: DeploymentHandle,
        graph_rag: DeploymentHandle,
        embeddings: DeploymentHandle,
        config: RouterConfig | dict | None = None,
    ) -> None:
        self._config = RouterConfig.model_validate(config or {})
        self._llm = llm
        self._graph_rag = graph_rag
        self._embeddings = embeddings
        self._classifier: IntentClassifier | None = None
        self._classifier_lock = asyncio.Lock()

    async def _get_classifier(self) -> IntentClassifier:
        async with self._classifier_lock:  # embed the examples once, on first use (the embeddings may still load)
            if self._classifier is None:
                names = list(self._config.intent_examples)
                vectors = await asyncio.gather(
                    *(self._embeddings.embed.remote(self._config.intent_examples[name]) for name in names)
                )
                self._classifier = IntentClassifier(self._config, dict(zip(names, vectors, strict=True)))
        return self._classifier

    async def decide(self, turn: Turn) -> RouteDecision:
        """The turn's intent and route; its time is the turn's `router` stage (almquist.metrics)."""
        # The first turn also pays for embedding the examples: the stage histogram shows that as it happened.
        with metrics.time_stage("router"):
            classifier = await self._get_classifier()
            [vector] = await self._embeddings.embed.remote([turn.text])
            intent, score = classifier.classify(vector)
        route = self._config.routes.get(intent, "llm")
        return RouteDecision(intent=intent, route=route, confidence=max(0.0, min(1.0, score)))

    async def route(self, turn: Turn) -> AsyncIterator[RouteDecision | TokenChunk]:
        decision = await self.decide(turn)
        yield decision
        if decision.route == "graph_rag":
            # the intent picks GraphRAG's path: the knowledge graph, or real-time items for "news"
            stream = self._graph_rag.options(stream=True).answer.remote(turn, decision.intent)
        else:
            stream = self._llm.options(stream=True).generate.remote(turn.generation_request())
        async for chunk in stream:
            yield chunk
