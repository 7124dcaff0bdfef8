"""Music analysis: tempo and beats, key, chroma and chords with librosa; notes with basic-pitch's ONNX model.

In (by handle): `analyze(audio, sample_rate_hz, notes=True)`, float32 mono `(samples,)` or `(channels, samples)`
(averaged to mono) at any accepted rate; it is resampled to 22.05 kHz, the rate librosa's defaults and basic-pitch's
model are built for. Out: one `MusicAnalysisResult`:
  * `tempo_bpm`, `beats_s`: `librosa.beat.beat_track` on librosa's onset envelope. Its tempo is one of the lags of
    an autocorrelation on a 23 ms frame grid (120 BPM comes out as 117.45, the nearest lag); the tempo reported is
    the least-squares slope of the tracked beat times against their beat numbers (each interval counted as the
    whole number of beats of librosa's tempo it spans), which is not tied to the grid: 120.00 for a 120 BPM click
    track. Fewer than three beats keep librosa's tempo (0 when it finds no beat).
  * `chroma`: the mean of `librosa.feature.chroma_cqt`, C to B; `key`: the best Pearson correlation of that mean
    with the 24 rotations of the Krumhansl-Schmuckler major and minor profiles ("C major", "F# minor"; "N" when the
    audio has no pitched energy).
  * `chords`: the chroma's median between beats (`librosa.util.sync`), matched by cosine against the 24 major and
    minor triads ("C", "Am"; "N" below `min_chord_score`), consecutive equal chords merged.
  * `notes` (when asked): basic-pitch's `predict` with the config's thresholds, one `NoteResult` per note event.
    `predict` reads a file (it loads with librosa at 22.05 kHz): the mono audio is written to a temporary float32
    WAV at that rate, which librosa reads back bit for bit, so the notes equal `predict` on such a file.
"""

from __future__ import annotations

import asyncio
import numbers
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.audio import check_samples, resample, to_mono
from almquist.config import model_name, resolve_model_ref
from almquist.config.audio import MusicAnalysisConfig
from almquist.errors import FailedPrecondition, InvalidArgument

RATE_HZ = 22050  # librosa's default rate and basic-pitch's AUDIO_SAMPLE_RATE
HOP = 512  # librosa's default hop: 23.2 ms frames
PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
# Krumhansl & Kessler's probe-tone ratings, tonic first (Krumhansl 1990, as the Krumhansl-Schmuckler algorithm uses)
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class ChordResult:
    start_s: float
    end_s: float
    chord: str  # "C", "Am", "N" (no chord)


@dataclass
class NoteResult:
    start_s: float
    end_s: float
    pitch_midi: int
    velocity: float  # basic-pitch's note amplitude, 0 to 1


@dataclass
class MusicAnalysisResult:
    duration_s: float
    tempo_bpm: float
    beats_s: list[float]
    key: str  # "C major", "A minor", "N" (no pitched energy)
    chroma: list[float]  # mean chroma, C to B, each 0 to 1
    chords: list[ChordResult]
    notes: list[NoteResult]


@dataclass
class Harmony:
    """What librosa finds in a clip (everything but the notes)."""

    tempo_bpm: float
    beats_s: list[float]
    key: str
    chroma: list[float]
    chords: list[ChordResult]


class MusicAnalysisEngine(Protocol):
    name: str

    def __init__(self, config: MusicAnalysisConfig) -> None: ...

    def harmony(self, y: np.ndarray) -> Harmony:
        """Tempo, beats, key, chroma and chords of mono float32 audio at RATE_HZ."""
        ...

    def notes(self, y: np.ndarray) -> list[NoteResult]:
        """The notes of mono float32 audio at RATE_HZ, by start time."""
        ...


def _triads() -> tuple[np.ndarray, list[str]]:
    """Unit-length templates of the 12 major then 12 minor triads, and their names."""
    templates, names = [], []
    for third, suffix in ((4, ""), (3, "m")):  # major, minor
        for root in range(12):
            template = np.zeros(12)
            template[[root, (root + third) % 12, (root + 7) % 12]] = 1.0
            templates.append(template / np.linalg.norm(template))
            names.append(PITCH_CLASSES[root] + suffix)
    return np.array(templates), names


