"""Music generation (deployments/music_gen): tiny MusicGen / MusicGen-Melody models built from configs, loaded by path.

The deployment class runs without Ray (`MusicGen.func_or_class`); its streamed WAV is decoded and compared sample
for sample with transformers' own `generate` called directly on the same folder, prompt, seed and token count.
"""

from __future__ import annotations

import asyncio
import io
import math
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

from almquist.audio import encode_wav, resample
from almquist.config.audio import AudioLimits, MusicGenConfig
from almquist.errors import AlmquistError, FailedPrecondition, InvalidArgument, ResourceExhausted
from deployments.music_gen import (
    MusicGen,
    MusicOutput,
    MusicProgress,
    MusicRequest,
    TransformersMusicgenEngine,
)
from deployments.stepped import GenerationCancelled
from tests.tiny_musicgen import save_tiny_musicgen, save_tiny_musicgen_melody

PROMPT = "calm piano jazz at night"
FRAME_RATE = 50  # the tiny EnCodec: 8 kHz, hop 160
CODEBOOKS = 4


class RecordingEngine(TransformersMusicgenEngine):
    """The real engine, recording what reached it: requests, every decoder step, and how each generation ended."""

    def __init__(self, config: MusicGenConfig) -> None:
        super().__init__(config)
        self.requests: list[MusicRequest] = []
        self.steps: list[int] = []
        self.errors: list[BaseException] = []

    def generate(self, request, on_step):
        self.requests.append(request)

        def recorded(step: int, total: int) -> None:
            self.steps.append(step)
            on_step(step, total)

        try:
            return super().generate(request, recorded)
        except BaseException as error:
            self.errors.append(error)
            raise


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("music-gen")
    return {"text": save_tiny_musicgen(root), "melody": save_tiny_musicgen_melody(root)}


def _config(path: str, **extra: Any) -> MusicGenConfig:
    return MusicGenConfig(model=path, **{"default_duration_s": 0.5, "max_duration_s": 3.0, "progress_steps": 5} | extra)


@pytest.fixture(scope="module")
def text(models: dict[str, str]) -> Any:
    return MusicGen.func_or_class(_config(models["text"]).model_dump(), engine_cls=RecordingEngine)


@pytest.fixture(scope="module")
def melodic(models: dict[str, str]) -> Any:
    return MusicGen.func_or_class(_config(models["melody"]), engine_cls=RecordingEngine)


