"""The Separation deployment on a tiny HTDemucs saved as a demucs repo: the same stems as demucs's own
`Separator.separate_tensor` (normalisation + `apply_model(split=True)`), seamless streamed chunks, what demucs's
output does and does not guarantee about the stems' sum, and clean refusals of bad input."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from demucs.api import Separator

from almquist.audio import encode_wav, resample
from almquist.config.audio import AudioLimits, SeparationConfig
from almquist.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from deployments.separation import Separation, StemChunk
from tests.tiny_demucs import SIGNATURE, SOURCES, save_tiny_htdemucs

RATE = 44100
SEGMENT_S = 1.3  # streamed chunks; the tiny model's own segments are 1 s with a 0.75 s stride: boundaries differ
SeparationDeployment = Separation.func_or_class


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread, as a replica with num_cpus=1 gets from Ray: on a shared 2-core machine two OpenMP
    threads spin against other processes and made this file 15x slower (144 s against 9 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_htdemucs(tmp_path_factory.mktemp("demucs"))


@pytest.fixture(scope="module")
def separator(model_dir: str) -> Separator:
    """demucs's own API on the same repo, as `demucs -n htdemucs --repo <dir> --overlap 0.25 --shifts 0` runs."""
    return Separator(model="htdemucs", repo=Path(model_dir), shifts=0, overlap=0.25, split=True, device="cpu")


@pytest.fixture(scope="module")
def deployment(model_dir: str) -> SeparationDeployment:
    config = SeparationConfig(model=model_dir, segment_s=SEGMENT_S, audio=AudioLimits(max_seconds=5.0))
    return SeparationDeployment(config)


def _music(seconds: float, channels: int = 2, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A seeded 'mix': a bass line, a chord, hi-hat noise bursts, different in each channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for c in range(channels):
        bass = 0.3 * np.sin(2 * np.pi * (55 + 10 * c) * t)
        chord = sum(0.1 * np.sin(2 * np.pi * f * t + c) for f in (261.6, 329.6, 392.0))
        hats = 0.2 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 4 * t) > 0.9)
        out.append(bass + chord + hats)
    return np.asarray(out, dtype=np.float32)


async def _collect(stream) -> list[StemChunk]:
    return [chunk async for chunk in stream]


def _separate(deployment: SeparationDeployment, audio: np.ndarray, rate: int = RATE) -> list[StemChunk]:
    return asyncio.run(_collect(deployment.separate(audio, rate)))


def _stems(chunks: list[StemChunk]) -> np.ndarray:
    """(sources, channels, samples): each stem's chunks concatenated, in model.sources order."""
    return np.stack([np.concatenate([c.audio for c in chunks if c.stem == s], axis=-1) for s in SOURCES])


def _reference(separator: Separator, audio: np.ndarray) -> np.ndarray:
    _, stems = separator.separate_tensor(torch.from_numpy(audio))
    return np.stack([stems[s].numpy() for s in SOURCES])


def test_short_clip_equals_demucs_separator(deployment: SeparationDeployment, separator: Separator) -> None:
    audio = _music(0.8)
    chunks = _separate(deployment, audio)
    assert [(c.stem, c.index, c.total, c.start_s, c.sample_rate_hz) for c in chunks] == [
        (s, 0, 1, 0.0, RATE) for s in SOURCES
    ]
    assert all(c.audio.dtype == np.float32 and c.audio.shape == audio.shape for c in chunks)
    np.testing.assert_allclose(_stems(chunks), _reference(separator, audio), atol=1e-4, rtol=0)


def test_streamed_chunks_are_seamless(deployment: SeparationDeployment, separator: Separator) -> None:
    """3 x segment_s: three chunks whose boundaries (1.3 s, 2.6 s) fall inside demucs's own overlapping 1 s
    segments; concatenated, they equal one `apply_model(split=True)` over the whole track."""
    audio = _music(3 * SEGMENT_S, seed=1)
    chunks = _separate(deployment, audio)
    chunk = round(SEGMENT_S * RATE)
    assert [(c.index, c.total, c.start_s) for c in chunks[::4]] == [(i, 3, i * chunk / RATE) for i in range(3)]
    assert [c.audio.shape[-1] for c in chunks[::4]] == [chunk, chunk, audio.shape[-1] - 2 * chunk]
    expected = _reference(separator, audio)
    got = _stems(chunks)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # the seams: nothing odd around the chunk boundaries (a wrongly cut seam differs by ~the stems' scale)
    for boundary in (chunk, 2 * chunk):
        window = slice(boundary - 2000, boundary + 2000)
        assert np.abs(got[..., window] - expected[..., window]).max() < 1e-4


