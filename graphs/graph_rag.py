"""Graph-RAG: answers knowledge questions. PLACEHOLDER until the knowledge issue lands.

In: a `Turn`. Out: `TokenChunk`s (later also citations). Today it asks the LLM directly with a system prompt that
says no knowledge graph is connected, so answers are the model's own. The handles it will need (LLM and
embeddings) are already wired by `.bind()` in graphs/conversation.py, so the knowledge issue only replaces
`answer()`'s body with entity linking, Cypher retrieval and grounded generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.llm.engine import TokenChunk
from graphs.turn import Turn

UNGROUNDED_NOTE = " No knowledge base is connected yet: answer from what you know, briefly, and do not invent sources."


@serve.deployment(name="GraphRAG", ray_actor_options={"num_cpus": 0.1})
class GraphRAG:
    def __init__(self, llm: DeploymentHandle, embeddings: DeploymentHandle) -> None:
        self._llm = llm
        self._embeddings = embeddings

    async def answer(self, turn: Turn) -> AsyncIterator[TokenChunk]:
        request = turn.generation_request(turn.system_prompt + UNGROUNDED_NOTE)
        async for chunk in self._llm.options(stream=True).generate.remote(request):
            yield chunk
