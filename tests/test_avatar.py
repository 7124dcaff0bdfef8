"""The avatar stream without Serve: the real TTS deployment class (espeak-ng) called in this process, its phoneme
timings -> visemes -> face frames, paced on the audio clock; interrupts; pauses while the next sentence is written."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from almquist.config.avatar import AvatarConfig
from almquist.config.speech import TTSConfig
from almquist.v1 import avatar_pb2, common_pb2
from deployments.tts import TextToSpeech
from graphs.avatar import AvatarStream, AvatarTurn, SentenceBuffer, voice_of
from graphs.visemes import ARKIT_INDEX, is_pause
from tests.local_deployment import LocalDeployment

SENTENCE = "Hello there, my friend. Tell me about movies!"
JAW = ARKIT_INDEX["jawOpen"]


@pytest.fixture(scope="module")
def tts() -> LocalDeployment:
    return LocalDeployment(TextToSpeech.func_or_class(TTSConfig()))  # type: ignore[attr-defined]  # a Deployment


class Recorder:
    """The emit callback: each event with the clock time it was sent at."""

    def __init__(self, stream: AvatarStream) -> None:
        self._stream = stream
        self.sent: list[tuple[float, avatar_pb2.AvatarEvent]] = []

    def __call__(self, event: avatar_pb2.AvatarEvent) -> None:
        self.sent.append((self._stream.now(), event))

    def of(self, kind: str) -> list[avatar_pb2.AvatarEvent]:
        return [event for _, event in self.sent if event.WhichOneof("event") == kind]

    def frames(self) -> list[avatar_pb2.FaceFrame]:
        return [frame for event in self.of("face") for frame in event.face.frames]


async def speak(tts, text: str, config: AvatarConfig, topic: str = "movies") -> tuple[AvatarStream, Recorder]:
    stream = AvatarStream(config, await voice_of(tts, ""))
    recorder = Recorder(stream)
    turn = stream.turn("t", recorder, topic)
    for word in text.split(" "):  # as a model streams it, a word at a time
        turn.add_text(word + " ")
    await turn.finish()
    return stream, recorder


def test_a_known_sentence_becomes_visemes_and_frames_on_the_audio_clock(tts):
    config = AvatarConfig(seed=7)
    _, recorder = asyncio.run(speak(tts, SENTENCE, config))
    events = [event for _, event in recorder.sent]
    times = [event.time_s for event in events]
    assert times == sorted(times)
    for kind in ("audio", "face", "viseme"):
        of_kind = [event.time_s for event in recorder.of(kind)]
        assert all(b > a for a, b in itertools.pairwise(of_kind)), kind
    frame_times = [frame.time_s for frame in recorder.frames()]
    assert all(b > a for a, b in itertools.pairwise(frame_times))

    audio = [event.audio for event in recorder.of("audio")]
    start, end = audio[0].start_s, audio[-1].start_s + len(audio[-1].pcm16) / 2 / audio[-1].sample_rate_hz
    assert all(
        abs(a.start_s + len(a.pcm16) / 2 / a.sample_rate_hz - b.start_s) < 1e-9 for a, b in itertools.pairwise(audio)
    )
    duration = end - start
    frames = recorder.frames()
    assert abs(len(frames) - duration * config.fps) <= 1
    # audio and frames cover the same span: the first frame at the first sample, the last within a frame of the end
    assert frames[0].time_s == pytest.approx(start) and 0 < end - frames[-1].time_s <= 1 / config.fps + 1e-9
    [turn_end] = recorder.of("turn_end")
    assert turn_end.turn_end.reason == common_pb2.TURN_END_REASON_COMPLETED
    assert turn_end.stop_s == pytest.approx(end)

    # jawOpen: high in vowels, near zero in silences (the TTS's own phonemes, at the middle of each)
    weights = np.array([frame.weights for frame in frames])
    at = {round(t * config.fps): i for i, t in enumerate(frame_times)}
    synthesized = asyncio.run(_phonemes(tts, SENTENCE))
    inventory = asyncio.run(_inventory(tts))
    vowels, silences = [], []
    for name, begin, length in synthesized:
        middle = at.get(round((start + begin + length / 2) * config.fps))
        if middle is None:
            continue
        if inventory.get(name) == "vowel" and length >= 0.05:
            vowels.append(weights[middle, JAW])
        if is_pause(name) and length >= 0.1:
            silences.append(weights[middle, JAW])
    assert len(vowels) >= 8 and len(silences) >= 2
    assert np.mean(vowels) > 0.25 and np.min(vowels) > 0.12, vowels
    assert max(silences) < 0.06, silences


async def _inventory(tts) -> dict[str, str]:
    return await tts.phoneme_inventory.remote("")


async def _phonemes(tts, text: str) -> list[tuple[str, float, float]]:
    found = []
    async for chunk in tts.options(stream=True).synthesize.remote(text):
        found += [(p.phoneme, p.start_s, p.duration_s) for p in chunk.phonemes]
    return found


def test_events_are_paced_lead_s_ahead_of_the_clock_not_in_a_burst(tts):
    config = AvatarConfig(seed=1, lead_s=0.1)
    _, recorder = asyncio.run(speak(tts, SENTENCE, config))
    timed = [(sent, event) for sent, event in recorder.sent if event.WhichOneof("event") in ("audio", "face")]
    ahead = np.array([event.time_s - sent for sent, event in timed])
    assert ahead.max() <= config.lead_s + 0.01  # never earlier than the lead
    assert np.median(ahead) > config.lead_s - 0.02  # and mostly right on it: nothing is late
    assert timed[-1][0] - timed[0][0] > (timed[-1][1].time_s - timed[0][1].time_s) - 0.05


def test_30_fps_is_configurable(tts):
    config = AvatarConfig(seed=1, fps=30)
    _, recorder = asyncio.run(speak(tts, "Good evening.", config))
    times = np.array([frame.time_s for frame in recorder.frames()])
    assert np.allclose(np.diff(times), 1 / 30)


def test_an_interrupt_stops_audio_and_frames_within_one_frame_period(tts):
    config = AvatarConfig(seed=2)

    async def run() -> tuple[float, float, Recorder, AvatarTurn]:
        stream = AvatarStream(config, await voice_of(tts, ""))
        recorder = Recorder(stream)
        turn = stream.turn("t", recorder, "general")
        turn.add_text("This is a long answer that keeps going. It has a second sentence too. And a third one. ")
        while not recorder.of("audio") or recorder.of("audio")[-1].time_s < 0.8:
            await asyncio.sleep(0.005)
        interrupted = stream.now()
        spoken = await turn.stop(common_pb2.TURN_END_REASON_INTERRUPTED, "barge-in")
        count = len(recorder.sent)
        await asyncio.sleep(0.3)
        assert len(recorder.sent) == count  # nothing more after the TurnEnd
        return interrupted, spoken, recorder, turn

    interrupted, spoken, recorder, _ = asyncio.run(run())
    [end] = recorder.of("turn_end")
    assert end.turn_end.reason == common_pb2.TURN_END_REASON_INTERRUPTED and end.turn_end.detail == "barge-in"
    assert interrupted <= end.stop_s <= interrupted + 1 / config.fps
    assert end.time_s >= max(event.time_s for _, event in recorder.sent[:-1])  # time codes never go back
    assert 0.5 < spoken < 1.0
    sent_after = [e for t, e in recorder.sent if t > interrupted and e.WhichOneof("event") != "turn_end"]
    assert sent_after == []


def test_while_the_next_sentence_is_written_pauses_keep_the_clock_going(tts):
    config = AvatarConfig(seed=3)

    async def run() -> Recorder:
        stream = AvatarStream(config, await voice_of(tts, ""))
        recorder = Recorder(stream)
        turn = stream.turn("t", recorder, "music")
        turn.add_text("Short one. ")
        while not recorder.of("audio"):
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.5)  # the model is slow to write the next sentence
        turn.add_text("And here is the rest.")
        await turn.finish()
        return recorder

    recorder = asyncio.run(run())
    audio = [event.audio for event in recorder.of("audio")]
    gaps = [b.start_s - (a.start_s + len(a.pcm16) / 2 / a.sample_rate_hz) for a, b in itertools.pairwise(audio)]
    assert max(abs(gap) for gap in gaps) < 1e-9  # contiguous through the pause
    silent = [a for a in audio if not np.frombuffer(a.pcm16, dtype="<i2").any()]
    assert sum(len(a.pcm16) / 2 / a.sample_rate_hz for a in silent) > 0.5
    times = np.array([frame.time_s for frame in recorder.frames()])
    assert np.allclose(np.diff(times), 1 / config.fps)  # no hole in the face either
    late = [e for t, e in recorder.sent if e.WhichOneof("event") in ("audio", "face") and e.time_s < t]
    assert late == []


def test_the_face_is_never_frozen_between_words(tts):
    _, recorder = asyncio.run(speak(tts, "Hm.", AvatarConfig(seed=4, blink_interval_s=(0.2, 0.3))))
    frames = recorder.frames()
    heads = np.array([(f.head_pitch_deg, f.head_yaw_deg, f.head_roll_deg) for f in frames])
    assert (np.abs(np.diff(heads, axis=0)).sum(axis=1) > 0).all()  # the head moves every frame
    blinks = np.array([f.weights[ARKIT_INDEX["eyeBlinkLeft"]] for f in frames])
    assert blinks.max() > 0.8 and blinks.min() < 0.1


def test_sentences_are_handed_out_complete():
    buffer = SentenceBuffer()
    assert buffer.push("Dr. Smith said hi") == []
    assert buffer.push(". Then he left! And") == ["Dr. Smith said hi.", "Then he left!"]
    assert buffer.push(" that was it.") == []  # "it." may go on ("it.com"): it waits for the next word
    assert buffer.push(" ") == ["And that was it."]
    assert buffer.push("Bye") == []
    assert buffer.flush() == ["Bye"]


def test_bad_text_gets_no_voice_but_the_turn_still_ends(tts):
    start = time.monotonic()
    _, recorder = asyncio.run(speak(tts, "... !!!", AvatarConfig(seed=5)))
    assert recorder.of("audio") == [] and recorder.of("face") == []
    [end] = recorder.of("turn_end")
    assert end.turn_end.reason == common_pb2.TURN_END_REASON_COMPLETED
    assert time.monotonic() - start < 2


def test_a_late_turn_takes_its_ready_sentence_instead_of_filling_silence(tts):
    """Behind the clock (an overloaded server), the next sentence that is ready goes out: no endless pauses."""

    async def run() -> object:
        stream = AvatarStream(AvatarConfig(seed=6), await voice_of(tts, ""))
        turn = stream.turn("t", lambda event: None, "general")
        turn._task.cancel()
        turn._start_s = -10.0  # the turn's audio should have ended ten seconds ago
        ready: asyncio.Queue = asyncio.Queue()
        ready.put_nowait("the next sentence")
        return await turn._next(ready), turn._samples

    assert asyncio.run(run()) == ("the next sentence", 0)  # and no silence was placed before it
