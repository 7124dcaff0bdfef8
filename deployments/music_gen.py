"""Music generation with MusicGen: a text prompt (and, for MusicGen-Melody, a melody to follow) to a WAV file.

In (by handle, streaming: `handle.options(stream=True).generate.remote(prompt, duration_s, melody, melody_rate_hz,
seed)`): a prompt; a duration in seconds (0 means the config's default); for melody models an optional melody as
float32 samples (`(samples,)` or `(channels, samples)`) at `melody_rate_hz`; a seed (0 picks one). Out: at least
`progress_steps` `MusicProgress(step, total_steps)` messages while the decoder runs (one per decoding step when a
generation has fewer steps), then one `MusicOutput`: 16-bit WAV bytes at the model's rate, its duration, the model,
the prompt and the seed that reproduces it.

Engines, by `backend`:
- `transformers` (default): `MusicgenForConditionalGeneration` or `MusicgenMelodyForConditionalGeneration` (picked by
  the folder's `config.json` model_type) with its `AutoProcessor`, from a local folder. MusicGen's decoder writes
  one frame of every codebook per step, each codebook one step later than the one before (the delay pattern), so
  `d` seconds take `round(d x frame_rate) + codebooks - 1` decoding steps (`max_new_tokens`) and give
  `round(d x frame_rate)` frames of audio (at least codebooks - 1 frames: transformers applies the delay pattern
  only from there). A `StoppingCriteria` sees every step: it reports progress and, once the
  client has gone, raises, which ends `generate` before the audio is decoded.
- `audiocraft`: audiocraft's own `MusicGen.get_pretrained(folder)` (a folder holding `state_dict.bin` and
  `compression_state_dict.bin`), `set_generation_params(duration=..., cfg_coef=...)`, progress through
  `set_custom_progress_callback`, `generate` / `generate_with_chroma`. audiocraft 1.3.0 pins torch 2.1 and imports
  xformers and spaCy when `audiocraft.models` is imported, so it is not installed beside this project's torch; the
  engine is loading code for a GPU image built around audiocraft, and without the package the deployment fails to
  start with FAILED_PRECONDITION.

Sampling uses torch's global generator (what `generate` reads), seeded per request under the engine's lock: the
same seed, prompt, duration and melody give the same samples on the same machine and library versions.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.audio import check_samples, encode_wav, resample, to_mono
from almquist.config import model_name, resolve_model_ref
from almquist.config.audio import MusicGenConfig
from almquist.errors import AlmquistError, FailedPrecondition, InvalidArgument, ResourceExhausted
from deployments.stepped import Finished, SteppedRunner

_MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64 bits; keep it positive for clients' int64 fields
_MELODY_MODEL_TYPES = {"musicgen_melody"}
_TEXT_MODEL_TYPES = {"musicgen"}


@dataclass
class MusicRequest:
    """One generation, every value resolved: the duration in seconds, a non-zero seed, the melody mono float32."""

    prompt: str
    duration_s: float
    seed: int
    melody: np.ndarray | None = None
    melody_rate_hz: int = 0


@dataclass
class MusicProgress:
    """Decoding progress: `step` of `total_steps` decoder steps done (the last message has step == total_steps)."""

    step: int
    total_steps: int


@dataclass
class MusicOutput:
    """The music as a 16-bit WAV file, and what reproduces it: send `prompt`, `duration_s` and `seed` back."""

    wav: bytes
    sample_rate_hz: int
    duration_s: float
    model: str
    prompt: str
    seed: int


class MusicEngine(Protocol):
    name: str
    sample_rate_hz: int
    frame_rate_hz: float
    follows_melody: bool  # takes a melody (MusicGen-Melody); text-only models refuse one

    def __init__(self, config: MusicGenConfig) -> None: ...

    def steps_for(self, duration_s: float) -> int:
        """Decoder steps a generation of `duration_s` seconds runs (the `total_steps` of its progress)."""
        ...

    def generate(self, request: MusicRequest, on_step: Callable[[int, int], None]) -> np.ndarray:
        """Float samples `(samples,)` (mono) or `(channels, samples)` at `sample_rate_hz`; calls `on_step(step,
        total)` after every decoder step and lets what it raises end the generation."""
        ...


class _StepHook:
    """A transformers `StoppingCriteria` that never stops generation itself: it counts decoder steps for `on_step`,
    which raises to end the loop (a criterion that returned True would still decode a cut-short clip)."""

    def __init__(self, total: int, on_step: Callable[[int, int], None]) -> None:
        self._total = total
        self._on_step = on_step
        self._step = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self._step += 1
        self._on_step(self._step, self._total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class TransformersMusicgenEngine:
    """transformers' MusicGen (text) or MusicGen-Melody (text + chroma) from a local folder; one generation at a
    time (the model and torch's global generator are shared)."""

    def __init__(self, config: MusicGenConfig) -> None:
        import torch
        import transformers
        from transformers import (
            AutoConfig,
            AutoProcessor,
            MusicgenForConditionalGeneration,
            MusicgenMelodyForConditionalGeneration,
        )

        self._config = config
        self._device = config.device
        self._lock = threading.Lock()
        path = resolve_model_ref(config.model)
        model_type = AutoConfig.from_pretrained(path, local_files_only=True).model_type
        if model_type in _MELODY_MODEL_TYPES:
            model_cls: Any = MusicgenMelodyForConditionalGeneration
        elif model_type in _TEXT_MODEL_TYPES:
            model_cls = MusicgenForConditionalGeneration
        else:
            raise FailedPrecondition(
                f"music_gen.model {config.model} holds a {model_type!r} model, not MusicGen: point it at a "
                "facebook/musicgen-* (or musicgen-melody) folder"
            )
        self.follows_melody = model_type in _MELODY_MODEL_TYPES
        self._processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self._model = model_cls.from_pretrained(path, local_files_only=True).to(self._device).eval()
        codec = self._model.config.audio_encoder
        self.sample_rate_hz = int(codec.sampling_rate)
        self.frame_rate_hz = float(codec.frame_rate)
        decoder = self._model.config.decoder
        self._channels = int(decoder.audio_channels)
        # stereo checkpoints interleave the two channels' codebooks; the delay runs within each channel's set
        self._delay = int(decoder.num_codebooks) // self._channels - 1
        self._torch = torch
        self.name = f"transformers-{transformers.__version__} {model_cls.__name__}"

    def steps_for(self, duration_s: float) -> int:
        # below `delay` frames transformers skips the delay pattern (and returns undelayed codes): the shortest
        # piece is `delay` frames (0.06 s for 4 codebooks at 50 Hz)
        return max(1, self._delay, round(duration_s * self.frame_rate_hz)) + self._delay

    def generate(self, request: MusicRequest, on_step: Callable[[int, int], None]) -> np.ndarray:
        from transformers import StoppingCriteriaList

        torch = self._torch
        steps = self.steps_for(request.duration_s)
        with self._lock:
            inputs = self._inputs(request)
            torch.manual_seed(request.seed)
            try:
                with torch.inference_mode():
                    audio = self._model.generate(
                        **inputs,
                        do_sample=True,
                        guidance_scale=self._config.guidance_scale,
                        max_new_tokens=steps,
                        stopping_criteria=StoppingCriteriaList([_StepHook(steps, on_step)]),
                    )
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise ResourceExhausted(
                    f"out of accelerator memory for {request.duration_s:g} s of music: ask for a shorter piece"
                ) from None
        samples = audio[0].float().cpu().numpy()  # (channels, samples)
        return samples[0] if samples.shape[0] == 1 else samples

    def _inputs(self, request: MusicRequest) -> dict[str, Any]:
        options: dict[str, Any] = {"text": [request.prompt], "padding": True, "return_tensors": "pt"}
        if request.melody is not None:
            rate = int(self._processor.feature_extractor.sampling_rate)
            options["audio"] = resample(request.melody, request.melody_rate_hz, rate)
            options["sampling_rate"] = rate
        return dict(self._processor(**options).to(self._device))


class AudiocraftEngine:
    """audiocraft's MusicGen from a local folder (`state_dict.bin` + `compression_state_dict.bin`); one generation
    at a time. Untested here: audiocraft 1.3.0 cannot be installed beside this project's torch (module docstring)."""

    def __init__(self, config: MusicGenConfig) -> None:
        try:
            import torch
            from audiocraft.models import MusicGen as AudiocraftMusicGen
        except ImportError as error:
            raise FailedPrecondition(
                f"music_gen.backend audiocraft needs the audiocraft package and what it imports (xformers, spaCy): "
                f"{error}; install it in the replica's image or use backend transformers"
            ) from None

        self._config = config
        self._lock = threading.Lock()
        self._torch = torch
        self._model = AudiocraftMusicGen.get_pretrained(resolve_model_ref(config.model), device=config.device)
        self.sample_rate_hz = int(self._model.sample_rate)
        self.frame_rate_hz = float(self._model.frame_rate)
        # the melody conditioner ("self_wav") is what get_pretrained sets up for musicgen-melody checkpoints
        self.follows_melody = "self_wav" in self._model.lm.condition_provider.conditioners
        self.name = f"audiocraft {type(self._model).__name__}"

    def steps_for(self, duration_s: float) -> int:
        # audiocraft generates int(duration x frame_rate) frames; its callback counts those steps (delay excluded)
        return max(1, int(duration_s * self.frame_rate_hz))

    def generate(self, request: MusicRequest, on_step: Callable[[int, int], None]) -> np.ndarray:
        torch = self._torch
        with self._lock:
            self._model.set_generation_params(duration=request.duration_s, cfg_coef=self._config.guidance_scale)
            self._model.set_custom_progress_callback(on_step)
            torch.manual_seed(request.seed)
            if request.melody is not None:
                melody = torch.from_numpy(np.ascontiguousarray(request.melody))[None, None].to(self._config.device)
                wav = self._model.generate_with_chroma([request.prompt], melody, request.melody_rate_hz, progress=True)
            else:
                wav = self._model.generate([request.prompt], progress=True)  # progress=True: the callback is called
        samples = wav[0].float().cpu().numpy()  # (channels, samples)
        return samples[0] if samples.shape[0] == 1 else samples


ENGINES: dict[str, type] = {"transformers": TransformersMusicgenEngine, "audiocraft": AudiocraftEngine}


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@serve.deployment(name="MusicGen", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class MusicGen:
    """Serves one MusicGen engine; see the module docstring."""

    def __init__(self, config: MusicGenConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = MusicGenConfig.model_validate(config)
        c = self._config
        if c.default_duration_s > c.max_duration_s:
            raise ValueError(
                f"music_gen default_duration_s {c.default_duration_s} is over max_duration_s {c.max_duration_s}"
            )
        self._engine: MusicEngine = (engine_cls or ENGINES[c.backend])(c)
        self._runner = SteppedRunner()
        self._audio_s = 0.0  # seconds of music delivered

    async def generate(
        self,
        prompt: str,
        duration_s: float = 0.0,
        melody: np.ndarray | None = None,
        melody_rate_hz: int = 0,
        seed: int = 0,
    ) -> AsyncIterator[MusicProgress | MusicOutput]:
        """Progress while the decoder runs, then the music. duration_s 0 means the config's default; seed 0 picks
        a random seed, reported in the output."""
        request = self.resolve(prompt, duration_s, melody, melody_rate_hz, seed)
        every = self._config.progress_steps

        def progress(step: int, total: int) -> MusicProgress | None:
            # `every` messages spread over the steps (each step when there are fewer), the last one at step == total
            if step >= total or step * every // total != (step - 1) * every // total:
                return MusicProgress(step, total)
            return None

        def render(on_step: Callable[[int, int], None]) -> tuple[bytes, float]:
            audio = self._engine.generate(request, on_step)
            return encode_wav(audio, self._engine.sample_rate_hz), audio.shape[-1] / self._engine.sample_rate_hz

        # aclosing: closing this stream closes the runner's at once, which stops the engine before returning
        async with contextlib.aclosing(self._runner.run(render, progress)) as items:
            async for item in items:
                if not isinstance(item, Finished):
                    yield item
        wav, seconds = item.result
        self._audio_s += seconds
        yield MusicOutput(
            wav=wav,
            sample_rate_hz=self._engine.sample_rate_hz,
            duration_s=seconds,
            model=model_name(self._config.model),
            prompt=request.prompt,
            seed=request.seed,
        )

    def resolve(
        self,
        prompt: str,
        duration_s: float = 0.0,
        melody: np.ndarray | None = None,
        melody_rate_hz: int = 0,
        seed: int = 0,
    ) -> MusicRequest:
        """The request `generate` would run (defaults filled, melody checked and made mono), or the error that
        refuses it."""
        c = self._config
        if not isinstance(prompt, str):
            raise InvalidArgument("the prompt must be text: describe the music (e.g. 'calm piano jazz')")
        if not prompt.strip():
            raise InvalidArgument("the prompt is empty: describe the music to make (e.g. 'calm piano jazz')")
        if len(prompt) > c.max_prompt_chars:
            raise ResourceExhausted(f"the prompt has {len(prompt)} characters; the limit is {c.max_prompt_chars}")
        if not _is_number(duration_s) or not math.isfinite(duration_s):
            raise InvalidArgument(
                f"duration_s {duration_s!r} is not a length: send the seconds of music wanted, up to "
                f"{c.max_duration_s:g} (0 means {c.default_duration_s:g})"
            )
        if duration_s < 0:
            raise InvalidArgument(
                f"duration_s {duration_s:g} is negative: ask for 0 < seconds <= {c.max_duration_s:g} "
                f"(0 means {c.default_duration_s:g})"
            )
        if duration_s > c.max_duration_s:
            raise ResourceExhausted(
                f"{duration_s:g} s of music asked; the limit is {c.max_duration_s:g} s: ask for less, or join pieces"
            )
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MAX_SEED:
            raise InvalidArgument(f"seed {seed!r} is out of range: use 1 to {_MAX_SEED} (0 picks a random seed)")
        if melody is not None:
            if not self._engine.follows_melody:
                raise InvalidArgument(
                    f"this model ({model_name(c.model)}) cannot follow a melody: send no melody, or configure a "
                    "MusicGen-Melody model in music_gen.model"
                )
            if not _is_number(melody_rate_hz) or not melody_rate_hz or melody_rate_hz != int(melody_rate_hz):
                raise InvalidArgument(
                    f"melody_rate_hz {melody_rate_hz!r} is not a sample rate: send the melody's rate in Hz (e.g. 32000)"
                )
            try:
                melody = to_mono(check_samples(melody, int(melody_rate_hz), c.melody, mono=False))
            except AlmquistError as error:
                message = error.message.replace("sample_rate_hz", "melody_rate_hz")
                raise type(error)(f"melody: {message}") from None
        return MusicRequest(
            prompt=prompt,
            duration_s=float(duration_s) or c.default_duration_s,
            seed=seed or secrets.randbelow(2**31 - 1) + 1,  # never 0: the reported seed must reproduce the music
            melody=melody,
            melody_rate_hz=int(melody_rate_hz) if melody is not None else 0,
        )

    def stats(self) -> dict[str, float]:
        """Generations completed, cancelled by the client, failed; decoder steps run; seconds of music delivered."""
        return {**asdict(self._runner.stats), "audio_s": self._audio_s}

    def info(self) -> dict[str, Any]:
        c = self._config
        return {
            "engine": self._engine.name,
            "backend": c.backend,
            "model": model_name(c.model),
            "sample_rate_hz": self._engine.sample_rate_hz,
            "frame_rate_hz": self._engine.frame_rate_hz,
            "follows_melody": self._engine.follows_melody,
            "default_duration_s": c.default_duration_s,
            "max_duration_s": c.max_duration_s,
            "max_prompt_chars": c.max_prompt_chars,
            "guidance_scale": c.guidance_scale,
            "progress_steps": c.progress_steps,
            "melody_max_seconds": c.melody.max_seconds,
        }
