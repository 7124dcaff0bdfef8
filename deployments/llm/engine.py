"""What every LLM engine accepts and yields.

In: a `GenerationRequest` (chat messages and sampling settings). Out: an async stream of `TokenChunk`s, one per
generated token, then the stream ends. Closing the stream early (`aclose()`, or the task being cancelled) must
stop generation in the engine: that is how an interrupt reaches the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from almquist.config import LLMConfig


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    request_id: str = ""


@dataclass(frozen=True)
class TokenChunk:
    """One generated token: its id, the text it adds to the answer, and whether it is the last one."""

    token_id: int
    text: str
    index: int
    finish_reason: Literal["stop", "length"] | None = None


@dataclass
class EngineStats:
    """Counters an engine keeps; the deployment exposes them (tests and metrics read them)."""

    requests: int = 0
    tokens_generated: int = 0
    cancelled: int = 0
    last_request_tokens: int = 0
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class LLMEngine(Protocol):
    """An engine owns one model; `start()` loads it, `stream()` generates."""

    stats: EngineStats

    def __init__(self, config: LLMConfig) -> None: ...

    async def start(self) -> None: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]: ...

    async def shutdown(self) -> None: ...