def test_shifts_draw_as_demucs_does(model_dir: str) -> None:
    """With one random shift the stream draws the same offset from `random` as `apply_model`, so a seeded run
    gives demucs's own stems; with more, HTDemucs's transformer also draws on every forward, so only the kind of
    draw is the same."""
    config = SeparationConfig(model=model_dir, segment_s=SEGMENT_S, shifts=1)
    deployment = SeparationDeployment(config)
    separator = Separator(model="htdemucs", repo=Path(model_dir), shifts=1, overlap=0.25, split=True)
    audio = _music(0.9, seed=2)
    random.seed(11)
    got = _stems(_separate(deployment, audio))
    random.seed(11)
    np.testing.assert_allclose(got, _reference(separator, audio), atol=1e-4, rtol=0)


def test_weighted_bag_with_two_shifts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bag of two models with per-source weights, two shifts each: the stream averages shifts per member, then
    weighs members per source, as apply_model does. `random.randint` (the shift draws only: the transformer uses
    `randrange`) gives both the same offsets."""
    save_tiny_htdemucs(tmp_path, seed=1, signature="0000aaaa")
    save_tiny_htdemucs(tmp_path, seed=2, signature="0000bbbb")
    (tmp_path / "pair.yaml").write_text(
        "models: ['0000aaaa', '0000bbbb']\nweights: [[1.0, 0.5, 1.0, 2.0], [0.5, 1.0, 1.0, 1.0]]\n"
    )
    config = SeparationConfig(model=str(tmp_path), name="pair", segment_s=0.7, shifts=2)
    deployment = SeparationDeployment(config)
    separator = Separator(model="pair", repo=tmp_path, shifts=2, overlap=0.25, split=True)
    audio = _music(1.2, seed=8)
    draws = [1000, 22050, 0, 7777]  # two shifts per member, in member order
    offsets = iter(draws)
    monkeypatch.setattr(random, "randint", lambda low, high: next(offsets))
    got = _stems(_separate(deployment, audio))
    offsets = iter(draws)
    np.testing.assert_allclose(got, _reference(separator, audio), atol=1e-4, rtol=0)


def test_th_file_loads_the_same_model(model_dir: str, deployment: SeparationDeployment) -> None:
    """`model` may also be one .th package (the checksum in its name is verified): the bag's only member."""
    file = next(Path(model_dir).glob(f"{SIGNATURE}-*.th"))
    by_file = SeparationDeployment(SeparationConfig(model=str(file), segment_s=SEGMENT_S))
    assert by_file.info()["engine"] == f"demucs-4.1.0 {SIGNATURE}"
    audio = _music(0.5, seed=3)
    np.testing.assert_allclose(_stems(_separate(by_file, audio)), _stems(_separate(deployment, audio)), atol=1e-6)


def test_mono_input_at_another_rate(deployment: SeparationDeployment, separator: Separator) -> None:
    """Mono 22.05 kHz in: resampled to 44.1 kHz and copied to both channels (demucs's convert_audio_channels)."""
    mono = _music(0.5, channels=1, rate=22050, seed=4)[0]
    chunks = _separate(deployment, mono, 22050)
    assert chunks[0].sample_rate_hz == RATE
    stereo = np.repeat(resample(mono, 22050, RATE)[None], 2, axis=0)
    np.testing.assert_allclose(_stems(chunks), _reference(separator, stereo), atol=1e-4, rtol=0)


def test_what_the_stems_sum_to(deployment: SeparationDeployment) -> None:
    """demucs does not make its stems sum to the mix: HTDemucs predicts every source on its own (the spectrogram
    branch outputs complex spectrograms, cac=True, not masks of the mix; the waveform branch adds a waveform per
    source), and neither the model nor `apply_model` projects the estimates onto the mixture. A trained model's
    stems sum to the mix only approximately, because training pushed each stem towards its true source. A random
    tiny HTDemucs's estimates are near zero (its output layers start scaled down), so after demucs's
    de-normalisation each stem is about the track's mean and the sum is nowhere near the mix. What holds for any
    demucs model is what the normalisation (by the mono mix's mean and standard deviation) gives:
      * scale: separating a*x gives a * (stems of x), for a > 0;
      * offset: separating x + c gives (stems of x) + c in *every* stem, so the stems' sum moves by 4c, not c.
    """
    audio = _music(0.6, seed=5)
    stems = _stems(_separate(deployment, audio))
    residual = np.abs(stems.sum(axis=0) - audio).max()
    assert residual > 0.5 * np.abs(audio).max()  # not a mixture-consistent separation
    np.testing.assert_allclose(_stems(_separate(deployment, 0.25 * audio)), 0.25 * stems, atol=1e-5, rtol=0)
    shifted = _stems(_separate(deployment, audio + np.float32(0.05)))
    np.testing.assert_allclose(shifted, stems + 0.05, atol=1e-5, rtol=0)
    np.testing.assert_allclose(shifted.sum(axis=0) - stems.sum(axis=0), 4 * 0.05, atol=1e-5)


