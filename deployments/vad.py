"""Voice activity and turn-taking with silero-vad's ONNX model: speech starts and ends of turns in a stream, speech
segments in a clip.

`TurnDetector` is one conversation stream's VAD, run in the process that receives the stream (the Converse
ingress): a decision every 32 ms must not pay a Serve round trip. In: float32 mono 16 kHz chunks of any length
(`push`). Out: `VoiceEvent`s on the stream's audio clock (seconds of audio pushed so far): `speech_start` once speech
has lasted `min_speech_ms` (the user barges in), `end_of_turn` once `end_of_turn_silence_ms` of silence follows it.
Chunks are cut into silero's 512-sample windows; the samples left over wait for the next chunk, so the events do
not depend on how the stream was chunked.

`VoiceActivity` (deployment "VAD") serves whole clips. In (by handle): `speech_segments(audio, sample_rate_hz)`,
float32 mono at any accepted rate (resampled to 16 kHz). Out: `(start_s, end_s)` of each speech segment, exactly
silero's `get_speech_timestamps` with the config's threshold, minimum speech, minimum silence and padding.

The model is loaded once per process (`load_vad_model`). An `OnnxWrapper` keeps the recurrent state and the last
64 samples of context of the one stream it is fed, so it cannot serve two streams; every stream (and every
`speech_segments` call) gets a shallow copy with its own state that shares the loaded onnxruntime session, whose
`run` is safe to call from several threads.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from ray import serve

from almquist.audio import check_samples, resample
from almquist.config import model_name, resolve_model_ref
from almquist.config.speech import VADConfig
from almquist.errors import InvalidArgument

RATE_HZ = 16000
WINDOW_SAMPLES = 512  # silero's window at 16 kHz: one decision per 32 ms


@dataclass
class VoiceEvent:
    """A turn-taking decision, at the point of the stream's audio where it was made."""

    kind: Literal["speech_start", "end_of_turn"]
    time_s: float  # on the stream's audio clock (seconds of audio pushed so far, from 0)


def _import_silero() -> Any:
    # importing silero_vad sets torch's thread count to 1 for the whole process; keep the process's own setting
    threads = torch.get_num_threads()
    import silero_vad

    torch.set_num_threads(threads)
    return silero_vad


@functools.lru_cache(maxsize=4)
def _load(ref: str | None) -> Any:
    silero_vad = _import_silero()
    if ref is None:
        return silero_vad.load_silero_vad(onnx=True)
    from silero_vad.utils_vad import OnnxWrapper

    # on CPU as silero's own loader does: a 32 ms window is cheaper than a copy to a GPU and back
    return OnnxWrapper(resolve_model_ref(ref), force_onnx_cpu=True)


def load_vad_model(config: VADConfig) -> Any:
    """The process's silero `OnnxWrapper` for `config.model` (loaded once). Give it to `TurnDetector`s: each makes
    its own copy of the state; never call the shared wrapper itself from two streams."""
    return _load(config.model)


def stream_model(shared: Any) -> Any:
    """A wrapper of its own for one stream: the same onnxruntime session, fresh recurrent state and context.

    `OnnxWrapper.__call__` replaces `_state` and `_context` instead of writing into them, so a shallow copy whose
    state is reset shares nothing mutable with the original."""
    model = copy.copy(shared)
    model.reset_states()
    return model


def model_label(config: VADConfig) -> str:
    return model_name(config.model) if config.model else "silero_vad.onnx (packaged)"


def check_chunk(audio: np.ndarray, sample_rate_hz: int, config: VADConfig) -> np.ndarray:
    """A stream chunk as float32 mono 16 kHz, or InvalidArgument naming what is wrong with it."""
    if sample_rate_hz != RATE_HZ:
        raise InvalidArgument(
            f"the turn detector takes {RATE_HZ} Hz audio, not {sample_rate_hz} Hz: resample the stream to 16 kHz "
            "before pushing it (almquist.audio.speech_input)"
        )
    return check_samples(audio, sample_rate_hz, config.audio)


