"""Typed configuration of the conversation ingress (`conversation:` in a profile): personalities and input limits."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from almquist.config.base import Strict

DEFAULT_PERSONALITIES: dict[str, str] = {
    "friendly": (
        "You are Almquist, a warm and knowledgeable companion who talks about movies, sports, music and the "
        "news. Answer briefly and clearly."
    ),
    "critic": ("You are Almquist, a sharp film and music critic. Give crisp, opinionated answers in a few sentences."),
    "sports_fan": "You are Almquist, an enthusiastic sports commentator. Keep answers short and lively.",
}


class ConversationConfig(Strict):
    """The conversation ingress: sessions, personalities and input limits."""

    personalities: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PERSONALITIES))
    default_personality: str = "friendly"
    max_text_chars: int = Field(4000, gt=0, description="Longest typed turn accepted.")
    max_history_turns: int = Field(6, ge=0, description="Earlier exchanges sent to the LLM with a turn.")
    max_pending_turns: int = Field(8, gt=0, description="Turns a stream may queue while one is answered.")
    stream_lease_s: float = Field(
        8.0, gt=0, description="A Converse stream's lease on its session; renewed every quarter of it while it lives."
    )
    idle_stream_s: float = Field(
        300.0, gt=0, description="A Converse stream with no client event and no answer in flight this long is closed."
    )

    @field_validator("default_personality")
    @classmethod
    def _known_default(cls, value: str, info: ValidationInfo) -> str:
        known = info.data.get("personalities", {})
        if known and value not in known:
            raise ValueError(f"default_personality {value!r} is not one of {sorted(known)}")
        return value
