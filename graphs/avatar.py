"""The avatar stream of a Converse session: voice, lips, face, gestures and scene on one audio clock.

In: the answer's text as the model streams it (`AvatarTurn.add_text`), the router's topic and the emotion heard in
the user's voice. Out: `AvatarEvent`s through the `emit` callback the ingress gives (it wraps them in ServerEvents):
one `AvatarHeader` per stream (`AvatarStream.header`), then per turn, on the audio clock (seconds since the header,
real time):

- the commands of the director (graphs/avatar_direction): Environment and Camera at the start of the turn's
  speech, Emotion, Gesture and Camera as each sentence starts;
- the voice: each complete sentence goes to the TTS deployment (with the prosody of its emotion); its PCM16 comes
  out as `AudioChunk`s of `audio_chunk_ms`, contiguous within the turn;
- the face: `FaceFrames` on the grid k / fps covering the same span as the audio (graphs/face: lip sync from the
  TTS's phoneme timings with coarticulation, emotion, idle motion), and the `Viseme`s behind them;
- while the next sentence is not ready (the model is still writing it) the clock goes on with `pause_fill_ms`
  blocks of silence and idle frames, so a client's buffer never runs dry mid-turn;
- the turn's `TurnEnd` with `stop_s`: the end of its audio, or after an interrupt the next frame boundary (at most
  one frame period later), so clients drop what they buffered beyond it.

Pacing: each event is sent `lead_s` before its time on the clock, never a whole utterance at once. Events go out
in time order; time codes strictly increase within each kind (audio, face frames, visemes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from ray.serve.handle import DeploymentHandle

from almquist import metrics
from almquist.config.avatar import AvatarConfig
from almquist.v1 import avatar_pb2, common_pb2
from deployments.tts import split_sentences
from graphs.avatar_direction import Direction, Director
from graphs.face import EmotionChange, FaceAnimator, viseme_spans
from graphs.handles import streaming
from graphs.visemes import ARKIT_NAMES, VISEME_INDEX

PROTOCOL_VERSION = 1
logger = logging.getLogger("ray.serve")

Emit = Callable[[avatar_pb2.AvatarEvent], None]

_SHOTS = {"medium": avatar_pb2.SHOT_MEDIUM, "close_up": avatar_pb2.SHOT_CLOSE_UP, "wide": avatar_pb2.SHOT_WIDE}
_KIND_ORDER = {"environment": 0, "camera": 1, "emotion": 2, "gesture": 3, "audio": 4, "face": 5, "viseme": 6}


def scene_enum(scene: str) -> avatar_pb2.Scene:
    return avatar_pb2.Scene.Value(f"SCENE_{scene.upper()}")


def emotion_enum(kind: str) -> avatar_pb2.EmotionKind:
    return avatar_pb2.EmotionKind.Value(f"EMOTION_KIND_{kind.upper()}")


class SentenceBuffer:
    """Collects streamed answer text and hands out complete sentences (deployments.tts.split_sentences decides)."""

    def __init__(self) -> None:
        self._text = ""

    def push(self, text: str) -> list[str]:
        self._text += text
        # a sentence is complete when a next word would start a new one: "Hi. " is, "Hi." and "Dr. " are not yet
        probe = split_sentences(self._text + "X")
        self._text = probe[-1][:-1]  # the unfinished sentence, as written (the probe's X removed)
        return probe[:-1]

    def flush(self) -> list[str]:
        sentences, self._text = split_sentences(self._text), ""
        return sentences


@dataclass
class Voice:
    """What the stream needs to know of the TTS: its rate, the voice, and the kind of each phoneme it can say."""

    tts: DeploymentHandle
    sample_rate_hz: int
    voice: str
    phoneme_kinds: dict[str, str]


@dataclass
class _Speech:
    """One sentence, synthesised: int16 samples and (phoneme, start_s, duration_s) from its start."""

    direction: Direction
    samples: np.ndarray
    phonemes: list[tuple[str, float, float]]
    first_chunk_s: float = 0.0  # how long the TTS took to its first chunk
    ready_at: float = 0.0  # time.monotonic() when its audio was all here


class AvatarStream:
    """One Converse stream's avatar: the audio clock, the face and the director, shared by its turns."""

    def __init__(self, config: AvatarConfig, voice: Voice, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.voice = voice
        self._clock = clock
        self._origin = clock()
        self.face = FaceAnimator(config, config.seed)
        self.director = Director(config)
        self.sent_until = 0.0  # the latest time any event sent so far reaches (audio and frames included)
        self.audio_sequence = 0

    def now(self) -> float:
        """Seconds on the audio clock."""
        return self._clock() - self._origin

    def wall(self, clock_s: float) -> float:
        return self._origin + clock_s

    def header(self) -> avatar_pb2.AvatarEvent:
        """The stream's first event. The clock starts as it is sent (unless a turn has already used the clock)."""
        if self.sent_until == 0.0:
            self._origin = self._clock()
        return avatar_pb2.AvatarEvent(
            time_s=0.0,
            header=avatar_pb2.AvatarHeader(
                blendshape_names=list(ARKIT_NAMES),
                fps=self.config.fps,
                audio_sample_rate_hz=self.voice.sample_rate_hz,
                audio_channels=1,
                audio_encoding="PCM16LE",
                protocol_version=PROTOCOL_VERSION,
                lead_s=self.config.lead_s,
            ),
        )

    def turn(self, turn_id: str, emit: Emit, topic: str, user_emotion: str = "") -> AvatarTurn:
        return AvatarTurn(self, turn_id, emit, topic, user_emotion)


class AvatarTurn:
    """The avatar's side of one turn: sentences in (`add_text`), paced events out, then a TurnEnd."""

    def __init__(self, stream: AvatarStream, turn_id: str, emit: Emit, topic: str, user_emotion: str) -> None:
        self._stream = stream
        self._config = stream.config
        self._turn_id = turn_id
        self._emit = emit
        self._buffer = SentenceBuffer()
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._opening = stream.director.turn_start(topic, user_emotion)
        self._start_s: float | None = None  # the turn's first audio sample on the clock (on the frame grid)
        self._samples = 0  # audio samples placed so far in this turn
        self._first_audio_at: float | None = None  # time.monotonic() when the turn's first audio was here
        self.frames_sent = 0
        self.frames_late = 0
        self._ended = False
        self._task = asyncio.create_task(self._run())

    # ----- in -----

    def add_text(self, text: str) -> None:
        for sentence in self._buffer.push(text):
            self._sentences.put_nowait(sentence)

    async def finish(self) -> float:
        """Waits until everything said is sent; then the TurnEnd (completed). Returns the seconds spoken."""
        for sentence in self._buffer.flush():
            self._sentences.put_nowait(sentence)
        self._sentences.put_nowait(None)
        await self._task
        stop_s = self._end_s()
        self._send_end(common_pb2.TURN_END_REASON_COMPLETED, "", stop_s)
        return self.spoken_s

    async def stop(self, reason: common_pb2.TurnEndReason, detail: str) -> float:
        """Stops at once (an interrupt or an error): nothing after the next frame boundary; then the TurnEnd.
        Returns the seconds spoken up to the stop."""
        now = self._stream.now()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        fps = self._config.fps
        stop_s = self._end_s() if self._start_s is None else min(self._end_s(), math.ceil(now * fps - 1e-9) / fps)
        self._send_end(reason, detail, max(stop_s, self._start_s or 0.0))
        return self.spoken_s

    @property
    def spoken_s(self) -> float:
        if self._start_s is None:
            return 0.0
        return max(0.0, min(self._end_s(), self._stream.now()) - self._start_s)

    # ----- out -----

    def _end_s(self) -> float:
        if self._start_s is None:
            return self._stream.now()
        return self._start_s + self._samples / self._stream.voice.sample_rate_hz

    def _send_end(self, reason: common_pb2.TurnEndReason, detail: str, stop_s: float) -> None:
        if self._ended:
            return
        self._ended = True
        stream = self._stream
        end = common_pb2.TurnEnd(turn_id=self._turn_id, reason=reason, detail=detail)
        self._emit(avatar_pb2.AvatarEvent(time_s=max(stop_s, stream.sent_until), turn_end=end, stop_s=stop_s))
        stream.sent_until = max(stream.sent_until, stop_s)
        if self.frames_sent:
            metrics.record(metrics.AVATAR_FRAMES_SENT, self.frames_sent)
        if self.frames_late:
            metrics.record(metrics.AVATAR_FRAMES_LATE, self.frames_late)

    async def _run(self) -> None:
        ready: asyncio.Queue[_Speech | None] = asyncio.Queue(maxsize=2)  # synthesis runs a sentence or two ahead
        synthesis = asyncio.create_task(self._synthesize(ready))
        try:
            while True:
                speech = await self._next(ready)
                if speech is None:
                    break
                await self._send(self._block(speech))
            await synthesis  # re-raises a synthesis error
        finally:
            synthesis.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await synthesis

    async def _next(self, ready: asyncio.Queue[_Speech | None]) -> _Speech | None:
        """The next sentence; while it is not ready mid-turn, pauses of silence keep the clock's content going."""
        while True:
            if self._start_s is None:
                return await ready.get()
            if not ready.empty():  # wait_for(get(), timeout=0) would cancel the get before it looks at the queue
                return ready.get_nowait()
            due = self._stream.wall(self._end_s() - self._config.lead_s) - time.monotonic()
            try:
                return await asyncio.wait_for(ready.get(), timeout=max(0.0, due))
            except TimeoutError:
                rate = self._stream.voice.sample_rate_hz
                silence = np.zeros(max(1, round(self._config.pause_fill_ms * rate / 1000)), dtype=np.int16)
                await self._send(self._block(_Speech(Direction(), silence, [])))

    async def _synthesize(self, ready: asyncio.Queue[_Speech | None]) -> None:
        voice = self._stream.voice
        while (sentence := await self._sentences.get()) is not None:
            if not any(character.isalnum() for character in sentence):
                continue  # "..." or an emoji alone: nothing to say
            direction = self._stream.director.sentence(sentence)
            started = time.monotonic()
            first_chunk_s = -1.0
            pcm: list[bytes] = []
            phonemes: list[tuple[str, float, float]] = []
            stream = voice.tts.options(stream=True).synthesize.remote(
                sentence, voice.voice, self._config.rate, direction.speech_emotion
            )
            try:
                async for chunk in streaming(stream):
                    if first_chunk_s < 0:
                        first_chunk_s = time.monotonic() - started
                    pcm.append(chunk.pcm16)
                    phonemes += [(p.phoneme, p.start_s, p.duration_s) for p in chunk.phonemes]
            except asyncio.CancelledError:
                stream.cancel()  # an interrupt: the TTS replica stops too
                raise
            samples = np.frombuffer(b"".join(pcm), dtype="<i2")
            if samples.size:
                await ready.put(_Speech(direction, samples, phonemes, first_chunk_s, time.monotonic()))
        await ready.put(None)

    def _block(self, speech: _Speech) -> list[avatar_pb2.AvatarEvent]:
        """Places a sentence (or a pause) at the end of the turn's audio and makes its events, in time order."""
        stream, config = self._stream, self._config
        rate = stream.voice.sample_rate_hz
        events: list[avatar_pb2.AvatarEvent] = []
        if self._start_s is None:  # the turn's first words: as soon as they can be sent with the full lead
            fps = config.fps
            start = max(stream.sent_until, stream.now() + config.lead_s)
            self._start_s = math.ceil(start * fps - 1e-9) / fps
            events += self._commands(self._opening, self._start_s)
            metrics.observe_stage("tts_first_chunk", speech.first_chunk_s)
            self._first_audio_at = speech.ready_at
        start_s = self._end_s()
        end_s = start_s + speech.samples.size / rate
        events += self._commands(speech.direction, start_s)
        chunk = max(1, round(config.audio_chunk_ms * rate / 1000))
        for offset in range(0, speech.samples.size, chunk):
            audio = common_pb2.AudioChunk(
                pcm16=speech.samples[offset : offset + chunk].astype("<i2", copy=False).tobytes(),
                sample_rate_hz=rate,
                channels=1,
                start_s=start_s + offset / rate,
                sequence=stream.audio_sequence,
            )
            stream.audio_sequence += 1
            events.append(avatar_pb2.AvatarEvent(time_s=audio.start_s, audio=audio))
        timed = [(name, start_s + begin, duration) for name, begin, duration in speech.phonemes]
        spans = viseme_spans(timed, stream.voice.phoneme_kinds)
        for span in spans:
            viseme_id = cast(avatar_pb2.VisemeId, VISEME_INDEX[span.viseme])  # VISEMES is in VisemeId order
            viseme = avatar_pb2.Viseme(
                id=viseme_id, start_s=span.start_s, duration_s=span.end_s - span.start_s, weight=1.0
            )
            events.append(avatar_pb2.AvatarEvent(time_s=span.start_s, viseme=viseme))
        frames = stream.face.frames(start_s, end_s, spans)
        per_message = max(1, round(config.face_message_ms * config.fps / 1000))
        for first in range(0, len(frames.times), per_message):
            batch = avatar_pb2.FaceFrames(
                frames=[
                    avatar_pb2.FaceFrame(
                        time_s=float(frames.times[i]),
                        weights=frames.weights[i].tolist(),
                        head_pitch_deg=float(frames.head[i, 0]),
                        head_yaw_deg=float(frames.head[i, 1]),
                        head_roll_deg=float(frames.head[i, 2]),
                    )
                    for i in range(first, min(first + per_message, len(frames.times)))
                ]
            )
            events.append(avatar_pb2.AvatarEvent(time_s=batch.frames[0].time_s, face=batch))
        self._samples += speech.samples.size
        stream.face.emotions.forget_before(start_s)
        return sorted(events, key=lambda event: (event.time_s, _KIND_ORDER[event.WhichOneof("event")]))

    def _commands(self, direction: Direction, at_s: float) -> list[avatar_pb2.AvatarEvent]:
        events = []
        if direction.environment is not None:
            scene, reason = direction.environment
            environment = avatar_pb2.Environment(scene=scene_enum(scene), reason=reason)
            events.append(avatar_pb2.AvatarEvent(time_s=at_s, environment=environment))
        if direction.camera is not None:
            shot, reason, transition = direction.camera
            camera = avatar_pb2.Camera(shot=_SHOTS[shot], reason=reason, transition_s=transition)
            events.append(avatar_pb2.AvatarEvent(time_s=at_s, camera=camera))
        if direction.emotion is not None:
            kind, intensity, blend = direction.emotion
            self._stream.face.emotions.add(EmotionChange(at_s, kind, intensity, blend))
            emotion = avatar_pb2.Emotion(kind=emotion_enum(kind), intensity=intensity, blend_s=blend)
            events.append(avatar_pb2.AvatarEvent(time_s=at_s, emotion=emotion))
        if direction.gesture is not None:
            name, intensity, duration = direction.gesture
            gesture = avatar_pb2.Gesture(name=name, intensity=intensity, duration_s=duration)
            events.append(avatar_pb2.AvatarEvent(time_s=at_s, gesture=gesture))
        return events

    async def _send(self, events: list[avatar_pb2.AvatarEvent]) -> None:
        """Sends each event `lead_s` before its time on the clock."""
        stream, lead = self._stream, self._config.lead_s
        for event in events:
            delay = stream.wall(event.time_s - lead) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = event.WhichOneof("event")
            if kind == "face":
                now = stream.now()
                self.frames_sent += len(event.face.frames)
                self.frames_late += sum(1 for frame in event.face.frames if frame.time_s < now)
                if self._first_audio_at is not None:
                    metrics.observe_stage("avatar_first_frame", time.monotonic() - self._first_audio_at)
                    self._first_audio_at = None
            self._emit(event)
            reach = event.time_s
            if kind == "audio":
                reach += len(event.audio.pcm16) / 2 / event.audio.sample_rate_hz
            elif kind == "face":
                reach = event.face.frames[-1].time_s
            stream.sent_until = max(stream.sent_until, reach)


async def voice_of(tts: DeploymentHandle, voice: str) -> Voice:
    """The TTS facts an avatar stream needs (asked once per ingress replica and voice)."""
    info: dict[str, Any] = await tts.info.remote()
    kinds: dict[str, str] = await tts.phoneme_inventory.remote(voice)
    return Voice(tts, int(info["sample_rate_hz"]), voice, kinds)