def test_separate_file_decodes_then_separates(deployment: SeparationDeployment) -> None:
    audio = _music(0.5, seed=6)
    wav = encode_wav(audio, RATE)
    decoded = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)[0].T
    from_file = _stems(asyncio.run(_collect(deployment.separate_file(wav))))
    np.testing.assert_allclose(from_file, _stems(_separate(deployment, decoded)), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("audio", "rate", "error", "words"),
    [
        (np.zeros(0, np.float32), RATE, InvalidArgument, "empty"),
        (np.zeros((2, 0), np.float32), RATE, InvalidArgument, "empty"),
        (np.array([0.1, np.nan, 0.2] * 100, np.float32), RATE, InvalidArgument, "NaN"),
        (np.zeros((2, 1000), np.int16), RATE, InvalidArgument, "floats"),
        (np.zeros((1, 2, 100), np.float32), RATE, InvalidArgument, "(channels, samples)"),
        (np.zeros((1000, 2), np.float32), RATE, InvalidArgument, "not (samples, channels)"),
        (np.zeros(1, np.float32), RATE, InvalidArgument, "1 sample"),
        (np.zeros(1000, np.float32), 0, InvalidArgument, "sample_rate_hz is missing"),
        (np.zeros(1000, np.float32), 1000, InvalidArgument, "out of range"),
        (np.zeros(1000, np.float32), 44100.5, InvalidArgument, "whole number"),
        (np.zeros((2, 6 * RATE), np.float32), RATE, ResourceExhausted, "limit is 5 s"),
    ],
)
def test_bad_arrays_are_refused(deployment: SeparationDeployment, audio, rate, error, words) -> None:
    with pytest.raises(error) as caught:
        _separate(deployment, audio, rate)
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", InvalidArgument, "empty (0 bytes)"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200), InvalidArgument, "not a readable audio file"),
        (bytes(range(256)) * 40, InvalidArgument, "not a readable audio file"),
        (encode_wav(np.zeros((2, 6 * RATE), np.float32), RATE), ResourceExhausted, "limit is 5 s"),
        ("not bytes", InvalidArgument, "as bytes"),
    ],
)
def test_bad_files_are_refused(deployment: SeparationDeployment, data, error, words) -> None:
    with pytest.raises(error) as caught:
        asyncio.run(_collect(deployment.separate_file(data)))
    assert words in caught.value.message


def test_still_works_after_bad_input(deployment: SeparationDeployment, separator: Separator) -> None:
    for bad in (np.zeros(0, np.float32), np.full(100, np.nan, np.float32)):
        with pytest.raises(InvalidArgument):
            _separate(deployment, bad)
    with pytest.raises(InvalidArgument):
        asyncio.run(_collect(deployment.separate_file(b"\x00garbage")))
    audio = _music(0.4, seed=7)
    np.testing.assert_allclose(_stems(_separate(deployment, audio)), _reference(separator, audio), atol=1e-4)


def test_model_errors_say_what_to_fix(model_dir: str, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="neither a demucs model folder"):
        SeparationDeployment(SeparationConfig(model=str(tmp_path / "missing")))
    with pytest.raises(FailedPrecondition, match="cannot load 'htdemucs_ft'"):
        SeparationDeployment(SeparationConfig(model=model_dir, name="htdemucs_ft"))


def test_info(deployment: SeparationDeployment) -> None:
    assert deployment.info() == {
        "engine": "demucs-4.1.0 htdemucs",
        "sources": SOURCES,
        "sample_rate_hz": RATE,
        "channels": 2,
        "segment_s": SEGMENT_S,
        "shifts": 0,
        "max_seconds": 5.0,
    }
