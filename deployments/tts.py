"""Text to speech with phoneme timings: espeak-ng (libespeak-ng through ctypes) or a piper ONNX voice.

In (by handle): `synthesize(text, voice="", rate=1.0, emotion="")`, a streaming method (call it with
`handle.options(stream=True)`); `voice` "" is the config's default, `rate` 0 means 1.0 (speed relative to normal,
within `[min_rate, max_rate]`), `emotion` "" is neutral. Out: `SpeechChunk`s of mono PCM16 of `chunk_ms` each (a
sentence's last chunk may be shorter), `start_s` on one clock from 0 across the whole text, so chunk i+1 starts
where chunk i ends; each carries the `PhonemeResult`s that start inside it, with absolute times. The avatar turns the
phonemes into visemes; `info()["phoneme_alphabet"]` says which names to expect and `phoneme_inventory(voice)` lists
them with their kind (vowel, stop, nasal, pause, ...).

The text is spoken sentence by sentence, each sentence synthesised in a worker thread only once the chunks of the
one before it have been yielded, so the first chunk arrives after one sentence of work, not the whole text (piper
first turns the whole text into phonemes, which takes milliseconds).

- espeak (GPL-3.0-or-later): `deployments.espeak` binds the process's one libespeak-ng instance. Sentences are
  split here (`split_sentences`); phonemes are espeak mnemonics (`h @ l oU`, pauses `_` and `_:`) timed by its
  `espeakEVENT_PHONEME` events (ms resolution). A phoneme runs until the next one starts; the last one until the
  end of the sentence's audio; zero-length ones (espeak emits a few, and an end marker) are dropped.
- piper (piper-tts 1.8, GPL-3.0-or-later; the packaged joe voice is CC0): `PiperVoice.synthesize` yields one
  chunk per sentence (its own espeak-ng phonemizer splits them). Timings are the model's own durations: piper's
  VITS graph computes `w_ceil` (frames per phoneme id) and piper reads it when the graph outputs it
  (`PiperVoice.load(..., include_alignments=True)`, which patches the graph in memory with the `onnx` package:
  piper-tts's `alignment` extra). A voice whose graph has no such output gets its phonemes' times spread evenly
  over the sentence (`info()["phoneme_timings"]` says "estimated"). Piper's IPA symbols are grouped for visemes:
  stress marks go with the phoneme after them, length marks and diacritics with the one before, word spaces
  lengthen the phoneme before them, and punctuation and the sentence start/end become the pause `_`.

Emotions are a small table of prosody settings (`EMOTIONS`): espeak changes rate, pitch, pitch range and volume;
piper has no pitch control, so only rate and volume (its audio is peak-normalised, so "angry" is not louder).
"""

from __future__ import annotations

import asyncio
import math
import numbers
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from ray import serve

from almquist.config import resolve_model_ref
from almquist.config.speech import TTSConfig
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.espeak import MAX_RATE_WPM, MIN_RATE_WPM, Espeak


@dataclass
class PhonemeResult:
    """One phoneme: its name (espeak mnemonic or IPA symbol), start and length in seconds."""

    phoneme: str
    start_s: float
    duration_s: float


@dataclass
class SpeechChunk:
    """A piece of the utterance: mono PCM16, its rate, its start on the utterance clock, the phonemes starting in it."""

    pcm16: bytes
    sample_rate_hz: int
    start_s: float
    phonemes: list[PhonemeResult]


@dataclass(frozen=True)
class Prosody:
    """How an emotion is spoken. `rate` multiplies the request's rate; pitch and range are espeak's 0-100 (50 is
    the voice's own); volume is espeak's 0-200 (100 normal), and for piper a gain of volume/100 capped at 1."""

    rate: float
    pitch: int
    pitch_range: int
    volume: int


EMOTIONS: dict[str, Prosody] = {
    "neutral": Prosody(rate=1.0, pitch=50, pitch_range=50, volume=100),
    "happy": Prosody(rate=1.1, pitch=70, pitch_range=80, volume=110),  # higher, livelier, a little faster
    "sad": Prosody(rate=0.85, pitch=35, pitch_range=20, volume=70),  # lower, flatter, slower, quieter
    "angry": Prosody(rate=1.15, pitch=55, pitch_range=70, volume=150),  # louder and faster
    "calm": Prosody(rate=0.9, pitch=45, pitch_range=35, volume=90),  # a little slower and flatter
}

ESPEAK_NORMAL_WPM = 175  # espeak-ng's default speed; rate 1.0


@dataclass
class SpeechSegment:
    """One sentence from an engine: int16 samples and (phoneme, start sample, end sample) from its start."""

    samples: np.ndarray
    sample_rate_hz: int
    phonemes: list[tuple[str, int, int]]


