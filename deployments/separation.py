"""Source separation with demucs: a track in, its stems (drums, bass, other, vocals) streamed back chunk by chunk.

In (by handle): `separate(audio, sample_rate_hz)`, float32 `(channels, samples)` or mono `(samples,)` at any
accepted rate, or `separate_file(data)`, an encoded file (WAV, FLAC, MP3, ...). Out: an async stream of
`StemChunk`s at the model's rate and channel count (44.1 kHz stereo for htdemucs): for each chunk of
`config.segment_s` seconds, in order, one `StemChunk` per source in `model.sources` order. A client that
concatenates each stem's chunks gets the whole stem.

The model is loaded as demucs's CLI loads `-n <name> --repo <folder>`: `demucs.pretrained.get_model(name,
repo=folder)`, which reads `<sig>[-<checksum>].th` packages (checksum verified) and `<name>.yaml` bags of them. The
track is normalised as `demucs.api.Separator.separate_tensor` does (by the mean and standard deviation of its mono
mix, over the whole track) and separated with `demucs.apply.apply_model` on each of the model's own overlapping
segments. Those segments are laid out, cross-faded (demucs's triangular weights) and averaged over bag members
and random shifts as `apply_model(model, mix, shifts, split=True, overlap)` does over the whole track; a chunk is
sent as soon as no later segment overlaps it. So the concatenated chunks equal one `apply_model` call on the whole
track (up to float rounding), with no seams at chunk boundaries, while the first chunk leaves after the first few
segments. Shift offsets are drawn from `random` up front, in apply_model's order: with `shifts=1` a seeded run
gives apply_model's own numbers; with more, apply_model draws the later offsets after forwards that themselves
consume `random` (HTDemucs's transformer), so the offsets differ though they are drawn alike.
"""

from __future__ import annotations

import asyncio
import math
import numbers
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.audio import check_samples, read_audio_file, resample
from almquist.config import resolve_model_ref
from almquist.config.audio import SeparationConfig
from almquist.errors import FailedPrecondition, InvalidArgument


@dataclass
class StemChunk:
    """One source's audio for one chunk of the track: `index` of `total` chunks, starting `start_s` into it."""

    stem: str
    index: int
    total: int
    start_s: float
    audio: np.ndarray  # (channels, samples) float32
    sample_rate_hz: int


class SeparationEngine(Protocol):
    name: str
    sources: list[str]
    sample_rate_hz: int
    channels: int

    def __init__(self, config: SeparationConfig) -> None: ...

    def convert_channels(self, wav: np.ndarray) -> np.ndarray:
        """`wav`, (channels, samples), with the engine's channel count."""
        ...

    def stems(self, wav: np.ndarray, chunk_samples: int) -> Iterator[np.ndarray]:
        """(sources, channels, n) float32 for consecutive chunks of `chunk_samples` (the last may be shorter) of
        `wav`, (channels, samples) at the engine's rate and channel count."""
        ...


@dataclass
class _Pass:
    """One `apply_model(model, shifted mix, split=True)` run that the overlap-add loop goes through segment by
    segment: a bag has one per member, times `shifts` when shifting (as apply_model recurses)."""

    model: Any
    source: Any  # demucs TensorChunk: the (shifted) normalised mix this pass separates
    delay: int  # output sample t is sample t + delay of `source` (the shift)
    segment: int
    offsets: list[int]
    weight: Any  # the triangular cross-fade over one segment
    out: Any = None  # (sources, channels, n) weighted sums for track samples [base, base + n)
    weight_sum: Any = None


