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

from almquist import metrics
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

    # Serve awaits an async __init__ (mypy wants __init__ to return None, not a coroutine)
    async def __init__(  # type: ignore[misc]
        self, config: LLMConfig | dict[str, Any], engine_cls: str | type | None = None
    ) -> None:
        self._config = LLMConfig.model_validate(config)
        self._engine: LLMEngine = load_engine_cls(engine_cls or self._config.backend)(self._config)
        await self._engine.start()
        self._backend = type(self._engine).__name__  # the `backend` tag of the LLM metrics

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """Streams the engine's chunks; records time to first token, tokens, and tokens/s (almquist.metrics)."""
        validate_request(request, self._config)
        started = time.monotonic()
        tokens, last = 0, started
        stream = self._engine.stream(request)
        try:
            async for chunk in stream:
                last = time.monotonic()  # before the yield: the consumer's time is not generation time
                if tokens == 0:
                    metrics.observe_stage("llm_first_token", last - started)
                tokens += 1
                metrics.record(metrics.LLM_TOKENS, 1, backend=self._backend)  # per chunk: the rate stays live
                yield chunk
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # reaches the engine on cancel too
            if tokens:  # a cancelled request still generated at this rate until it stopped
                rate = tokens / max(last - started, 1e-9)
                metrics.record(metrics.LLM_TOKENS_PER_SECOND, rate, backend=self._backend)

    async def stats(self) -> dict[str, Any]:
        """The engine's counters (requests, tokens generated, cancelled...)."""
        return asdict(self._engine.stats)

    def config(self) -> LLMConfig:
        return self._config