class TTSEngine(Protocol):
    name: str
    voices: list[str]
    default_voice: str
    sample_rate_hz: int
    phoneme_alphabet: str
    phoneme_timings: str

    def __init__(self, config: TTSConfig) -> None: ...

    def synthesize(self, text: str, voice: str, rate: float, prosody: Prosody) -> Iterator[SpeechSegment]:
        """Sentence after sentence; nothing is synthesised before the caller asks for the next segment."""
        ...

    def phoneme_inventory(self, voice: str) -> dict[str, str]: ...


_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "jr", "sr", "e.g", "i.e", "approx"}
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n[ \t]*\n")  # noqa: RUF001 (closing quotes)


def split_sentences(text: str) -> list[str]:
    """Sentences of `text` (ending at . ! ? … before a space, or a blank line), each with its own punctuation."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        word = text[start : match.start()].rsplit(None, 1)[-1:] if match.group().startswith(".") else []
        # "Dr. Smith", "e.g. this", "J. Doe": a period after an abbreviation or an initial ends no sentence
        if word and match.group() == "." and (word[0].lower() in _ABBREVIATIONS or len(word[0]) == 1):
            continue
        piece = text[start : match.end()].strip()
        if piece:
            sentences.append(piece)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return sentences


def _named_voices(config: TTSConfig, default_name: str) -> dict[str, str]:
    voices = {default_name: config.voice}
    for name, ref in config.voices.items():
        voices.setdefault(name, ref)
    return voices


class EspeakEngine:
    """libespeak-ng: the config's voice (named as written) and `voices`, each an espeak-ng voice name."""

    phoneme_alphabet = "espeak"
    phoneme_timings = "espeak-ng phoneme events"

    def __init__(self, config: TTSConfig) -> None:
        self._espeak = Espeak.instance()
        self._voices = _named_voices(config, config.voice)
        for name, espeak_voice in self._voices.items():
            if not self._espeak.has_voice(espeak_voice):
                raise ValueError(f"TTS voice {name!r}: espeak-ng has no voice {espeak_voice!r}")
        self.voices = list(self._voices)
        self.default_voice = config.voice
        self.sample_rate_hz = self._espeak.sample_rate
        self.name = f"espeak-ng {self._espeak.version}"

    def synthesize(self, text: str, voice: str, rate: float, prosody: Prosody) -> Iterator[SpeechSegment]:
        wpm = min(MAX_RATE_WPM, max(MIN_RATE_WPM, round(ESPEAK_NORMAL_WPM * rate * prosody.rate)))
        for sentence in split_sentences(text):
            result = self._espeak.synthesize(
                sentence, self._voices[voice], wpm, prosody.pitch, prosody.pitch_range, prosody.volume
            )
            if result.samples.size:
                yield SpeechSegment(result.samples, self.sample_rate_hz, self._timed(result.phonemes, result.samples))

    def _timed(self, events: list[tuple[str, int]], samples: np.ndarray) -> list[tuple[str, int, int]]:
        # at espeak's 1 ms resolution: a phoneme lasts until the next starts, the last until the audio ends (in
        # whole ms, so the end marker espeak puts there is dropped with the other zero-length phonemes)
        following = [*(ms for _, ms in events[1:]), samples.size * 1000 // self.sample_rate_hz]
        kept = [(name, ms) for (name, ms), after in zip(events, following, strict=True) if after > ms]
        starts = [min(samples.size, round(ms * self.sample_rate_hz / 1000)) for _, ms in kept]
        ends = [*starts[1:], samples.size]
        return [(name, start, end) for (name, _), start, end in zip(kept, starts, ends, strict=True) if end > start]

    def phoneme_inventory(self, voice: str) -> dict[str, str]:
        return self._espeak.phoneme_inventory(self._voices[voice])


# IPA symbols grouped by the kinds espeak's inventory uses, so the avatar maps both alphabets the same way
# (IPA letters look like Latin ones on purpose: hence the RUF001 waivers)
_IPA_KINDS = {
    **dict.fromkeys("aeiouyæɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵøœɶʉʊʌʏ", "vowel"),  # noqa: RUF001
    **dict.fromkeys("ptkcqʈʔ", "stop"),  # noqa: RUF001
    **dict.fromkeys("bdgɡɟɢɖ", "voiced stop"),  # noqa: RUF001
    **dict.fromkeys("fθsʃxhçχħɸʂɕ", "fricative"),
    **dict.fromkeys("vðzʒɣɦʝʁʕβʐʑ", "voiced fricative"),  # noqa: RUF001
    **dict.fromkeys("mnŋɲɳɴɱ", "nasal"),
    **dict.fromkeys("lɹrɾjwɫʎʟɭɻʋɰɺʀʙ", "liquid"),  # noqa: RUF001
}
_STRESS = {"ˈ", "ˌ"}  # noqa: RUF001
_PIPER_PAUSE = "_"


def _is_modifier(symbol: str) -> bool:
    """Length marks, aspiration, combining diacritics (Unicode Lm/M*): part of the phoneme before them."""
    return unicodedata.category(symbol) in ("Lm", "Mn", "Mc", "Me") and symbol not in _STRESS


def _is_pause(symbol: str) -> bool:
    """Sentence start/end (^ $) and punctuation: silence for the avatar."""
    return symbol in ("^", "$") or unicodedata.category(symbol)[0] in ("P", "S")


def group_piper_phonemes(units: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(phoneme, start, end) in samples from piper's (symbol, samples) in order; see the module docstring."""
    grouped: list[list[Any]] = []
    position = 0
    stress_start: int | None = None
    for symbol, count in units:
        start, end = position, position + int(count)
        position = end
        if symbol in _STRESS:
            stress_start = start if stress_start is None else stress_start
        elif (_is_modifier(symbol) or symbol.isspace()) and grouped:
            grouped[-1][2] = end
        else:
            name = _PIPER_PAUSE if _is_pause(symbol) or symbol.isspace() else symbol
            if stress_start is not None:
                start, stress_start = stress_start, None
            if name == _PIPER_PAUSE and grouped and grouped[-1][0] == _PIPER_PAUSE:
                grouped[-1][2] = end
            else:
                grouped.append([name, start, end])
    if stress_start is not None and grouped:
        grouped[-1][2] = position
    return [(name, start, end) for name, start, end in grouped if end > start]


def _even_units(phonemes: list[str], total: int) -> list[tuple[str, int]]:
    """The fallback timing: the sentence's samples shared equally by ^, its symbols and $."""
    symbols = ["^", *phonemes, "$"]
    bounds = np.round(np.linspace(0, total, len(symbols) + 1)).astype(int)
    return [(symbol, int(bounds[i + 1] - bounds[i])) for i, symbol in enumerate(symbols)]


def _voice_name(ref: str) -> str:
    return Path(ref).name.removesuffix(".onnx")


class PiperEngine:
    """piper voices (`.onnx` with `.onnx.json` beside it), loaded once each; see the module docstring."""

    phoneme_alphabet = "ipa"

    def __init__(self, config: TTSConfig) -> None:
        self._config = config
        self._voices = {name: self._load(ref) for name, ref in _named_voices(config, _voice_name(config.voice)).items()}
        self.voices = list(self._voices)
        self.default_voice = self.voices[0]
        self.sample_rate_hz = self._voices[self.default_voice].config.sample_rate
        aligned = all(len(voice.session.get_outputs()) > 1 for voice in self._voices.values())
        self.phoneme_timings = "model durations (w_ceil)" if aligned else "estimated (spread evenly per sentence)"
        self.name = f"piper-tts {version('piper-tts')} {_voice_name(config.voice)}"

    def _load(self, ref: str) -> Any:
        from piper import PiperVoice

        # piper's own in-memory patch exposes the model's durations (w_ceil); it needs the onnx package
        return PiperVoice.load(resolve_model_ref(ref), include_alignments=True)

    def synthesize(self, text: str, voice: str, rate: float, prosody: Prosody) -> Iterator[SpeechSegment]:
        from piper import SynthesisConfig

        piper_voice = self._voices[voice]
        settings = SynthesisConfig(
            length_scale=piper_voice.config.length_scale / (rate * prosody.rate),
            volume=min(1.0, prosody.volume / 100),
        )
        for chunk in piper_voice.synthesize(text, syn_config=settings, include_alignments=True):
            samples = chunk.audio_int16_array
            if not samples.size:
                continue
            if chunk.phoneme_alignments:
                units = [(alignment.phoneme, alignment.num_samples) for alignment in chunk.phoneme_alignments]
            else:
                units = _even_units(chunk.phonemes, samples.size)
            timed = [
                (name, min(start, samples.size), min(end, samples.size))
                for name, start, end in group_piper_phonemes(units)
            ]
            yield SpeechSegment(samples, chunk.sample_rate, [p for p in timed if p[2] > p[1]])

    def phoneme_inventory(self, voice: str) -> dict[str, str]:
        symbols = self._voices[voice].config.phoneme_id_map
        inventory = {_PIPER_PAUSE: "pause"}
        for symbol in symbols:
            if len(symbol) == 1 and not (
                _is_pause(symbol) or symbol.isspace() or symbol in _STRESS or _is_modifier(symbol)
            ):
                inventory[symbol] = _IPA_KINDS.get(symbol, "other")
        return inventory


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@serve.deployment(name="TTS", ray_actor_options={"num_cpus": 0.5})
class TextToSpeech:
    """Serves one TTS engine; see the module docstring."""

    def __init__(self, config: TTSConfig | dict[str, Any], engine_cls: type | None = None) -> None:
        self._config = TTSConfig.model_validate(config)
        default = EspeakEngine if self._config.backend == "espeak" else PiperEngine
        self._engine: TTSEngine = (engine_cls or default)(self._config)

    def _validate(self, text: str, voice: str, rate: float, emotion: str) -> tuple[str, float, Prosody]:
        config = self._config
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgument("text is empty: send the words to speak")
        if len(text) > config.max_text_chars:
            raise ResourceExhausted(
                f"text has {len(text)} characters; the limit is {config.max_text_chars}: send it in shorter parts"
            )
        if not any(character.isalnum() for character in text):
            raise InvalidArgument("text has no letters or digits: there is nothing to say")
        known = ", ".join(self._engine.voices)
        if not isinstance(voice, str) or (voice and voice not in self._engine.voices):
            raise InvalidArgument(
                f"unknown voice {voice!r}: use one of {known} (or '' for {self._engine.default_voice})"
            )
        if not _is_number(rate) or not math.isfinite(rate):
            raise InvalidArgument(f"rate must be a finite number (1.0 is normal speed), not {rate!r}")
        rate = float(rate) or 1.0
        if not config.min_rate <= rate <= config.max_rate:
            raise InvalidArgument(
                f"rate {rate:g} is out of range: use {config.min_rate:g} to {config.max_rate:g} (1.0 is normal, 0 too)"
            )
        name = emotion.strip().lower() if isinstance(emotion, str) else None
        if name is None or (name and name not in EMOTIONS):
            raise InvalidArgument(f"unknown emotion {emotion!r}: use one of {', '.join(EMOTIONS)} (or '' for neutral)")
        return voice or self._engine.default_voice, rate, EMOTIONS[name or "neutral"]

    async def synthesize(
        self, text: str, voice: str = "", rate: float = 1.0, emotion: str = ""
    ) -> AsyncIterator[SpeechChunk]:
        voice, rate, prosody = self._validate(text, voice, rate, emotion)
        segments = self._engine.synthesize(text, voice, rate, prosody)
        clock = 0  # samples already streamed: integer, so chunk i+1 starts exactly where chunk i ends
        while (segment := await asyncio.to_thread(next, segments, None)) is not None:
            for chunk in self._chunks(segment, clock):
                yield chunk
            clock += segment.samples.size

    def _chunks(self, segment: SpeechSegment, offset: int) -> Iterator[SpeechChunk]:
        rate = segment.sample_rate_hz
        size = max(1, round(self._config.chunk_ms * rate / 1000))
        phonemes = segment.phonemes
        next_phoneme = 0
        for start in range(0, segment.samples.size, size):
            end = min(start + size, segment.samples.size)
            timed: list[PhonemeResult] = []
            while next_phoneme < len(phonemes) and phonemes[next_phoneme][1] < end:
                name, begin, finish = phonemes[next_phoneme]
                timed.append(PhonemeResult(name, (offset + begin) / rate, (finish - begin) / rate))
                next_phoneme += 1
            pcm = segment.samples[start:end].astype("<i2", copy=False).tobytes()
            yield SpeechChunk(pcm, rate, (offset + start) / rate, timed)

    async def phoneme_inventory(self, voice: str = "") -> dict[str, str]:
        """The phoneme names `voice` can produce, each with its kind (vowel, stop, nasal, pause, ...)."""
        if not isinstance(voice, str) or (voice and voice not in self._engine.voices):
            raise InvalidArgument(f"unknown voice {voice!r}: use one of {', '.join(self._engine.voices)}")
        return await asyncio.to_thread(self._engine.phoneme_inventory, voice or self._engine.default_voice)

    def info(self) -> dict[str, Any]:
        config, engine = self._config, self._engine
        return {
            "engine": engine.name,
            "backend": config.backend,
            "voices": list(engine.voices),
            "default_voice": engine.default_voice,
            "sample_rate_hz": engine.sample_rate_hz,
            "emotions": list(EMOTIONS),
            "phoneme_alphabet": engine.phoneme_alphabet,
            "phoneme_timings": engine.phoneme_timings,
            "chunk_ms": config.chunk_ms,
            "max_text_chars": config.max_text_chars,
            "min_rate": config.min_rate,
            "max_rate": config.max_rate,
        }