class DemucsEngine:
    """A demucs model or bag loaded by `demucs.pretrained.get_model` from a local repo, run with `apply_model`."""

    def __init__(self, config: SeparationConfig) -> None:
        import demucs
        import torch
        from demucs.apply import BagOfModels
        from demucs.pretrained import get_model
        from demucs.repo import ModelLoadingError

        path = Path(resolve_model_ref(config.model))
        if path.is_file() and path.suffix == ".th":
            # a package file: its repo is its folder, its signature the name before the checksum
            folder, name = path.parent, path.stem.rsplit("-", 1)[0] if "-" in path.stem else path.stem
        elif path.is_dir():
            folder, name = path, config.name
        else:
            raise FailedPrecondition(
                f"separation: {path} is neither a demucs model folder nor a .th model file: point `model` at the "
                "folder holding the model (what `demucs --repo` takes) or at its .th file"
            )
        try:
            model = get_model(name, repo=folder)
        except ModelLoadingError as error:
            raise FailedPrecondition(f"separation: cannot load {name!r} from {folder}: {error}") from None
        self._torch = torch
        self._model = model
        self._members: list[Any] = list(model.models) if isinstance(model, BagOfModels) else [model]
        self._bag_weights = model.weights if isinstance(model, BagOfModels) else None
        self._device = torch.device(config.device)
        self._shifts = config.shifts
        self._overlap = config.overlap
        self.name = f"demucs-{demucs.__version__} {name}"
        self.sources = list(model.sources)
        self.sample_rate_hz = int(model.samplerate)
        self.channels = int(model.audio_channels)

    def convert_channels(self, wav: np.ndarray) -> np.ndarray:
        """`wav` with the model's channel count, by demucs's own rule (mono copied, extra channels dropped)."""
        from demucs.audio import convert_audio_channels

        try:
            converted = convert_audio_channels(self._torch.from_numpy(wav), self.channels)
        except ValueError:
            raise InvalidArgument(
                f"{wav.shape[0]}-channel audio cannot be made {self.channels}-channel: send mono or "
                f"{self.channels} or more channels"
            ) from None
        return np.ascontiguousarray(converted.numpy(), dtype=np.float32)

    def stems(self, wav: np.ndarray, chunk_samples: int) -> Iterator[np.ndarray]:
        torch = self._torch
        mix = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        ref = mix.mean(0)  # demucs.api.Separator.separate_tensor's normalisation, over the whole track
        mean, std = ref.mean(), ref.std() + 1e-8
        mix = ((mix - mean) / std)[None]
        length = mix.shape[-1]
        passes = self._passes(mix)
        emitted = 0
        for step in range(max(len(p.offsets) for p in passes)):
            for one in passes:
                if step < len(one.offsets):
                    self._add_segment(one, one.offsets[step], emitted)
            # samples before every pass's next segment will get no more contributions
            done = min(p.offsets[step + 1] - p.delay if step + 1 < len(p.offsets) else length for p in passes)
            while emitted < length and min(emitted + chunk_samples, length) <= done:
                count = min(chunk_samples, length - emitted)
                yield (self._combine(passes, count) * std + mean).numpy()
                for one in passes:  # drop what was sent (a copy, so the old buffer is freed)
                    one.out, one.weight_sum = one.out[..., count:].clone(), one.weight_sum[count:].clone()
                emitted += count

    def _passes(self, mix: Any) -> list[_Pass]:
        """What apply_model(model, mix, shifts, split=True) runs, in its order (so the same random shifts)."""
        from demucs.apply import TensorChunk

        torch = self._torch
        length = mix.shape[-1]
        passes = []
        for member in self._members:
            rate = int(member.samplerate)
            segment = int(rate * member.segment)
            stride = int((1 - self._overlap) * segment)
            half = segment // 2
            weight = torch.cat([torch.arange(1, half + 1), torch.arange(segment - half, 0, -1)]).to(self._device)
            weight = weight / weight.max()
            if self._shifts:
                max_shift = int(0.5 * rate)
                padded = TensorChunk(mix).padded(length + 2 * max_shift)
                for _ in range(self._shifts):
                    offset = random.randint(0, max_shift)  # demucs's own draw, in its order
                    shifted = TensorChunk(padded, offset, length + max_shift - offset)
                    delay = max_shift - offset
                    passes.append(self._pass(member, shifted, delay, length + delay, segment, stride, weight))
            else:
                passes.append(self._pass(member, mix, 0, length, segment, stride, weight))
        return passes

    def _pass(self, member: Any, source: Any, delay: int, length: int, segment: int, stride: int, weight: Any) -> _Pass:
        torch = self._torch
        empty = torch.zeros(len(self.sources), self.channels, 0)
        offsets = [o for o in range(0, length, stride) if o + segment > delay]  # segments wholly before 0 are cut
        return _Pass(member, source, delay, segment, offsets, weight, empty, torch.zeros(0))

    def _add_segment(self, one: _Pass, offset: int, base: int) -> None:
        """apply_model's split loop for one segment: separate it and add it, cross-faded, to the running sums."""
        from demucs.apply import TensorChunk, apply_model

        torch = self._torch
        chunk = TensorChunk(one.source, offset, one.segment)
        result = apply_model(one.model, chunk, shifts=0, split=False, device=self._device)
        count = result.shape[-1]
        weighted = (one.weight[:count] * result).to("cpu")[0]
        weights = one.weight[:count].to("cpu")
        start = offset - one.delay  # on the track's clock; a shifted pass starts before 0
        if start < 0:
            weighted, weights, start = weighted[..., -start:], weights[-start:], 0
        end = start + weighted.shape[-1]
        need = end - base - one.out.shape[-1]
        if need > 0:
            one.out = torch.cat([one.out, torch.zeros(*one.out.shape[:2], need)], dim=-1)
            one.weight_sum = torch.cat([one.weight_sum, torch.zeros(need)])
        one.out[..., start - base : end - base] += weighted
        one.weight_sum[start - base : end - base] += weights

    def _combine(self, passes: list[_Pass], count: int) -> Any:
        """The first `count` samples of the stems, averaged over shifts and bag members as apply_model does."""
        per_member = max(1, self._shifts)
        estimates: Any = 0.0
        for m in range(len(self._members)):
            out: Any = 0.0
            for one in passes[m * per_member : (m + 1) * per_member]:
                out = out + one.out[..., :count] / one.weight_sum[:count]
            if self._shifts:
                out = out / self._shifts
            if self._bag_weights is not None:
                out = out * self._torch.tensor(self._bag_weights[m], dtype=out.dtype)[:, None, None]
            estimates = estimates + out
        if self._bag_weights is not None:
            totals = self._torch.tensor(self._bag_weights, dtype=estimates.dtype).sum(0)
            estimates = estimates / totals[:, None, None]
        return estimates