def estimate_key(chroma_mean: np.ndarray) -> str:
    """Krumhansl-Schmuckler: the key whose rotated profile correlates best with the mean chroma."""
    if not np.any(chroma_mean > 0) or np.ptp(chroma_mean) == 0:
        return "N"  # silence (or a flat chroma) correlates with nothing
    best, key = -np.inf, "N"
    for profile, mode in ((MAJOR_PROFILE, "major"), (MINOR_PROFILE, "minor")):
        for tonic in range(12):
            score = np.corrcoef(chroma_mean, np.roll(profile, tonic))[0, 1]
            if score > best:
                best, key = score, f"{PITCH_CLASSES[tonic]} {mode}"
    return key


def refine_tempo(beats_s: np.ndarray, tempo_bpm: float) -> float:
    """The tempo of the tracked beats: 60 / the least-squares seconds per beat, each interval counted as the whole
    number of beats (at librosa's tempo) it spans, so a skipped beat does not halve the tempo."""
    if len(beats_s) < 3 or tempo_bpm <= 0:
        return tempo_bpm
    period = 60.0 / tempo_bpm
    counts = np.maximum(1, np.round(np.diff(beats_s) / period))
    numbers_ = np.concatenate([[0.0], np.cumsum(counts)])
    slope = np.polyfit(numbers_, beats_s, 1)[0]
    return float(60.0 / slope) if slope > 0 else tempo_bpm


class LibrosaBasicPitchEngine:
    """librosa for rhythm and harmony; basic-pitch's `Model` (ONNX through onnxruntime) for notes."""

    def __init__(self, config: MusicAnalysisConfig) -> None:
        from basic_pitch.inference import Model
        from librosa.version import version as librosa_version  # librosa's stub has no __version__

        self._config = config
        try:
            path = resolve_model_ref(config.notes_model)
        except FileNotFoundError as error:
            raise FailedPrecondition(f"music analysis: {error}; install basic-pitch or set `notes_model`") from None
        if not os.path.isfile(path):
            raise FailedPrecondition(f"music analysis: no basic-pitch model at {path}: point `notes_model` at nmp.onnx")
        try:
            self._model = Model(path)  # tries TF, CoreML, TFLite, then ONNX: here onnxruntime loads nmp.onnx
        except ValueError as error:
            raise FailedPrecondition(f"music analysis: {error}") from None
        self._templates, self._chord_names = _triads()
        self.name = f"librosa-{librosa_version} + basic-pitch {model_name(config.notes_model)}"

    def harmony(self, y: np.ndarray) -> Harmony:
        import librosa

        envelope = librosa.onset.onset_strength(y=y, sr=RATE_HZ, hop_length=HOP)
        tempo, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=RATE_HZ, hop_length=HOP)
        tempo_bpm = float(np.atleast_1d(tempo)[0])
        beats_s = librosa.frames_to_time(beats, sr=RATE_HZ, hop_length=HOP)
        chroma = librosa.feature.chroma_cqt(y=y, sr=RATE_HZ, hop_length=HOP)
        chroma_mean = chroma.mean(axis=1)
        return Harmony(
            tempo_bpm=refine_tempo(beats_s, tempo_bpm),
            beats_s=[float(t) for t in beats_s],
            key=estimate_key(chroma_mean),
            chroma=[float(c) for c in chroma_mean],
            chords=self._chords(chroma, beats, len(y) / RATE_HZ),
        )

    def _chords(self, chroma: np.ndarray, beats: np.ndarray, duration_s: float) -> list[ChordResult]:
        import librosa

        # segment boundaries: the clip's start, every beat, its end
        bounds = librosa.util.fix_frames(beats, x_min=0, x_max=chroma.shape[1])
        # librosa annotates `idx` as a Sequence; its docs (and fix_frames) give it an int array
        synced = librosa.util.sync(chroma, bounds, aggregate=np.median, pad=False)  # type: ignore[arg-type]
        norms = np.linalg.norm(synced, axis=0)
        scores = self._templates @ (synced / np.where(norms > 0, norms, 1.0))
        times = np.minimum(librosa.frames_to_time(bounds, sr=RATE_HZ, hop_length=HOP), duration_s)
        times[-1] = duration_s
        chords: list[ChordResult] = []
        for i in range(synced.shape[1]):
            best = int(np.argmax(scores[:, i]))
            name = self._chord_names[best] if scores[best, i] >= self._config.min_chord_score else "N"
            start, end = float(times[i]), float(times[i + 1])
            if end <= start:
                continue
            if chords and chords[-1].chord == name:
                chords[-1].end_s = end  # merge a run of the same chord
            else:
                chords.append(ChordResult(start, end, name))
        return chords

    def notes(self, y: np.ndarray) -> list[NoteResult]:
        import soundfile
        from basic_pitch.inference import predict

        config = self._config
        handle, path = tempfile.mkstemp(suffix=".wav", prefix="almquist-notes-")
        try:
            os.close(handle)
            soundfile.write(path, y, RATE_HZ, subtype="FLOAT")  # float32 WAV: read back exactly
            _, _, events = predict(
                path,
                self._model,
                onset_threshold=config.onset_threshold,
                frame_threshold=config.frame_threshold,
                minimum_note_length=config.min_note_ms,
            )
        finally:
            os.unlink(path)
        notes = [NoteResult(float(start), float(end), int(pitch), float(amp)) for start, end, pitch, amp, _ in events]
        return sorted(notes, key=lambda n: (n.start_s, n.pitch_midi))


