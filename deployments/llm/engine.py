"""What every LLM engine accepts and yields.

In: a `GenerationRequest` (chat messages and sampling settings). Out: an async stream of `TokenChunk`s, one per
generated token, then the stream ends. Closing the stream early (`aclose()`, or the task being cancelled) must
stop generation in the engine: that is how an interrupt reaches the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

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


def special_tokens_of(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens (BOS/EOS, chat-template markers such as `<|im_start|>`), longest first."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            tokens.add(str(added.content))
    return tuple(sorted((t for t in tokens if t), key=len, reverse=True))


def without_special_tokens(content: str, special_tokens: tuple[str, ...]) -> str:
    """`content` with every special token of the tokenizer removed: text in a message (the user's, or retrieved
    material fenced by graphs/prompt_fence.py) can never be read as a turn boundary or a forged role; the chat
    template adds the real ones around it."""
    previous = None
    while previous != content:  # removing one may join the halves of another
        previous = content
        for token in special_tokens:
            content = content.replace(token, "")
    return content


def template_messages(request: GenerationRequest, special_tokens: tuple[str, ...]) -> list[dict[str, str]]:
    """The request's messages as a chat template takes them, each content without special tokens."""
    return [{"role": m.role, "content": without_special_tokens(m.content, special_tokens)} for m in request.messages]


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
