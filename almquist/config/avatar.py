"""Typed configuration of the avatar stream (`avatar:` in a profile): frame rate, pacing, idle motion, scenes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCENES = ("library", "movie_theater", "sports_arena", "music_studio", "outdoor_nature")


class AvatarConfig(BaseModel):
    """How the server animates the avatar (graphs/avatar.py, graphs/face.py). A client turns the avatar on with
    `SessionStart.avatar`; it needs a TTS deployment (speech.tts)."""

    model_config = ConfigDict(extra="forbid")

    fps: Literal[30, 60] = Field(60, description="Face frames per second.")
    lead_s: float = Field(
        0.1, gt=0, le=2.0, description="How far ahead of the audio clock events are sent (the client's jitter room)."
    )
    face_message_ms: float = Field(50, gt=0, le=1000, description="Face frames per FaceFrames message, in ms.")
    audio_chunk_ms: float = Field(50, gt=0, le=1000, description="Audio per AudioChunk event.")
    pause_fill_ms: float = Field(
        50, gt=0, le=1000, description="Silence (with idle frames) sent while the next sentence is not ready yet."
    )
    voice: str = Field("", description="TTS voice ('' for the TTS deployment's default).")
    rate: float = Field(1.0, gt=0, description="Speaking rate relative to normal.")
    coarticulation_s: float = Field(
        0.035, gt=0, le=0.5, description="How far a viseme's influence reaches past its edges (dominance decay)."
    )
    blink_interval_s: tuple[float, float] = Field((2.0, 6.0), description="Range of seconds between blinks.")
    blink_s: float = Field(0.16, gt=0, le=1.0, description="Length of one blink.")
    breathing_period_s: float = Field(4.0, gt=0, description="One breath.")
    head_sway_deg: float = Field(2.0, ge=0, le=15, description="Amplitude of the idle head movement.")
    close_up_intensity: float = Field(
        0.6, gt=0, le=1, description="An emotion at least this strong is an emotional moment: a close-up."
    )
    scenes: dict[str, Literal[SCENES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {
            "movies": "movie_theater",
            "sports": "sports_arena",
            "music": "music_studio",
            "nature": "outdoor_nature",
            "news": "library",
            "general": "library",
        },
        description="The router's topic -> the scene the avatar stands in.",
    )
    seed: int | None = Field(None, description="Seed of the idle motion (None: a new one per stream).")

    @model_validator(mode="after")
    def _check(self) -> AvatarConfig:
        low, high = self.blink_interval_s
        if not 0 < low <= high:
            raise ValueError(f"blink_interval_s must be (low, high) with 0 < low <= high, not {self.blink_interval_s}")
        return self