@serve.deployment(name="Separation", ray_actor_options={"num_cpus": 1})
class Separation:
    """Serves one demucs model; see the module docstring."""

    def __init__(self, config: SeparationConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = SeparationConfig.model_validate(config)
        self._engine: SeparationEngine = (engine_cls or DemucsEngine)(self._config)

    async def separate(self, audio: np.ndarray, sample_rate_hz: int) -> AsyncIterator[StemChunk]:
        limits = self._config.audio
        if not isinstance(sample_rate_hz, numbers.Integral) or isinstance(sample_rate_hz, bool):
            raise InvalidArgument(f"sample_rate_hz must be a whole number of Hz (e.g. 44100), not {sample_rate_hz!r}")
        wav = check_samples(audio, sample_rate_hz, limits, mono=False)
        if wav.ndim == 2 and wav.shape[0] > limits.max_channels:
            raise InvalidArgument(
                f"audio of shape {wav.shape} has {wav.shape[0]} channels (at most {limits.max_channels}): send "
                "(channels, samples), not (samples, channels)"
            )
        async for chunk in self._separate(wav if wav.ndim == 2 else wav[None], sample_rate_hz):
            yield chunk

    async def separate_file(self, data: bytes) -> AsyncIterator[StemChunk]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"send the encoded audio file as bytes, not {type(data).__name__}")
        wav, rate = await asyncio.to_thread(read_audio_file, bytes(data), self._config.audio)
        check_samples(wav, rate, self._config.audio, mono=False)  # a decoded file can still hold NaN (float WAV)
        async for chunk in self._separate(wav, rate):
            yield chunk

    async def _separate(self, wav: np.ndarray, rate: int) -> AsyncIterator[StemChunk]:
        engine = self._engine
        wav = await asyncio.to_thread(self._prepare, wav, rate)
        chunk_samples = max(1, round(self._config.segment_s * engine.sample_rate_hz))
        total = math.ceil(wav.shape[-1] / chunk_samples)
        chunks = engine.stems(wav, chunk_samples)
        for index in range(total):
            # the generator runs in a worker thread one chunk at a time, so the event loop stays free
            stems = await asyncio.to_thread(next, chunks, None)
            if stems is None:
                break
            start_s = index * chunk_samples / engine.sample_rate_hz
            for stem, audio in zip(engine.sources, stems, strict=True):
                yield StemChunk(stem, index, total, start_s, audio, engine.sample_rate_hz)

    def _prepare(self, wav: np.ndarray, rate: int) -> np.ndarray:
        """(channels, samples) at the model's rate and channel count."""
        wav = self._engine.convert_channels(resample(wav, rate, self._engine.sample_rate_hz))
        if wav.shape[-1] < 2:  # demucs normalises by the standard deviation, undefined for one sample
            raise InvalidArgument(f"the audio is {wav.shape[-1]} sample long at the model's rate: send more")
        return wav

    def info(self) -> dict[str, Any]:
        engine, config = self._engine, self._config
        return {
            "engine": engine.name,
            "sources": list(engine.sources),
            "sample_rate_hz": engine.sample_rate_hz,
            "channels": engine.channels,
            "segment_s": config.segment_s,
            "shifts": config.shifts,
            "max_seconds": config.audio.max_seconds,
        }
