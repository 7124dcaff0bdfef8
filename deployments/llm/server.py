"""The LLM Serve deployment: one engine per replica, injected by class.

In (by handle): `generate(GenerationRequest)` streamed with `.options(stream=True)`. Out: `TokenChunk`s. The
engine comes from `engine_cls` (tests pass any class with the `LLMEngine` protocol) or from `config.backend`.
Cancelling the caller's response generator closes the engine stream, which stops generation.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from ray import serve
from ray.util import metrics

from almquist.config import LLMConfig
from almquist.errors import InvalidArgument
from deployments.llm.engine import GenerationRequest, LLMEngine, TokenChunk

ENGINES: dict[str, str] = {
    "transformers": "deployments.llm.transformers_engine:TransformersEngine",
    "vllm": "deployments.llm.vllm_engine:VLLMEngine",
}


def load_engine_cls(spec: str | type) -> type[LLMEngine]:
    """An engine class from a backend name, a `module:Class` path, or the class itself."""
    if isinstance(spec, type):
        return spec
    module, _, name = ENGINES.get(spec, spec).partition(":")
    return getattr(importlib.import_module(module), name)


def validate_request(request: GenerationRequest, config: LLMConfig) -> None:
    if not request.messages:
        raise InvalidArgument("a generation request needs at least one message")
    if not 0 < request.max_tokens <= config.max_tokens_limit:
        raise InvalidArgument(f"max_tokens must be between 1 and {config.max_tokens_limit}, got {request.max_tokens}")
    if request.temperature < 0 or not 0 < request.top_p <= 1:
        raise InvalidArgument("temperature must be >= 0 and top_p in (0, 1]")


@serve.deployment(name="LLMServer", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class LLMServer:
    """Serves one LLM engine; see the module docstring."""

    async def __init__(self, config: LLMConfig | dict[str, Any], engine_cls: str | type | None = None) -> None:
        self._config = LLMConfig.model_validate(config)
        self._engine: LLMEngine = load_engine_cls(engine_cls or self._config.backend)(self._config)
        await self._engine.start()
        tags = ("backend",)
        self._tokens = metrics.Counter("almquist_llm_tokens", "Tokens generated.", tag_keys=tags)
        self._ttft = metrics.Histogram(
            "almquist_llm_time_to_first_token_s",
            "Seconds from request to first token.",
            boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
            tag_keys=tags,
        )
        self._tags = {"backend": type(self._engine).__name__}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        validate_request(request, self._config)
        started = time.monotonic()
        first = True
        stream = self._engine.stream(request)
        try:
            async for chunk in stream:
                if first:
                    self._ttft.observe(time.monotonic() - started, tags=self._tags)
                    first = False
                self._tokens.inc(1, tags=self._tags)
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # reaches the engine on cancel too

    async def stats(self) -> dict[str, Any]:
        """The engine's counters (requests, tokens generated, cancelled...)."""
        return asdict(self._engine.stats)

    def config(self) -> LLMConfig:
        return self._config
