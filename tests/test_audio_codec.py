"""almquist/audio.py: PCM16 and files in, checked float32 out; bad audio refused with the status a client can act on."""

from __future__ import annotations

import io
import math

import av
import grpc
import numpy as np
import pytest
import soundfile

from almquist.audio import (
    check_samples,
    encode_wav,
    float_to_pcm16,
    pcm16_to_float,
    read_audio_file,
    resample,
    speech_input,
)
from almquist.config.audio import AudioLimits
from almquist.errors import AlmquistError

LIMITS = AudioLimits(max_seconds=5.0)


def tone(hz: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_pcm16_round_trip_mono_and_interleaved_stereo():
    left, right = tone(440, 0.5, 16000), tone(660, 0.5, 16000)
    mono = pcm16_to_float(float_to_pcm16(left), 16000, 1, LIMITS)
    assert mono.shape == left.shape and np.abs(mono - left).max() < 1 / 32767
    stereo_bytes = float_to_pcm16(np.stack([left, right]))
    # interleaved L R L R: the second sample of the bytes is the right channel's first
    assert np.frombuffer(stereo_bytes, "<i2")[1] == np.round(right[0] * 32767)
    stereo = pcm16_to_float(stereo_bytes, 16000, 2, LIMITS)
    assert stereo.shape == (2, left.size)
    assert np.abs(stereo[1] - right).max() < 1 / 32767


def test_speech_input_averages_channels_and_resamples_to_16k():
    rate = 48000
    left, right = tone(300, 1.0, rate), np.zeros(rate, np.float32)
    out = speech_input(float_to_pcm16(np.stack([left, right])), rate, 2, LIMITS)
    assert out.shape == (16000,)
    expected = tone(300, 1.0, 16000) / 2
    assert np.abs(out[200:-200] - expected[200:-200]).max() < 0.01  # edges carry the filter's transient


def test_resample_keeps_a_tone_at_its_frequency():
    out = resample(tone(1000, 1.0, 22050), 22050, 16000)
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 1


@pytest.mark.parametrize(
    ("pcm", "rate", "channels", "code", "words"),
    [
        (b"", 16000, 1, grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (b"\x00\x01\x02", 16000, 1, grpc.StatusCode.INVALID_ARGUMENT, "PCM16 frames"),
        (b"\x00\x00" * 3, 16000, 2, grpc.StatusCode.INVALID_ARGUMENT, "2-channel"),
        (b"\x00\x00" * 4, 0, 1, grpc.StatusCode.INVALID_ARGUMENT, "sample_rate_hz is missing"),
        (b"\x00\x00" * 4, 1000, 1, grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
        (b"\x00\x00" * 4, 16000, 99, grpc.StatusCode.INVALID_ARGUMENT, "channels"),
        (b"\x00\x00" * 16000 * 6, 16000, 1, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 5 s"),
    ],
)
def test_bad_pcm_is_refused_with_a_clear_status(pcm, rate, channels, code, words):
    with pytest.raises(AlmquistError) as caught:
        pcm16_to_float(pcm, rate, channels, LIMITS)
    assert caught.value.code == code
    assert words in caught.value.message


def test_files_read_through_soundfile_and_pyav():
    audio = tone(440, 0.5, 22050)
    samples, rate = read_audio_file(encode_wav(audio, 22050), LIMITS)
    assert rate == 22050 and samples.shape == (1, audio.size)
    assert np.abs(samples[0] - audio).max() < 1 / 32767
    flac = io.BytesIO()
    soundfile.write(flac, np.stack([audio, audio]).T, 22050, format="FLAC")
    samples, _ = read_audio_file(flac.getvalue(), LIMITS)
    assert samples.shape == (2, audio.size)
    # AAC is not libsndfile's: PyAV decodes what soundfile cannot
    aac = io.BytesIO()
    with av.open(aac, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=22050, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        frame.sample_rate = 22050
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    samples, rate = read_audio_file(aac.getvalue(), LIMITS)
    assert rate == 22050 and abs(samples.shape[-1] - audio.size) < 2400  # the codec pads a frame or so
    assert math.isclose(float(np.sqrt(np.mean(samples**2))), float(np.sqrt(np.mean(audio**2))), rel_tol=0.1)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", grpc.StatusCode.INVALID_ARGUMENT),
        (b"RIFF\x00\x00garbage" * 50, grpc.StatusCode.INVALID_ARGUMENT),
        (b"x" * 600, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_bad_files_are_refused(data, code):
    with pytest.raises(AlmquistError) as caught:
        read_audio_file(data, AudioLimits(max_file_bytes=500 if len(data) == 600 else 10**6))
    assert caught.value.code == code


def test_a_file_over_the_length_limit_is_refused_from_its_header():
    with pytest.raises(AlmquistError) as caught:
        read_audio_file(encode_wav(tone(440, 6.0, 8000), 8000), LIMITS)
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("audio", "words"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.zeros(10, np.int16), "floats"),
        (np.zeros((2, 10), np.float32), "1-D"),
    ],
)
def test_check_samples_refuses_what_a_model_cannot_take(audio, words):
    with pytest.raises(AlmquistError) as caught:
        check_samples(audio, 16000, LIMITS)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and words in caught.value.message