@pytest.fixture(scope="module")
def direct(models: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """The same folders loaded a second time with transformers' own classes, for calling `generate` directly."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    loaded = {}
    for key, cls in (("text", MusicgenForConditionalGeneration), ("melody", MusicgenMelodyForConditionalGeneration)):
        loaded[key] = (AutoProcessor.from_pretrained(models[key]), cls.from_pretrained(models[key]).eval())
    return loaded


def run(deployment: Any, prompt: str = PROMPT, **options: Any) -> tuple[list[MusicProgress], MusicOutput]:
    async def collect() -> list:
        return [event async for event in deployment.generate(prompt, **options)]

    events = asyncio.run(collect())
    assert isinstance(events[-1], MusicOutput) and all(isinstance(e, MusicProgress) for e in events[:-1])
    return events[:-1], events[-1]


def samples(wav: bytes) -> tuple[np.ndarray, int]:
    """The WAV's 16-bit samples and rate."""
    with soundfile.SoundFile(io.BytesIO(wav)) as file:
        assert file.format == "WAV" and file.subtype == "PCM_16" and file.channels == 1
        return file.read(dtype="int16"), file.samplerate


def generate_directly(loaded: tuple[Any, Any], seed: int, max_new_tokens: int, **inputs: Any) -> np.ndarray:
    processor, model = loaded
    torch.manual_seed(seed)
    audio = model.generate(
        **processor(text=[PROMPT], padding=True, return_tensors="pt", **inputs),
        do_sample=True,
        guidance_scale=3.0,
        max_new_tokens=max_new_tokens,
    )
    return audio[0, 0].numpy()


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# ----- the audio is the library's


def test_audio_equals_transformers_generate_called_directly(text: Any, direct: dict) -> None:
    _, output = run(text, duration_s=0.4, seed=1234)
    tokens = round(0.4 * FRAME_RATE) + CODEBOOKS - 1  # the delay pattern: codebook k starts k steps late
    assert text._engine.steps_for(0.4) == tokens == 23
    expected = generate_directly(direct["text"], 1234, tokens)
    got, rate = samples(output.wav)
    assert rate == output.sample_rate_hz == 8000
    assert len(got) == len(expected) == 20 * 160  # 20 frames of 160 samples
    reference, _ = samples(encode_wav(expected, 8000))
    np.testing.assert_array_equal(got, reference)
    # soundfile's PCM16: x 32768, clipped; within one step of the float samples
    assert np.abs(got / 32768 - np.clip(expected, -1, 32767 / 32768)).max() <= 1 / 32768
    assert np.abs(got).max() > 0  # audio, not silence
    assert output.prompt == PROMPT and output.seed == 1234 and output.model == "tiny-musicgen"


@pytest.mark.parametrize("asked", [0.37, 1.0, 0.0, 0.001])
def test_the_duration_is_the_asked_one_within_a_frame(text: Any, asked: float) -> None:
    _, output = run(text, duration_s=asked, seed=3)
    # 0 means the config's default_duration_s; the shortest piece is codebooks - 1 = 3 frames (0.06 s)
    wanted = max(asked or 0.5, (CODEBOOKS - 1) / FRAME_RATE)
    got, rate = samples(output.wav)
    assert output.duration_s == len(got) / rate
    assert abs(output.duration_s - wanted) <= 1 / FRAME_RATE
    assert len(got) % 160 == 0  # whole EnCodec frames


def test_progress_rises_to_the_total_then_the_music(text: Any, models: dict[str, str]) -> None:
    engine = text._engine
    engine.steps.clear()
    progress, output = run(text, duration_s=1.0, seed=5)
    total = round(1.0 * FRAME_RATE) + CODEBOOKS - 1
    assert engine.steps == list(range(1, total + 1))  # the hook saw every decoder step
    assert len(progress) == 5  # progress_steps messages, spread over the steps
    assert all(p.total_steps == total for p in progress)
    steps = [p.step for p in progress]
    assert steps == sorted(set(steps)) and steps[-1] == total
    assert output.duration_s == pytest.approx(1.0)

    short, _ = run(text, duration_s=0.06, seed=5)  # 3 frames: 6 steps for 5 messages
    assert [(p.step, p.total_steps) for p in short] == [(2, 6), (3, 6), (4, 6), (5, 6), (6, 6)]
    chatty = MusicGen.func_or_class(_config(models["text"], progress_steps=100))
    every, _ = run(chatty, duration_s=0.1, seed=5)  # fewer steps than progress_steps: a message after each
    assert [(p.step, p.total_steps) for p in every] == [(step, 8) for step in range(1, 9)]


def test_a_seed_reproduces_the_music_and_another_seed_changes_it(text: Any) -> None:
    _, first = run(text, duration_s=0.3, seed=7)
    _, again = run(text, duration_s=0.3, seed=7)
    _, other = run(text, duration_s=0.3, seed=8)
    assert first.wav == again.wav
    assert not np.array_equal(samples(first.wav)[0], samples(other.wav)[0])

    _, random_seed = run(text, duration_s=0.3)  # seed 0: a random seed, reported so the music can be made again
    assert random_seed.seed > 0
    _, reproduced = run(text, duration_s=0.3, seed=random_seed.seed)
    assert reproduced.wav == random_seed.wav


# ----- melody


def test_a_melody_model_follows_the_melody_like_transformers_does(melodic: Any, direct: dict) -> None:
    melody = tone(2.0, 16000)
    _, output = run(melodic, duration_s=0.4, seed=99, melody=melody, melody_rate_hz=16000)
    request = melodic._engine.requests[-1]
    assert request.melody is not None and request.melody_rate_hz == 16000
    # the chroma extractor's own rate (8 kHz in the tiny model), resampled with almquist.audio as the engine does
    expected = generate_directly(direct["melody"], 99, 23, audio=resample(melody, 16000, 8000), sampling_rate=8000)
    got, _ = samples(output.wav)
    np.testing.assert_array_equal(got, samples(encode_wav(expected, 8000))[0])

    _, other_melody = run(melodic, duration_s=0.4, seed=99, melody=tone(2.0, 16000, 261.6), melody_rate_hz=16000)
    assert other_melody.wav != output.wav  # the melody conditions the music
    stereo = np.stack([melody, melody])  # (channels, samples) is mixed down to mono
    _, from_stereo = run(melodic, duration_s=0.4, seed=99, melody=stereo, melody_rate_hz=16000)
    assert from_stereo.wav == output.wav

    _, text_only = run(melodic, duration_s=0.4, seed=99)  # a melody model also takes text alone
    expected = generate_directly(direct["melody"], 99, 23)
    np.testing.assert_array_equal(samples(text_only.wav)[0], samples(encode_wav(expected, 8000))[0])
    assert melodic.info()["follows_melody"] is True


# ----- bad input, cancellation


BAD_REQUESTS = [
    ({"prompt": ""}, InvalidArgument, "the prompt is empty"),
    ({"prompt": "  \n"}, InvalidArgument, "the prompt is empty"),
    ({"prompt": None}, InvalidArgument, "the prompt must be text"),
    ({"prompt": "piano " * 300}, ResourceExhausted, "the limit is 1000"),
    ({"duration_s": math.nan}, InvalidArgument, "duration_s nan is not a length"),
    ({"duration_s": math.inf}, InvalidArgument, "duration_s inf is not a length"),
    ({"duration_s": None}, InvalidArgument, "duration_s None is not a length"),
    ({"duration_s": "5"}, InvalidArgument, "duration_s '5' is not a length"),
    ({"duration_s": -1.0}, InvalidArgument, "duration_s -1 is negative"),
    ({"duration_s": 3.5}, ResourceExhausted, "3.5 s of music asked; the limit is 3 s"),
    ({"seed": -1}, InvalidArgument, "seed -1 is out of range"),
    ({"seed": 2**64}, InvalidArgument, "is out of range"),
    ({"melody": np.zeros(8000, np.float32), "melody_rate_hz": 8000}, InvalidArgument, "cannot follow a melody"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_REQUESTS)
def test_bad_input_is_refused_and_the_deployment_keeps_working(
    text: Any, options: dict[str, Any], error: type[AlmquistError], message: str
) -> None:
    options = dict(options)
    prompt = options.pop("prompt", PROMPT)
    before = len(text._engine.requests)
    with pytest.raises(error) as refused:
        run(text, prompt, **options)
    assert message in refused.value.message
    assert len(text._engine.requests) == before  # refused before the engine saw it
    _, output = run(text, duration_s=0.1, seed=2)
    assert output.duration_s == pytest.approx(0.1)


BAD_MELODIES = [
    ({"melody": tone(1.0, 8000), "melody_rate_hz": 0}, InvalidArgument, "melody_rate_hz 0 is not a sample rate"),
    ({"melody": tone(1.0, 8000), "melody_rate_hz": 100}, InvalidArgument, "melody: melody_rate_hz 100 is out of"),
    ({"melody": np.zeros(0, np.float32), "melody_rate_hz": 8000}, InvalidArgument, "melody: the audio is empty"),
    ({"melody": np.full(800, np.nan, np.float32), "melody_rate_hz": 8000}, InvalidArgument, "NaN"),
    ({"melody": np.zeros(800, np.int16), "melody_rate_hz": 8000}, InvalidArgument, "must be floats"),
    ({"melody": np.zeros((1, 2, 800), np.float32), "melody_rate_hz": 8000}, InvalidArgument, "(channels, samples)"),
    ({"melody": tone(31.0, 8000), "melody_rate_hz": 8000}, ResourceExhausted, "the limit is 30 s"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_MELODIES)
def test_bad_melodies_are_refused(
    melodic: Any, options: dict[str, Any], error: type[AlmquistError], message: str
) -> None:
    with pytest.raises(error) as refused:
        run(melodic, duration_s=0.1, **options)
    assert message in refused.value.message


def test_closing_the_stream_stops_decoding(text: Any) -> None:
    engine = text._engine
    total = engine.steps_for(3.0)  # 153 decoder steps; the first progress message comes after 31

    async def first_event_then_close() -> MusicProgress:
        stream = text.generate(PROMPT, duration_s=3.0, seed=1)
        first = await anext(stream)
        await stream.aclose()
        return first

    cancelled_before = text.stats()["cancelled"]
    engine.steps.clear()
    first = asyncio.run(first_event_then_close())
    assert first == MusicProgress(31, total)
    assert len(engine.steps) < total  # the engine saw the cancellation: decoding stopped part way
    assert isinstance(engine.errors[-1], GenerationCancelled)

    async def cancel_the_consumer() -> None:
        seen = asyncio.Event()

        async def consume() -> None:
            async for _ in text.generate(PROMPT, duration_s=3.0, seed=1):
                seen.set()

        task = asyncio.create_task(consume())
        await seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    engine.steps.clear()
    asyncio.run(cancel_the_consumer())
    assert len(engine.steps) < total and isinstance(engine.errors[-1], GenerationCancelled)
    assert text.stats()["cancelled"] == cancelled_before + 2

    _, output = run(text, duration_s=0.3, seed=7)  # the model is fine afterwards: the same music as before
    _, again = run(text, duration_s=0.3, seed=7)
    assert output.wav == again.wav


def test_concurrent_requests_are_served_one_at_a_time_without_mixing(text: Any) -> None:
    _, alone_a = run(text, duration_s=0.2, seed=31)
    _, alone_b = run(text, "loud rock guitar solo", duration_s=0.3, seed=32)

    async def both() -> tuple[list, list]:
        async def collect(prompt: str, **options: Any) -> list:
            return [event async for event in text.generate(prompt, **options)]

        return await asyncio.gather(
            collect(PROMPT, duration_s=0.2, seed=31), collect("loud rock guitar solo", duration_s=0.3, seed=32)
        )

    events_a, events_b = asyncio.run(both())
    assert events_a[-1].wav == alone_a.wav and events_b[-1].wav == alone_b.wav
    assert events_a[-2] == MusicProgress(13, 13) and events_b[-2] == MusicProgress(18, 18)


# ----- configuration


def test_info_and_config_checks(text: Any, models: dict[str, str]) -> None:
    info = text.info()
    assert info["engine"].endswith("MusicgenForConditionalGeneration") and info["backend"] == "transformers"
    assert info["model"] == "tiny-musicgen" and info["sample_rate_hz"] == 8000 and info["frame_rate_hz"] == 50
    assert info["follows_melody"] is False
    assert (info["default_duration_s"], info["max_duration_s"], info["melody_max_seconds"]) == (0.5, 3.0, 30.0)
    assert text.stats()["completed"] > 0 and text.stats()["audio_s"] > 0

    with pytest.raises(ValueError, match=r"default_duration_s 5\.0 is over max_duration_s 3\.0"):
        MusicGen.func_or_class(_config(models["text"]).model_copy(update={"default_duration_s": 5.0}))
    with pytest.raises(FailedPrecondition, match="needs the audiocraft package"):
        MusicGen.func_or_class(_config(models["text"], backend="audiocraft"))
    limits = _config(models["text"], melody=AudioLimits(max_seconds=5.0)).melody
    assert limits.max_seconds == 5.0
