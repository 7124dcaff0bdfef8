"""Who spoke when: speaker turns of a clip, from resemblyzer embeddings with clustering or a pyannote.audio pipeline.

In (by handle): `diarize(audio, num_speakers=0)`, float32 mono 16 kHz samples; `num_speakers` 0 estimates how many
voices there are (at most the config's `max_speakers`), a positive number asks for exactly that many. Out: a list
of `SpeakerSegment(start_s, end_s, speaker)` in time order, speakers named "SPEAKER_00", "SPEAKER_01", ... in order
of first appearance, adjacent segments of one speaker merged, silence left out. `speaker_at(segments, start_s,
end_s)` names the speaker of a time span (a transcript, a word) from those segments.

Engines:
- `ResemblyzerEngine` (the `local` profile; weights ship in the resemblyzer package): silero-vad finds the speech,
  resemblyzer's `VoiceEncoder` embeds sliding windows of it (`window_s` long every `step_s`), scikit-learn's
  agglomerative clustering (cosine distance, average linkage) groups the windows, cut at `distance_threshold` or
  into `num_speakers` clusters; each 10 ms of speech takes the label of the window centred nearest to it.
- `PyannoteEngine` (the cluster profile): `pyannote.audio.Pipeline.from_pretrained(<local folder>)` (e.g.
  speaker-diarization-community-1 copied to a volume), fed the waveform tensor (never a file: torchcodec decoding
  is unreliable here); its `exclusive_speaker_diarization` (one speaker at a time, what a transcript needs).

Bad input (empty, NaN, not 1-D float, too long, a bad `num_speakers`) is INVALID_ARGUMENT / RESOURCE_EXHAUSTED and
the replica keeps serving.
"""

from __future__ import annotations

import asyncio
import math
import numbers
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.audio import check_samples
from almquist.config import model_name, resolve_model_ref
from almquist.config.speech import DiarizationConfig
from almquist.errors import InvalidArgument

RATE_HZ = 16000
_FRAME_S = 0.01  # resolution at which window labels are turned into segments


@dataclass
class SpeakerSegment:
    """One speaker's turn: [start_s, end_s) of the clip and the speaker's name ("SPEAKER_00", ...)."""

    start_s: float
    end_s: float
    speaker: str


class DiarizationEngine(Protocol):
    name: str

    def __init__(self, config: DiarizationConfig) -> None: ...

    def turns(self, audio: np.ndarray, num_speakers: int) -> list[tuple[float, float, str]]:
        """(start_s, end_s, label) of each speech turn of 16 kHz mono audio, labels any strings, in any order;
        `num_speakers` 0 means estimate."""
        ...


