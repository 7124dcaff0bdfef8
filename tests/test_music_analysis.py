"""The MusicAnalysis deployment: librosa's beat tracker, chroma and basic-pitch's packaged ONNX model on synthetic
music with known answers (click tracks, a 440 Hz tone, a C major triad and arpeggio), the same numbers as the
libraries called directly, and clean refusals of bad input."""

from __future__ import annotations

import asyncio
import os
import tempfile

import librosa
import numpy as np
import pytest
import soundfile
from basic_pitch.inference import Model, predict

from almquist.audio import resample
from almquist.config import resolve_model_ref
from almquist.config.audio import AudioLimits, MusicAnalysisConfig
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.music_analysis import MusicAnalysis, MusicAnalysisResult, NoteResult, refine_tempo

RATE = 22050
MusicAnalysisDeployment = MusicAnalysis.func_or_class


@pytest.fixture(scope="module")
def deployment() -> MusicAnalysisDeployment:
    return MusicAnalysisDeployment(MusicAnalysisConfig(audio=AudioLimits(max_seconds=30.0)))


def _analyze(deployment: MusicAnalysisDeployment, audio: np.ndarray, rate: int = RATE, **kw) -> MusicAnalysisResult:
    return asyncio.run(deployment.analyze(audio, rate, **kw))


def _clicks(bpm: float, seconds: float = 8.0, rate: int = RATE) -> np.ndarray:
    times = np.arange(0, seconds, 60.0 / bpm)
    return librosa.clicks(times=times, sr=rate, length=int(seconds * rate)).astype(np.float32)


def _note(midi: int, seconds: float, rate: int = RATE) -> np.ndarray:
    """A plucked tone: three harmonics, 10 ms attack, exponential decay."""
    t = np.arange(int(seconds * rate)) / rate
    f = 440.0 * 2 ** ((midi - 69) / 12)
    tone = sum(0.5**k * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(3))
    return (0.3 * tone * np.minimum(1.0, t / 0.01) * np.exp(-1.5 * t)).astype(np.float32)


def _triad(seconds: float = 2.0) -> np.ndarray:
    return _note(60, seconds) + _note(64, seconds) + _note(67, seconds)  # C4 E4 G4