@serve.deployment(name="MusicAnalysis", ray_actor_options={"num_cpus": 0.5})
class MusicAnalysis:
    """Serves music analysis; see the module docstring."""

    def __init__(self, config: MusicAnalysisConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = MusicAnalysisConfig.model_validate(config)
        self._engine: MusicAnalysisEngine = (engine_cls or LibrosaBasicPitchEngine)(self._config)

    async def analyze(self, audio: np.ndarray, sample_rate_hz: int, notes: bool = True) -> MusicAnalysisResult:
        if not isinstance(sample_rate_hz, numbers.Integral) or isinstance(sample_rate_hz, bool):
            raise InvalidArgument(f"sample_rate_hz must be a whole number of Hz (e.g. 22050), not {sample_rate_hz!r}")
        if not isinstance(notes, bool):
            raise InvalidArgument(f"notes must be true or false, not {notes!r}")
        wav = check_samples(audio, sample_rate_hz, self._config.audio, mono=False)
        if wav.ndim == 2 and wav.shape[0] > self._config.audio.max_channels:
            raise InvalidArgument(
                f"audio of shape {wav.shape} has {wav.shape[0]} channels (at most {self._config.audio.max_channels}):"
                " send (channels, samples), not (samples, channels)"
            )
        return await asyncio.to_thread(self._analyze, wav, sample_rate_hz, notes)

    def _analyze(self, wav: np.ndarray, rate: int, notes: bool) -> MusicAnalysisResult:
        y = resample(to_mono(wav), rate, RATE_HZ)
        harmony = self._engine.harmony(y)
        return MusicAnalysisResult(
            duration_s=wav.shape[-1] / rate,
            tempo_bpm=harmony.tempo_bpm,
            beats_s=harmony.beats_s,
            key=harmony.key,
            chroma=harmony.chroma,
            chords=harmony.chords,
            notes=self._engine.notes(y) if notes else [],
        )

    def info(self) -> dict[str, Any]:
        config = self._config
        return {
            "engine": self._engine.name,
            "sample_rate_hz": RATE_HZ,
            "onset_threshold": config.onset_threshold,
            "frame_threshold": config.frame_threshold,
            "min_note_ms": config.min_note_ms,
            "max_seconds": config.audio.max_seconds,
        }
