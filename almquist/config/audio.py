"""Typed configuration of the audio and music families (the `audio:` section of `AppConfig`; deployments/separation,
music_analysis, music_gen) and of the audio any family accepts (`AudioLimits`).

A family left out (None) is not deployed: its Media RPCs answer UNIMPLEMENTED naming the key that turns it on.
Model locations are references resolved by `almquist.config.resolve_model_ref` (a path, an id, or `pkg://`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from almquist.config.base import Strict


class AudioLimits(Strict):
    """What input audio may be; anything else is refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED."""

    min_sample_rate_hz: int = Field(8000, gt=0)
    max_sample_rate_hz: int = Field(96000, gt=0)
    max_channels: int = Field(8, gt=0)
    max_seconds: float = Field(600.0, gt=0, description="Longest clip (or one turn of streamed speech) accepted.")
    max_file_bytes: int = Field(128 << 20, gt=0, description="Largest encoded audio file accepted.")


class SeparationConfig(Strict):
    """Source separation with demucs: `model` is a demucs model repo folder (what `demucs --repo` takes: `<sig>.th`
    model files and `<name>.yaml` bags; `htdemucs` on the cluster) or one `.th` model file."""

    model: str
    name: str = Field("htdemucs", description="The model or bag in the `model` folder; unused when it is a .th file.")
    device: str = "cpu"
    segment_s: float = Field(10.0, gt=0, description="Audio streamed back per chunk (demucs's own segments overlap).")
    shifts: int = Field(0, ge=0, description="demucs random shifts (better quality, slower).")
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of demucs's segments (its CLI's --overlap).")
    audio: AudioLimits = Field(default_factory=AudioLimits)


class MusicAnalysisConfig(Strict):
    """Tempo, beats, key and chords with librosa; notes with basic-pitch's packaged ONNX model."""

    notes_model: str = Field(
        "pkg://basic_pitch/saved_models/icassp_2022/nmp.onnx", description="basic-pitch model (ONNX without TF)."
    )
    onset_threshold: float = Field(0.5, gt=0, lt=1, description="basic-pitch: onset probability that starts a note.")
    frame_threshold: float = Field(0.3, gt=0, lt=1, description="basic-pitch: frame probability that holds a note.")
    min_note_ms: float = Field(127.7, gt=0, description="basic-pitch: shortest note kept.")
    min_chord_score: float = Field(
        0.6, ge=0, le=1, description="Cosine of a beat's chroma with the best triad below which the chord is 'N'."
    )
    audio: AudioLimits = Field(default_factory=AudioLimits)


class MusicGenConfig(Strict):
    """Music generation: audiocraft's MusicGen or transformers' MusicgenForConditionalGeneration, by path."""

    model: str
    backend: Literal["transformers", "audiocraft"] = "transformers"
    device: str = "cpu"
    default_duration_s: float = Field(8.0, gt=0)
    max_duration_s: float = Field(30.0, gt=0)
    max_prompt_chars: int = Field(1000, gt=0)
    guidance_scale: float = Field(3.0, ge=0)
    progress_steps: int = Field(10, gt=0, description="Progress messages per generation (at least).")
    melody: AudioLimits = Field(default_factory=lambda: AudioLimits(max_seconds=30.0))


class AudioConfig(Strict):
    """The audio and music families a profile deploys."""

    separation: SeparationConfig | None = None
    music_analysis: MusicAnalysisConfig | None = None
    music_gen: MusicGenConfig | None = None