def _tone(seconds: float = 2.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


@pytest.mark.parametrize("bpm", [120, 100])
def test_click_track_tempo_within_3_percent(deployment: MusicAnalysisDeployment, bpm: int) -> None:
    """librosa's own tempo is a lag of a 23 ms grid (117.45 for 120 BPM, 2.1% off; 99.38 for 100); the tempo fitted
    to its beat times is within 1% (120.07 and 100.49)."""
    result = _analyze(deployment, _clicks(bpm), notes=False)
    assert abs(result.tempo_bpm - bpm) / bpm < 0.03
    assert abs(result.tempo_bpm - bpm) / bpm < 0.01
    intervals = np.diff(result.beats_s)
    assert len(result.beats_s) >= 12 and np.allclose(intervals, 60.0 / bpm, atol=0.03)
    assert result.duration_s == pytest.approx(8.0)


def test_tempo_fit_counts_skipped_beats() -> None:
    beats = np.array([0.0, 0.5, 1.0, 2.0, 2.5, 3.0])  # the beat at 1.5 s missing
    assert refine_tempo(beats, 117.45) == pytest.approx(120.0)
    assert refine_tempo(beats[:2], 117.45) == 117.45  # too few beats to fit: librosa's tempo


def test_harmony_equals_librosa_called_directly(deployment: MusicAnalysisDeployment) -> None:
    audio = _clicks(120, 6.0) + np.tile(_triad(1.0), 6)
    result = _analyze(deployment, audio, notes=False)
    envelope = librosa.onset.onset_strength(y=audio, sr=RATE)
    tempo, beats = librosa.beat.beat_track(onset_envelope=envelope, sr=RATE)
    beats_s = librosa.frames_to_time(beats, sr=RATE)
    np.testing.assert_allclose(result.beats_s, beats_s)
    assert result.tempo_bpm == pytest.approx(refine_tempo(beats_s, float(np.atleast_1d(tempo)[0])))
    np.testing.assert_allclose(result.chroma, librosa.feature.chroma_cqt(y=audio, sr=RATE).mean(axis=1), atol=1e-6)
    assert result.notes == []


def test_a440_is_one_note_69(deployment: MusicAnalysisDeployment) -> None:
    result = _analyze(deployment, _tone())
    assert len(result.notes) == 1
    note = result.notes[0]
    assert note.pitch_midi == 69
    assert note.start_s < 0.1 and note.end_s > 1.9 and 0 < note.velocity <= 1
    assert result.key in ("A major", "A minor")


def test_c_major_triad_and_arpeggio(deployment: MusicAnalysisDeployment) -> None:
    triad = _analyze(deployment, _triad(), notes=False)
    assert triad.key == "C major"
    assert [(c.start_s, c.end_s, c.chord) for c in triad.chords] == [(0.0, 2.0, "C")]
    assert int(np.argmax(triad.chroma)) == 0  # C
    arpeggio = np.concatenate([_note(m, 0.5) for m in (60, 64, 67, 72) * 2] + [_triad(1.0)])
    result = _analyze(deployment, arpeggio)
    assert result.key == "C major"
    assert result.chords[-1].chord == "C" and result.chords[-1].end_s == pytest.approx(5.0)
    assert [n.pitch_midi for n in result.notes[:8]] == [60, 64, 67, 72] * 2


def test_notes_equal_basic_pitch_called_directly(deployment: MusicAnalysisDeployment) -> None:
    """basic-pitch's `predict` on a float WAV of the same 22.05 kHz mono audio (what the wrapper writes), with the
    packaged ONNX model and the same thresholds."""
    audio = np.concatenate([_note(m, 0.4) for m in (57, 62, 69, 74, 81)] + [_triad(1.0)])
    stereo_44k = np.stack([resample(audio, RATE, 44100)] * 2)
    result = _analyze(deployment, stereo_44k, 44100)
    mono = resample(stereo_44k.mean(axis=0), 44100, RATE)
    handle, path = tempfile.mkstemp(suffix=".wav")
    os.close(handle)
    try:
        soundfile.write(path, mono, RATE, subtype="FLOAT")
        model = Model(resolve_model_ref("pkg://basic_pitch/saved_models/icassp_2022/nmp.onnx"))
        _, _, events = predict(path, model, onset_threshold=0.5, frame_threshold=0.3, minimum_note_length=127.7)
    finally:
        os.unlink(path)
    expected = sorted(
        (NoteResult(float(s), float(e), int(p), float(a)) for s, e, p, a, _ in events),
        key=lambda n: (n.start_s, n.pitch_midi),
    )
    assert result.notes == expected
    assert {69, 74, 81} <= {n.pitch_midi for n in result.notes}


def test_silence_has_no_key_chord_or_note(deployment: MusicAnalysisDeployment) -> None:
    result = _analyze(deployment, np.zeros(RATE, np.float32))
    assert (result.tempo_bpm, result.beats_s, result.key, result.notes) == (0.0, [], "N", [])
    assert [c.chord for c in result.chords] == ["N"] and result.chroma == [0.0] * 12


@pytest.mark.parametrize(
    ("audio", "rate", "kwargs", "error", "words"),
    [
        (np.zeros(0, np.float32), RATE, {}, InvalidArgument, "empty"),
        (np.array([0.0, np.inf] * 100, np.float32), RATE, {}, InvalidArgument, "NaN or infinite"),
        (np.zeros(1000, np.int32), RATE, {}, InvalidArgument, "floats"),
        (np.zeros((1, 1, 10), np.float32), RATE, {}, InvalidArgument, "(channels, samples)"),
        (np.zeros((1000, 2), np.float32), RATE, {}, InvalidArgument, "not (samples, channels)"),
        (np.zeros(1000, np.float32), 0, {}, InvalidArgument, "missing"),
        (np.zeros(1000, np.float32), 200_000, {}, InvalidArgument, "out of range"),
        (np.zeros(1000, np.float32), "22050", {}, InvalidArgument, "whole number"),
        (np.zeros(1000, np.float32), RATE, {"notes": "yes"}, InvalidArgument, "true or false"),
        (np.zeros(31 * RATE, np.float32), RATE, {}, ResourceExhausted, "limit is 30 s"),
    ],
)
def test_bad_input_is_refused(deployment: MusicAnalysisDeployment, audio, rate, kwargs, error, words) -> None:
    with pytest.raises(error) as caught:
        _analyze(deployment, audio, rate, **kwargs)
    assert words in caught.value.message


def test_still_works_after_bad_input(deployment: MusicAnalysisDeployment) -> None:
    for bad in (np.zeros(0, np.float32), np.full(10, np.nan, np.float32)):
        with pytest.raises(InvalidArgument):
            _analyze(deployment, bad)
    result = _analyze(deployment, _tone(1.0))
    assert [n.pitch_midi for n in result.notes] == [69]


def test_info(deployment: MusicAnalysisDeployment) -> None:
    info = deployment.info()
    assert info["engine"].startswith("librosa-0.11") and info["engine"].endswith("icassp_2022/nmp.onnx")
    assert info["sample_rate_hz"] == RATE and info["max_seconds"] == 30.0
