"""Voice activity: the VAD deployment equals silero's `get_speech_timestamps`; the stream's TurnDetector hears speech
start and the end of a turn at the right times, whatever the chunking, one stream's state never touching another's.

Speech is espeak-ng's, trimmed to its first and last audible sample so its onset and end are known exactly, put
between silences of known length.
"""

from __future__ import annotations

import asyncio
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

from almquist.audio import resample
from almquist.config.audio import AudioLimits
from almquist.config.speech import VADConfig
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.vad import TurnDetector, VoiceActivity, VoiceEvent, load_vad_model, stream_model

RATE = 16000
SENTENCES = ["The weather is lovely today, let us go for a walk.", "After that we can have some coffee in town."]
OP15 = "pkg://silero_vad/data/silero_vad_16k_op15.onnx"


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


def espeak(text: str, folder: Path, name: str) -> np.ndarray:
    """espeak-ng's speech at 16 kHz, cut to its first and last audible sample (the true onset and end)."""
    path = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "-v", "en-us", text], check=True, capture_output=True)
    audio, rate = soundfile.read(path, dtype="float32")
    audio = resample(audio, rate, RATE)
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return np.ascontiguousarray(audio[loud[0] : loud[-1] + 1])


class Clip:
    """Audio pieces joined, with the true onset and end (seconds) of each piece of speech."""

    def __init__(self, *pieces: tuple[str, np.ndarray]) -> None:
        self.speech: list[tuple[float, float]] = []
        position = 0
        for kind, samples in pieces:
            if kind == "speech":
                self.speech.append((position / RATE, (position + samples.size) / RATE))
            position += samples.size
        self.audio = np.concatenate([samples for _, samples in pieces])


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("espeak")
    return [espeak(text, folder, f"s{i}") for i, text in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def one_turn(sentences) -> Clip:
    """Two sentences with a 0.3 s pause (shorter than the end-of-turn silence): one turn."""
    a, b = sentences
    return Clip(
        ("silence", silence(1.0)), ("speech", a), ("silence", silence(0.3)), ("speech", b), ("silence", silence(1.5))
    )


@pytest.fixture(scope="module")
def two_turns(sentences) -> Clip:
    a, b = sentences
    return Clip(
        ("silence", silence(0.5)), ("speech", b), ("silence", silence(1.3)), ("speech", a), ("silence", silence(1.2))
    )


@pytest.fixture(scope="module")
def config() -> VADConfig:
    return VADConfig()


@pytest.fixture(scope="module")
def vad(config: VADConfig):
    return VoiceActivity.func_or_class(config)


def feed(detector: TurnDetector, audio: np.ndarray, sizes: list[int]) -> list[VoiceEvent]:
    """Push `audio` in chunks of the given sizes, cycled."""
    events: list[VoiceEvent] = []
    position, i = 0, 0
    while position < audio.size:
        size = sizes[i % len(sizes)]
        events += detector.push(audio[position : position + size])
        position, i = position + size, i + 1
    return events


def kinds(events: list[VoiceEvent]) -> list[str]:
    return [event.kind for event in events]


def silero_direct(audio: np.ndarray, model, config: VADConfig) -> list[tuple[float, float]]:
    import silero_vad

    segments = silero_vad.get_speech_timestamps(
        torch.from_numpy(audio),
        model,
        threshold=config.threshold,
        sampling_rate=RATE,
        min_speech_duration_ms=config.min_speech_ms,
        min_silence_duration_ms=config.min_silence_ms,
        speech_pad_ms=config.speech_pad_ms,
    )
    return [(s["start"] / RATE, s["end"] / RATE) for s in segments]


def test_speech_segments_equal_silero(vad, config: VADConfig, one_turn: Clip, two_turns: Clip) -> None:
    import silero_vad

    model = silero_vad.load_silero_vad(onnx=True)
    for clip in (one_turn, two_turns):
        segments = asyncio.run(vad.speech_segments(clip.audio))
        assert segments == silero_direct(clip.audio, model, config)
        assert len(segments) == len(clip.speech)  # the 0.3 s pause is longer than min_silence_ms: two segments
        for (start, end), (onset, stop) in zip(segments, clip.speech, strict=True):
            assert start == pytest.approx(onset, abs=0.1) and end == pytest.approx(stop, abs=0.15)


def test_speech_segments_with_a_model_file_and_other_params(one_turn: Clip) -> None:
    """`config.model` is loaded the way silero loads a file (OnnxWrapper(path)); the config's params reach silero."""
    from silero_vad.utils_vad import OnnxWrapper

    from almquist.config import resolve_model_ref

    config = VADConfig(model=OP15, threshold=0.6, min_speech_ms=300, min_silence_ms=400, speech_pad_ms=100)
    vad = VoiceActivity.func_or_class(config)
    segments = asyncio.run(vad.speech_segments(one_turn.audio))
    assert segments == silero_direct(one_turn.audio, OnnxWrapper(resolve_model_ref(OP15)), config)
    assert len(segments) == 1  # min_silence 400 ms bridges the 0.3 s pause
    assert "silero_vad_16k_op15.onnx" in vad.info()["model"]


def test_speech_segments_resample_other_rates(vad, config: VADConfig, one_turn: Clip) -> None:
    import silero_vad

    audio_44k = resample(one_turn.audio, RATE, 44100)
    segments = asyncio.run(vad.speech_segments(audio_44k, 44100))
    assert segments == silero_direct(resample(audio_44k, 44100, RATE), silero_vad.load_silero_vad(onnx=True), config)
    at_16k = asyncio.run(vad.speech_segments(one_turn.audio))
    assert np.allclose(segments, at_16k, atol=0.07)


def test_turn_events_do_not_depend_on_chunking(config: VADConfig, one_turn: Clip) -> None:
    model = load_vad_model(config)
    reference = feed(TurnDetector(config, model), one_turn.audio, [RATE * 60])
    rng = np.random.default_rng(7)
    for sizes in ([160], [512], [1000], [4000], [1, 511, 513, 31], rng.integers(1, 5000, 64).tolist()):
        assert feed(TurnDetector(config, model), one_turn.audio, sizes) == reference, sizes


def test_read_only_arrays_are_accepted_without_warnings(vad, config: VADConfig, one_turn: Clip) -> None:
    """Arrays that come through Ray's object store are read-only; torch must not warn about them."""
    audio = one_turn.audio.copy()
    audio.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert asyncio.run(vad.speech_segments(audio)) == asyncio.run(vad.speech_segments(one_turn.audio))
        assert feed(TurnDetector(config, load_vad_model(config)), audio, [4096]) == feed(
            TurnDetector(config, load_vad_model(config)), one_turn.audio, [4096]
        )


def test_speech_start_and_end_of_turn_times(config: VADConfig, one_turn: Clip) -> None:
    """One start soon after the onset (barge-in), no end in the 0.3 s pause, the end `end_of_turn_silence_ms` after
    the true end: at least that less one window (silence counts from the end of the last 32 ms speech window)."""
    detector = TurnDetector(config, load_vad_model(config))
    (onset, first_end), (second_onset, end) = one_turn.speech
    pause_middle = round((first_end + second_onset) / 2 * RATE)
    events = feed(detector, one_turn.audio[:pause_middle], [320])
    assert kinds(events) == ["speech_start"] and detector.in_speech
    events += feed(detector, one_turn.audio[pause_middle:], [320])
    assert kinds(events) == ["speech_start", "end_of_turn"] and not detector.in_speech
    assert 0 < events[0].time_s - onset <= 0.25
    silence_s = config.end_of_turn_silence_ms / 1000
    assert silence_s - 0.032 <= events[1].time_s - end <= silence_s + 0.1
    assert detector.time_s == one_turn.audio.size / RATE


def test_a_long_pause_ends_the_turn(config: VADConfig, two_turns: Clip) -> None:
    events = feed(TurnDetector(config, load_vad_model(config)), two_turns.audio, [480])
    assert kinds(events) == ["speech_start", "end_of_turn"] * 2
    silence_s = config.end_of_turn_silence_ms / 1000
    for i, (onset, end) in enumerate(two_turns.speech):
        assert 0 < events[2 * i].time_s - onset <= 0.25
        assert silence_s - 0.032 <= events[2 * i + 1].time_s - end <= silence_s + 0.1


def test_min_speech_delays_the_start(one_turn: Clip) -> None:
    model = load_vad_model(VADConfig())
    at = {ms: feed(TurnDetector(VADConfig(min_speech_ms=ms), model), one_turn.audio, [512]) for ms in (0, 150, 10_000)}
    # 150 ms is 4 windows after the first speech window (espeak's speech is clearly speech from its first window)
    assert at[150][0].time_s - at[0][0].time_s == pytest.approx(4 * 0.032)
    assert at[10_000] == []  # the turn is shorter than 10 s of speech: never a start, so never an end


def test_silence_and_low_noise_give_no_events(config: VADConfig) -> None:
    model = load_vad_model(config)
    noise = (np.random.default_rng(0).standard_normal(3 * RATE) * 0.003).astype(np.float32)  # about -50 dBFS
    for audio in (silence(3.0), noise):
        detector = TurnDetector(config, model)
        assert feed(detector, audio, [1000]) == [] and not detector.in_speech


def test_streams_are_isolated(config: VADConfig, one_turn: Clip, two_turns: Clip) -> None:
    model = load_vad_model(config)
    alone = [feed(TurnDetector(config, model), clip.audio, [512]) for clip in (one_turn, two_turns)]
    first, second = TurnDetector(config, model), TurnDetector(config, model)
    together: list[list[VoiceEvent]] = [[], []]
    for start in range(0, max(one_turn.audio.size, two_turns.audio.size), 800):
        together[0] += first.push(one_turn.audio[start : start + 800])
        together[1] += second.push(two_turns.audio[start : start + 300])
        together[1] += second.push(two_turns.audio[start + 300 : start + 800])
    assert together == alone
    assert stream_model(model).session is model.session  # one onnxruntime session for every stream


def test_one_wrapper_cannot_serve_two_streams(config: VADConfig, one_turn: Clip, two_turns: Clip) -> None:
    """Why every stream copies the wrapper: its recurrent state and context belong to the last stream fed."""
    shared = stream_model(load_vad_model(config))

    def probabilities(model, audio: np.ndarray, other: np.ndarray | None = None) -> list[float]:
        out = []
        for start in range(0, RATE * 3, 512):
            out.append(model(torch.from_numpy(audio[start : start + 512]), RATE).item())
            if other is not None:
                model(torch.from_numpy(other[start : start + 512]), RATE)
        return out

    alone = probabilities(shared, one_turn.audio)
    shared.reset_states()
    assert not np.allclose(probabilities(shared, one_turn.audio, two_turns.audio), alone, atol=0.05)


def test_reset_starts_a_new_turn(config: VADConfig, one_turn: Clip) -> None:
    model = load_vad_model(config)
    detector = TurnDetector(config, model)
    head = one_turn.audio[: 100 * 512]  # 3.2 s: in the first sentence
    assert kinds(feed(detector, head, [700])) == ["speech_start"] and detector.in_speech
    detector.reset()
    assert not detector.in_speech
    after = feed(detector, one_turn.audio, [700])
    fresh = feed(TurnDetector(config, model), one_turn.audio, [700])
    assert after == [VoiceEvent(e.kind, pytest.approx(e.time_s + head.size / RATE)) for e in fresh]


def test_bad_chunks_are_refused_and_change_nothing(config: VADConfig, one_turn: Clip) -> None:
    model = load_vad_model(config)
    clean = feed(TurnDetector(config, model), one_turn.audio, [1000])
    detector = TurnDetector(config, model)
    bad: list[tuple[np.ndarray, dict[str, Any], str]] = [
        (np.array([0.1, np.nan] * 256, np.float32), {}, "NaN"),
        ((one_turn.audio[:1000] * 32767).astype(np.int16), {}, "floats"),
        (np.zeros((2, 1000), np.float32), {}, "1-D"),
        (np.zeros(1000, np.float32), {"sample_rate_hz": 8000}, "16000 Hz"),
        (np.zeros(1000, np.float32), {"sample_rate_hz": 44100}, "resample"),
    ]
    events: list[VoiceEvent] = []
    for start in range(0, one_turn.audio.size, 1000):
        audio, kwargs, message = bad[(start // 1000) % len(bad)]
        with pytest.raises(InvalidArgument, match=message):
            detector.push(audio, **kwargs)
        assert detector.push(np.zeros(0, np.float32)) == []  # an empty chunk is no audio, not an error
        events += detector.push(one_turn.audio[start : start + 1000])
    assert events == clean


def test_bad_clips_are_refused_and_the_deployment_keeps_working(vad, one_turn: Clip) -> None:
    good = asyncio.run(vad.speech_segments(one_turn.audio))
    cases = [
        (np.zeros(0, np.float32), RATE, "empty"),
        (np.full(RATE, np.nan, np.float32), RATE, "NaN"),
        ((one_turn.audio * 32767).astype(np.int16), RATE, "floats"),
        (np.stack([one_turn.audio, one_turn.audio]), RATE, "1-D"),
        (one_turn.audio, 4000, "out of range"),
        (one_turn.audio, 0, "missing"),
    ]
    for audio, rate, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            asyncio.run(vad.speech_segments(audio, rate))
    short = VoiceActivity.func_or_class(VADConfig(audio=AudioLimits(max_seconds=2.0)))
    with pytest.raises(ResourceExhausted, match="limit is 2 s"):
        asyncio.run(short.speech_segments(one_turn.audio))
    assert asyncio.run(vad.speech_segments(one_turn.audio)) == good
    assert asyncio.run(vad.speech_segments(silence(2.0))) == []


def test_info(vad, config: VADConfig) -> None:
    info = vad.info()
    assert info["engine"].startswith("silero-vad 6.") and info["sample_rate_hz"] == RATE and info["window_ms"] == 32
    assert info["end_of_turn_silence_ms"] == config.end_of_turn_silence_ms
    assert info["max_seconds"] == config.audio.max_seconds
    assert load_vad_model(VADConfig(threshold=0.7)) is load_vad_model(config)  # one model per process