class TurnDetector:
    """One stream's speech starts and ends of turns; see the module docstring. Not thread-safe: one stream, one
    caller at a time (calls from different threads in turn, as `asyncio.to_thread` makes them, are fine).

    Per window, silero's probability `p` goes through silero's hysteresis: `p >= threshold` is speech, and speech
    lasts until `p < threshold - 0.15` (at least 0.01). Out of speech, a window of speech opens a candidate start;
    it becomes `speech_start` at the first window end `min_speech_ms` after the candidate's first window began, or
    is dropped if the hysteresis leaves speech before then. In speech, silence is counted from the end of the last
    window with `p >= threshold`; `end_of_turn` fires at the first window end `end_of_turn_silence_ms` after it,
    once the hysteresis has left speech. Events carry the time at the end of the window that decided them.
    """

    def __init__(self, config: VADConfig | dict[str, Any] | None = None, model: Any = None) -> None:
        self._config = VADConfig.model_validate(config if config is not None else {})
        self._model = stream_model(model if model is not None else load_vad_model(self._config))
        self._threshold = self._config.threshold
        self._neg_threshold = max(self._threshold - 0.15, 0.01)  # get_speech_timestamps' default exit threshold
        self._min_speech = self._config.min_speech_ms * RATE_HZ // 1000
        self._end_silence = self._config.end_of_turn_silence_ms * RATE_HZ // 1000
        self._pending = np.zeros(0, np.float32)  # samples not yet in a window
        self._position = 0  # samples of the stream already cut into windows
        self._reset_decisions()

    def _reset_decisions(self) -> None:
        self._in_speech = False
        self._voiced = False  # the hysteresis state of the last window
        self._onset: int | None = None  # sample where a candidate start began (not in speech)
        self._last_speech_end = 0  # end sample of the last window with p >= threshold (in speech)

    @property
    def in_speech(self) -> bool:
        """Between a `speech_start` and its `end_of_turn`."""
        return self._in_speech

    @property
    def time_s(self) -> float:
        """Seconds of audio pushed so far (the stream's audio clock)."""
        return (self._position + self._pending.size) / RATE_HZ

    def reset(self) -> None:
        """A new turn: forget the speech state and the model's recurrent state. The audio clock runs on, and samples
        not yet in a window are kept (they are the next turn's audio)."""
        self._model.reset_states()
        self._reset_decisions()

    def push(self, audio: np.ndarray, sample_rate_hz: int = RATE_HZ) -> list[VoiceEvent]:
        """The events decided by the windows this chunk completes, in order. An empty chunk is no audio (no
        events); a bad chunk raises InvalidArgument and changes nothing."""
        array = np.asarray(audio)
        if array.size == 0 and array.ndim == 1 and array.dtype.kind == "f" and sample_rate_hz == RATE_HZ:
            return []
        samples = check_chunk(array, sample_rate_hz, self._config)
        # writable: torch warns on a read-only array (chunks that came through Ray's object store are)
        buffer = np.concatenate([self._pending, samples]) if self._pending.size else np.require(samples, None, "W")
        events: list[VoiceEvent] = []
        whole = buffer.size - buffer.size % WINDOW_SAMPLES
        for start in range(0, whole, WINDOW_SAMPLES):
            window = torch.from_numpy(buffer[start : start + WINDOW_SAMPLES])
            probability = float(self._model(window, RATE_HZ).item())
            self._position += WINDOW_SAMPLES
            event = self._decide(probability)
            if event is not None:
                events.append(VoiceEvent(event, self._position / RATE_HZ))
        self._pending = buffer[whole:].copy()  # copied: never keep a view of the caller's array
        return events

    def _decide(self, probability: float) -> Literal["speech_start", "end_of_turn"] | None:
        end = self._position
        if probability >= self._threshold:
            self._voiced = True
        elif probability < self._neg_threshold:
            self._voiced = False
        if not self._in_speech:
            if not self._voiced:
                self._onset = None
                return None
            if self._onset is None:
                self._onset = end - WINDOW_SAMPLES
            if end - self._onset < self._min_speech:
                return None
            self._in_speech, self._onset, self._last_speech_end = True, None, end
            return "speech_start"
        if probability >= self._threshold:
            self._last_speech_end = end
        if self._voiced or end - self._last_speech_end < self._end_silence:
            return None
        self._in_speech = False
        return "end_of_turn"


class VADEngine(Protocol):
    name: str

    def __init__(self, config: VADConfig) -> None: ...

    def speech_timestamps(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """(start, end) samples of each speech segment of float32 mono 16 kHz audio."""
        ...


class SileroVADEngine:
    """silero's `get_speech_timestamps` on the process's shared model, a state of its own per call."""

    def __init__(self, config: VADConfig) -> None:
        self._config = config
        self._model = load_vad_model(config)
        self._silero = _import_silero()
        self.name = f"silero-vad {self._silero.__version__} ONNX ({model_label(config)})"

    def speech_timestamps(self, audio: np.ndarray) -> list[tuple[int, int]]:
        config = self._config
        segments = self._silero.get_speech_timestamps(
            torch.from_numpy(audio),
            stream_model(self._model),  # calls may run at the same time in worker threads
            threshold=config.threshold,
            sampling_rate=RATE_HZ,
            min_speech_duration_ms=config.min_speech_ms,
            min_silence_duration_ms=config.min_silence_ms,
            speech_pad_ms=config.speech_pad_ms,
        )
        return [(int(segment["start"]), int(segment["end"])) for segment in segments]


@serve.deployment(name="VAD", ray_actor_options={"num_cpus": 0.25})
class VoiceActivity:
    """Serves speech segments of whole clips; see the module docstring."""

    def __init__(self, config: VADConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = VADConfig.model_validate(config)
        self._engine: VADEngine = (engine_cls or SileroVADEngine)(self._config)

    async def speech_segments(self, audio: np.ndarray, sample_rate_hz: int = RATE_HZ) -> list[tuple[float, float]]:
        samples = check_samples(audio, sample_rate_hz, self._config.audio)
        # contiguous and writable for torch.from_numpy (arrays that came through Ray's object store are read-only)
        samples = np.require(resample(samples, sample_rate_hz, RATE_HZ), np.float32, ["C", "W"])
        segments = await asyncio.to_thread(self._engine.speech_timestamps, samples)
        return [(start / RATE_HZ, end / RATE_HZ) for start, end in segments]

    def info(self) -> dict[str, Any]:
        config = self._config
        return {
            "engine": self._engine.name,
            "model": model_label(config),
            "sample_rate_hz": RATE_HZ,
            "window_ms": WINDOW_SAMPLES * 1000 // RATE_HZ,
            "threshold": config.threshold,
            "min_speech_ms": config.min_speech_ms,
            "min_silence_ms": config.min_silence_ms,
            "speech_pad_ms": config.speech_pad_ms,
            "end_of_turn_silence_ms": config.end_of_turn_silence_ms,
            "max_seconds": config.audio.max_seconds,
        }