class ResemblyzerEngine:
    """silero-vad speech regions -> resemblyzer window embeddings -> agglomerative clustering -> labelled turns."""

    def __init__(self, config: DiarizationConfig) -> None:
        from resemblyzer import VoiceEncoder
        from silero_vad import load_silero_vad

        self._config = config
        weights = Path(resolve_model_ref(config.model)) if config.model else None  # None: the packaged pretrained.pt
        self._encoder = VoiceEncoder(config.device, verbose=False, weights_fpath=weights)
        self._vad = load_silero_vad(onnx=True)
        self._lock = threading.Lock()  # silero keeps recurrent state between calls: one clip at a time
        self.name = f"resemblyzer VoiceEncoder ({model_name(config.model) if config.model else 'packaged'})"

    def speech(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """[start, end) sample ranges of speech, from silero-vad."""
        import torch
        from silero_vad import get_speech_timestamps

        config = self._config
        with self._lock:
            stamps = get_speech_timestamps(
                torch.from_numpy(audio),
                self._vad,
                sampling_rate=RATE_HZ,
                threshold=config.vad_threshold,
                min_silence_duration_ms=round(config.min_silence_s * 1000),
            )
        return [(int(s["start"]), int(s["end"])) for s in stamps]

    def windows(self, regions: list[tuple[int, int]], total: int) -> list[tuple[int, int, int]]:
        """(region index, start, end) of equal-length windows covering each speech region; a region shorter
        than a window gets one window centred on it (clipped to the clip)."""
        size = round(self._config.window_s * RATE_HZ)
        step = max(1, round(self._config.step_s * RATE_HZ))
        found: list[tuple[int, int, int]] = []
        for index, (start, end) in enumerate(regions):
            if end - start <= size:
                first = min(max(0, (start + end - size) // 2), max(0, total - size))
                found.append((index, first, min(total, first + size)))
                continue
            starts = list(range(start, end - size + 1, step))
            if starts[-1] + size < end:  # the tail of the region gets its own window
                starts.append(end - size)
            found += [(index, s, s + size) for s in starts]
        return found

    def embed(self, audio: np.ndarray, windows: list[tuple[int, int, int]]) -> np.ndarray:
        """L2-normalised 256-d embeddings, one row per window (batched through the LSTM; windows are one length)."""
        import torch
        from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram
        from resemblyzer.hparams import audio_norm_target_dBFS

        # the encoder takes linear (not log) mel energies: bring quiet clips to the level it was trained at,
        # as resemblyzer's own preprocess_wav does (without its silence trimming: VAD already chose the speech)
        audio = normalize_volume(audio, audio_norm_target_dBFS, increase_only=True)
        size = round(self._config.window_s * RATE_HZ)
        mels = [wav_to_mel_spectrogram(np.pad(audio[s:e], (0, size - (e - s)))) for _, s, e in windows]
        rows = []
        with self._lock, torch.inference_mode():
            for first in range(0, len(mels), 64):
                batch = torch.from_numpy(np.stack(mels[first : first + 64])).to(self._encoder.device)
                rows.append(self._encoder(batch).cpu().numpy())
        return np.concatenate(rows)

    def cluster(self, embeddings: np.ndarray, num_speakers: int) -> np.ndarray:
        """A cluster index per embedding: `num_speakers` clusters, else cut at the distance threshold."""
        from sklearn.cluster import AgglomerativeClustering

        count = len(embeddings)
        if count == 1 or num_speakers == 1:
            return np.zeros(count, dtype=int)

        def fit(clusters: int | None) -> np.ndarray:
            threshold = None if clusters else self._config.distance_threshold
            model = AgglomerativeClustering(
                n_clusters=clusters, metric="cosine", linkage="average", distance_threshold=threshold
            )
            return model.fit_predict(embeddings)

        if num_speakers:  # more speakers than windows cannot be told apart: as many as there are windows
            return fit(min(num_speakers, count))
        labels = fit(None)
        if labels.max() + 1 > self._config.max_speakers:
            labels = fit(self._config.max_speakers)
        return labels

    def turns(self, audio: np.ndarray, num_speakers: int) -> list[tuple[float, float, str]]:
        regions = self.speech(audio)
        if not regions:
            return []
        windows = self.windows(regions, audio.size)
        labels = self.cluster(self.embed(audio, windows), num_speakers)
        centres = np.array([(s + e) / 2 / RATE_HZ for _, s, e in windows])
        of_region = np.array([index for index, _, _ in windows])
        found: list[tuple[float, float, str]] = []
        for index, (start, end) in enumerate(regions):
            mine = np.flatnonzero(of_region == index)
            # each 10 ms frame of the region takes the label of the window centred nearest to it
            edges = np.arange(start / RATE_HZ, end / RATE_HZ, _FRAME_S)
            frame_centres = edges + _FRAME_S / 2
            nearest = mine[np.abs(frame_centres[:, None] - centres[mine][None, :]).argmin(axis=1)]
            frame_labels = labels[nearest]
            changes = np.flatnonzero(np.diff(frame_labels)) + 1
            bounds = [start / RATE_HZ, *edges[changes].tolist(), end / RATE_HZ]
            starts_at = [0, *changes.tolist()]
            found += [(bounds[i], bounds[i + 1], str(frame_labels[at])) for i, at in enumerate(starts_at)]
        return found


class PyannoteEngine:
    """A pyannote.audio speaker-diarization pipeline loaded from a local folder (config.yaml + model subfolders)."""

    def __init__(self, config: DiarizationConfig) -> None:
        import torch
        from pyannote.audio import Pipeline

        if not config.model:
            raise ValueError("diarization backend 'pyannote' needs `model`: the pipeline folder (config.yaml inside)")
        path = resolve_model_ref(config.model)
        if not os.path.exists(path):  # from_pretrained would take a missing path for a hub id and try to download
            raise FileNotFoundError(f"pyannote pipeline {path!r} does not exist: point `model` at a local folder")
        pipeline = Pipeline.from_pretrained(path)
        if pipeline is None:
            raise FileNotFoundError(f"pyannote could not load a pipeline from {path!r}")
        self._pipeline = pipeline.to(torch.device(config.device))
        self._config = config
        self._lock = threading.Lock()  # a pipeline instance is not documented as safe across threads
        self.name = f"pyannote {type(pipeline).__name__} ({model_name(config.model)})"

    def turns(self, audio: np.ndarray, num_speakers: int) -> list[tuple[float, float, str]]:
        import torch

        waveform = torch.from_numpy(np.ascontiguousarray(audio))[None]  # (channel, time)
        bounds: dict[str, Any] = (
            {"num_speakers": num_speakers} if num_speakers else {"max_speakers": self._config.max_speakers}
        )
        with self._lock:
            output = self._pipeline({"waveform": waveform, "sample_rate": RATE_HZ}, **bounds)
        # pyannote 4 returns DiarizeOutput (overlap-aware and exclusive annotations); 3.x an Annotation
        annotation: Any = getattr(output, "exclusive_speaker_diarization", output)
        return [(turn.start, turn.end, str(label)) for turn, _, label in annotation.itertracks(yield_label=True)]


def label_turns(turns: list[tuple[float, float, str]], duration_s: float = math.inf) -> list[SpeakerSegment]:
    """Segments in time order, cut to [0, duration_s], touching or overlapping turns of one speaker merged,
    speakers renamed SPEAKER_00, SPEAKER_01, ... in order of first appearance."""
    names: dict[str, str] = {}
    segments: list[SpeakerSegment] = []
    # pyannote pads the last chunk with zeros and may label past the end of the clip: cut there
    clipped = ((max(0.0, float(s)), min(float(e), duration_s), str(label)) for s, e, label in turns)
    for start, end, label in sorted(turn for turn in clipped if turn[1] > turn[0]):
        speaker = names.setdefault(label, f"SPEAKER_{len(names):02d}")
        last = segments[-1] if segments else None
        if last is not None and last.speaker == speaker and start <= last.end_s + 1e-6:
            last.end_s = max(last.end_s, end)
        else:
            segments.append(SpeakerSegment(start, end, speaker))
    return [SpeakerSegment(round(s.start_s, 3), round(s.end_s, 3), s.speaker) for s in segments]


def speaker_at(segments: list[Any], start_s: float, end_s: float, tolerance_s: float = 0.5) -> str:
    """The speaker whose segments cover most of [start_s, end_s]; when none overlaps it, the speaker of the
    nearest segment within `tolerance_s` (a word's timing may fall just outside VAD's speech); else ''."""
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in (start_s, end_s)) or end_s < start_s:
        raise InvalidArgument(f"the span [{start_s}, {end_s}] is not a time span: send start_s <= end_s, in seconds")
    covered: dict[str, float] = {}
    nearest, nearest_gap = "", tolerance_s
    for segment in segments:
        overlap = min(end_s, segment.end_s) - max(start_s, segment.start_s)
        if overlap > 0:
            covered[segment.speaker] = covered.get(segment.speaker, 0.0) + overlap
        gap = max(segment.start_s - end_s, start_s - segment.end_s, 0.0)
        if gap <= nearest_gap:
            nearest, nearest_gap = segment.speaker, gap
    return max(covered, key=covered.__getitem__) if covered else nearest


_ENGINES: dict[str, type] = {"resemblyzer": ResemblyzerEngine, "pyannote": PyannoteEngine}


@serve.deployment(name="Diarization", ray_actor_options={"num_cpus": 0.5})
class Diarization:
    """Serves speaker diarization; see the module docstring."""

    def __init__(self, config: DiarizationConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = DiarizationConfig.model_validate(config)
        self._engine: DiarizationEngine = (engine_cls or _ENGINES[self._config.backend])(self._config)

    async def diarize(self, audio: np.ndarray, num_speakers: int = 0) -> list[SpeakerSegment]:
        audio = check_samples(audio, RATE_HZ, self._config.audio)
        limit = self._config.max_speakers
        if isinstance(num_speakers, bool) or not isinstance(num_speakers, numbers.Integral) or num_speakers < 0:
            raise InvalidArgument(
                f"num_speakers must be 0 (estimate) or a whole number 1-{limit}, not {num_speakers!r}"
            )
        if num_speakers > limit:
            raise InvalidArgument(f"num_speakers {num_speakers} is over the limit of {limit}: ask for at most {limit}")
        turns = await asyncio.to_thread(self._engine.turns, audio, int(num_speakers))
        return label_turns(turns, audio.size / RATE_HZ)

    def info(self) -> dict[str, Any]:
        config = self._config
        return {
            "engine": self._engine.name,
            "backend": config.backend,
            "sample_rate_hz": RATE_HZ,
            "max_speakers": config.max_speakers,
            "max_seconds": config.audio.max_seconds,
        }
