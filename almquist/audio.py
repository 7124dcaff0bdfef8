"""Audio codec for every speech and audio family: PCM16 or encoded files in, checked float32 arrays out.

In: `AudioChunk` fields (little-endian PCM16 bytes, sample rate, channels) or an encoded file (WAV, FLAC, OGG,
MP3, ...). Out: float32 samples in [-1, 1], `(samples,)` for mono or `(channels, samples)`, at the rate the model
wants. Bad input is refused before a model sees it: INVALID_ARGUMENT for empty audio, an odd byte count (not PCM16),
a missing or out-of-range sample rate, bad channel counts and unreadable files; RESOURCE_EXHAUSTED for audio over
the configured length. Resampling is scipy's polyphase filter (`resample_poly`), exact for integer rate ratios.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np

from almquist.config.audio import AudioLimits
from almquist.errors import InvalidArgument, ResourceExhausted


def check_format(sample_rate_hz: int, channels: int, limits: AudioLimits) -> int:
    """The channel count to use (0 means mono), or an error naming what is wrong with the declared format."""
    if not sample_rate_hz:
        raise InvalidArgument("sample_rate_hz is missing: declare the rate of the PCM16 audio (e.g. 16000)")
    if not limits.min_sample_rate_hz <= sample_rate_hz <= limits.max_sample_rate_hz:
        raise InvalidArgument(
            f"sample_rate_hz {sample_rate_hz} is out of range: send {limits.min_sample_rate_hz}-"
            f"{limits.max_sample_rate_hz} Hz audio"
        )
    channels = channels or 1
    if channels > limits.max_channels:
        raise InvalidArgument(f"{channels} channels; at most {limits.max_channels} are accepted")
    return channels


def check_length(seconds: float, limits: AudioLimits, what: str = "the audio") -> None:
    if seconds > limits.max_seconds:
        raise ResourceExhausted(
            f"{what} is {seconds:.1f} s long; the limit is {limits.max_seconds:g} s: send it in shorter pieces"
        )


def pcm16_to_float(pcm16: bytes, sample_rate_hz: int, channels: int, limits: AudioLimits) -> np.ndarray:
    """Samples of PCM16 bytes as float32, `(channels, samples)` when channels > 1, else `(samples,)`."""
    channels = check_format(sample_rate_hz, channels, limits)
    if not pcm16:
        raise InvalidArgument("the audio is empty (0 bytes): send little-endian 16-bit PCM samples")
    frame_bytes = 2 * channels
    if len(pcm16) % frame_bytes:
        raise InvalidArgument(
            f"{len(pcm16)} bytes is not a whole number of {channels}-channel PCM16 frames ({frame_bytes} bytes each):"
            " send little-endian 16-bit PCM"
        )
    check_length(len(pcm16) / frame_bytes / sample_rate_hz, limits)
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).T.copy() if channels > 1 else samples


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Mono float32: channels (the first axis of a 2-D array) averaged."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """`audio` (last axis = time) at `to_hz`; the same array when the rates are equal."""
    if from_hz == to_hz:
        return np.asarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(to_hz, from_hz).limit_denominator(1000)
    return resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def speech_input(pcm16: bytes, sample_rate_hz: int, channels: int, limits: AudioLimits, rate_hz: int = 16000):
    """Mono float32 at `rate_hz` (what speech models take) from PCM16 of any accepted format."""
    return resample(to_mono(pcm16_to_float(pcm16, sample_rate_hz, channels, limits)), sample_rate_hz, rate_hz)


def check_samples(audio: np.ndarray, sample_rate_hz: int, limits: AudioLimits, mono: bool = True) -> np.ndarray:
    """A deployment's own check of samples it receives by handle: float, finite, non-empty, within limits."""
    check_format(sample_rate_hz, 1, limits)
    array = np.asarray(audio)
    if array.dtype.kind != "f":
        raise InvalidArgument(f"audio samples must be floats in [-1, 1], not {array.dtype}")
    if array.ndim != 1 if mono else array.ndim not in (1, 2):
        raise InvalidArgument(f"audio must be {'1-D (mono)' if mono else '(channels, samples)'}, not {array.shape}")
    if array.size == 0 or array.shape[-1] == 0:
        raise InvalidArgument("the audio is empty: send at least one sample")
    if not np.isfinite(array).all():
        raise InvalidArgument("the audio has NaN or infinite samples")
    check_length(array.shape[-1] / sample_rate_hz, limits)
    return array.astype(np.float32, copy=False)


def float_to_pcm16(audio: np.ndarray) -> bytes:
    """Little-endian PCM16 bytes of float samples (clipped to [-1, 1]); `(channels, samples)` is interleaved."""
    array = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    if array.ndim == 2:
        array = array.T
    return np.round(array * 32767.0).astype("<i2").tobytes()


def read_audio_file(data: bytes, limits: AudioLimits) -> tuple[np.ndarray, int]:
    """`(channels, samples)` float32 and the sample rate of an encoded file (soundfile; PyAV for MP3/AAC/...)."""
    if not data:
        raise InvalidArgument("the audio file is empty (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise ResourceExhausted(f"the audio file is {len(data)} bytes; the limit is {limits.max_file_bytes}")
    try:
        import soundfile

        with soundfile.SoundFile(io.BytesIO(data)) as file:
            check_format(file.samplerate, file.channels, limits)
            check_length(file.frames / file.samplerate, limits)
            audio = file.read(dtype="float32", always_2d=True).T
            rate = file.samplerate
    except (RuntimeError, TypeError, soundfile.LibsndfileError):
        audio, rate = _read_with_av(data, limits)
    if audio.shape[-1] == 0:
        raise InvalidArgument("the audio file has no samples")
    return np.ascontiguousarray(audio), rate


def _read_with_av(data: bytes, limits: AudioLimits) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidArgument("the file has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate
            check_format(rate, stream.channels, limits)
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            pieces: list[np.ndarray] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    piece = out.to_ndarray()
                    total += piece.shape[-1]
                    check_length(total / rate, limits)
                    pieces.append(piece)
    except (av.error.FFmpegError, ValueError, IndexError) as error:
        raise InvalidArgument(f"the bytes are not a readable audio file ({error.__class__.__name__})") from None
    if not pieces:
        raise InvalidArgument("the audio file has no samples")
    return np.concatenate(pieces, axis=-1).astype(np.float32), rate


def encode_wav(audio: np.ndarray, sample_rate_hz: int) -> bytes:
    """A 16-bit WAV file of float samples (`(samples,)` or `(channels, samples)`)."""
    import soundfile

    array = np.asarray(audio, dtype=np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, array.T if array.ndim == 2 else array, sample_rate_hz, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def rms_dbfs(audio: np.ndarray) -> float:
    """Loudness of samples in dB relative to full scale (-inf for silence)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(audio, dtype=np.float64))))) if np.size(audio) else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf
