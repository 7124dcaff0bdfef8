"""Spoken input: microphone audio in, transcripts and finished user turns out (used by Converse and Media.Transcribe).

`SpeechTurn` is one utterance being heard. In: float32 mono 16 kHz pieces (`push`). Out: a partial `Transcript`
(through `on_partial`) each time `partial_interval_s` of new audio has arrived, with at most one partial
transcription in flight, so a slow recogniser never queues up work; then `finish()` returns the final `HeardSpeech`:
the transcript with word timings, plus the speaker (diarization) and the emotion in the voice when those
deployments exist, asked at the same time as the transcript.

`AudioInput` is one Converse stream's microphone. In: `AudioChunk`s (any accepted rate and channel count; a stream
keeps one format) and EndOfTurn. It decodes and resamples each chunk as it arrives (soxr's streaming resampler:
no seams between chunks), runs voice activity detection (`deployments.vad.TurnDetector`, in this process: a 32 ms
decision must not pay a network hop), and calls back: `on_speech_start` when the user starts talking (barge-in),
`on_partial` with partial transcripts, `on_turn` with the final `HeardSpeech` when VAD hears the end of the turn
(or the client sends EndOfTurn, or the turn reaches the audio length limit). Without a VAD deployment a turn ends
only with EndOfTurn. Audio before speech starts is kept only as a short pre-roll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from almquist import metrics
from almquist.audio import check_format, pcm16_to_float, to_mono
from almquist.config.audio import AudioLimits
from almquist.config.speech import VADConfig
from almquist.errors import AlmquistError, InvalidArgument, ResourceExhausted, public_error
from almquist.v1 import common_pb2, media_pb2
from deployments.diarization import speaker_at

RATE_HZ = 16000
# Audio kept from before VAD's speech_start, which comes min_speech_ms (+ up to ~50 ms of silero's ramp) after the
# first phoneme: without it the first word would be cut.
PRE_ROLL_MARGIN_S = 0.2


@dataclass
class HeardSpeech:
    """A finished spoken turn: what was said, by whom, how it sounded."""

    text: str
    language: str
    duration_s: float
    words: list[media_pb2.Word] = field(default_factory=list)
    speaker: str = ""
    emotion: str = ""

    def transcript(self) -> media_pb2.Transcript:
        return media_pb2.Transcript(
            text=self.text,
            is_final=True,
            language=self.language,
            words=self.words,
            speaker=self.speaker,
            emotion=self.emotion,
        )


class SpeechTurn:
    """One utterance being heard; see the module docstring."""

    def __init__(
        self,
        stt: DeploymentHandle,
        partial_interval_s: float,
        on_partial: Callable[[media_pb2.Transcript], None],
        language: str = "",
        word_timestamps: bool = True,
        diarization: DeploymentHandle | None = None,
        voice_emotion: DeploymentHandle | None = None,
    ) -> None:
        self._stt = stt
        self._interval = int(partial_interval_s * RATE_HZ)
        self._on_partial = on_partial
        self._language = language
        self._word_timestamps = word_timestamps
        self._diarization = diarization
        self._voice_emotion = voice_emotion
        self._pieces: list[np.ndarray] = []
        self._samples = 0
        self._partial_at = 0  # samples heard when the last partial was started
        self._partial: asyncio.Task | None = None

    @property
    def seconds(self) -> float:
        return self._samples / RATE_HZ

    def push(self, audio: np.ndarray) -> None:
        if audio.size == 0:
            return
        self._pieces.append(audio)
        self._samples += audio.size
        due = self._samples - self._partial_at >= self._interval
        if due and (self._partial is None or self._partial.done()):
            self._partial_at = self._samples
            self._partial = asyncio.create_task(self._send_partial(self.audio()))

    def audio(self) -> np.ndarray:
        if len(self._pieces) > 1:
            self._pieces = [np.concatenate(self._pieces)]
        return self._pieces[0] if self._pieces else np.zeros(0, np.float32)

    async def _send_partial(self, audio: np.ndarray) -> None:
        with contextlib.suppress(Exception):  # a failed partial is not the turn's failure: the final one decides
            result = await self._stt.transcribe.remote(audio, self._language, False, True)
            if result.text.strip():
                self._on_partial(media_pb2.Transcript(text=result.text.strip(), language=result.language))

    async def finish(self) -> HeardSpeech:
        """The final transcript of everything pushed, with speaker and emotion when those families are deployed.
        A partial still in flight may land while the final one is made (it is shorter, so usually does); one that
        has not by then is dropped, so no partial ever follows the final transcript."""
        audio = self.audio()
        if audio.size == 0:
            return HeardSpeech(text="", language="", duration_s=0.0)
        asks = [self._stt.transcribe.remote(audio, self._language, self._word_timestamps, False)]
        if self._diarization is not None:
            asks.append(self._diarization.diarize.remote(audio, 0))
        if self._voice_emotion is not None:
            asks.append(self._voice_emotion.classify.remote(audio))
        try:
            with metrics.time_stage("stt"):
                answers = await asyncio.gather(*asks)
        finally:
            if self._partial is not None and not self._partial.done():
                self._partial.cancel()
        result = answers[0]
        segments = answers[1] if self._diarization is not None else []
        emotion = answers[-1].label if self._voice_emotion is not None else ""
        words = [
            media_pb2.Word(
                text=w.text.strip(),
                start_s=w.start_s,
                end_s=w.end_s,
                probability=w.probability,
                speaker=speaker_at(segments, w.start_s, w.end_s),
            )
            for w in result.words
        ]
        return HeardSpeech(
            text=result.text.strip(),
            language=result.language,
            duration_s=audio.size / RATE_HZ,
            words=words,
            speaker=speaker_at(segments, 0.0, audio.size / RATE_HZ),
            emotion=emotion,
        )


class ChunkDecoder:
    """AudioChunk -> float32 mono 16 kHz, one stream's chunks through one streaming resampler (no seams)."""

    def __init__(self, limits: AudioLimits) -> None:
        self._limits = limits
        self._format: tuple[int, int] | None = None
        self._resampler: Any = None

    def decode(self, chunk: common_pb2.AudioChunk) -> np.ndarray:
        channels = check_format(chunk.sample_rate_hz, chunk.channels, self._limits)
        declared = (chunk.sample_rate_hz, channels)
        if self._format is None:
            self._format = declared
            if chunk.sample_rate_hz != RATE_HZ:
                import soxr

                self._resampler = soxr.ResampleStream(chunk.sample_rate_hz, RATE_HZ, 1, dtype="float32")
        elif declared != self._format:
            raise InvalidArgument(
                f"this stream's audio is {self._format[0]} Hz x {self._format[1]} channels; a chunk declared "
                f"{declared[0]} Hz x {declared[1]}: keep one format for the whole stream"
            )
        audio = to_mono(pcm16_to_float(chunk.pcm16, chunk.sample_rate_hz, channels, self._limits))
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio)
        return np.ascontiguousarray(audio, dtype=np.float32)


class AudioInput:
    """One Converse stream's microphone; see the module docstring. Callbacks run on the event loop."""

    def __init__(
        self,
        stt: DeploymentHandle,
        partial_interval_s: float,
        limits: AudioLimits,
        vad: VADConfig | None,
        on_speech_start: Callable[[], None],
        on_partial: Callable[[media_pb2.Transcript], None],
        on_turn: Callable[[HeardSpeech], None],
        on_error: Callable[[AlmquistError], None],
        diarization: DeploymentHandle | None = None,
        voice_emotion: DeploymentHandle | None = None,
        language: str = "",
    ) -> None:
        self._new_turn = lambda: SpeechTurn(
            stt, partial_interval_s, on_partial, language, True, diarization, voice_emotion
        )
        self._limits = limits
        self._decoder = ChunkDecoder(limits)
        self._on_speech_start = on_speech_start
        self._on_turn = on_turn
        self._on_error = on_error
        self._detector = None
        self._pre_roll_samples = int(((vad.min_speech_ms / 1000 if vad else 0.0) + PRE_ROLL_MARGIN_S) * RATE_HZ)
        if vad is not None:
            from deployments.vad import TurnDetector, load_vad_model

            self._detector = TurnDetector(vad, load_vad_model(vad))
        self._queue: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue()
        self._turn = self._new_turn()
        self._speaking = self._detector is None  # without VAD every chunk is part of the turn
        self._pre_roll: list[np.ndarray] = []
        self._heard_s = 0.0  # audio seconds of this stream pushed through VAD
        self._decided_after: float | None = None  # seconds from a chunk's arrival to VAD's end-of-turn in it
        self._finishing: set[asyncio.Task] = set()
        self._previous: asyncio.Task | None = None  # the turn finishing before the next one: turns stay in order
        self._task = asyncio.create_task(self._run())

    def push(self, chunk: common_pb2.AudioChunk) -> None:
        """Decodes a chunk now (a bad one raises here and becomes an in-band error) and queues it for VAD."""
        self._queue.put_nowait((self._decoder.decode(chunk), time.monotonic()))

    def end_of_turn(self) -> None:
        """The client says the user's turn is over (push-to-talk released)."""
        self._queue.put_nowait(None)

    async def drain(self) -> None:
        """The client stopped sending: ends the turn being heard and waits until every spoken turn is delivered."""
        self.end_of_turn()
        heard = asyncio.ensure_future(self._queue.join())  # the VAD loop has taken everything sent, the end too
        await asyncio.wait([heard, self._task], return_when=asyncio.FIRST_COMPLETED)  # (unless that loop died)
        heard.cancel()
        while self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)

    async def close(self) -> None:
        self._task.cancel()
        for task in (self._task, *self._finishing):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    self._end_turn()
                elif self._detector is None:
                    self._add(item[0])
                else:
                    events = await asyncio.to_thread(self._detector.push, item[0])
                    self._follow(item[0], events, item[1])
            finally:
                self._queue.task_done()

    def _follow(self, audio: np.ndarray, events: list[Any], arrived: float) -> None:
        """Applies a chunk's VAD events in order, giving each part of the chunk to the turn it belongs to."""
        start_of_chunk = self._heard_s
        self._heard_s += audio.size / RATE_HZ
        cursor = 0
        for event in events:
            at = min(audio.size, max(cursor, round((event.time_s - start_of_chunk) * RATE_HZ)))
            self._route(audio[cursor:at])
            cursor = at
            if event.kind == "speech_start":
                self._speaking = True
                self._turn.push(np.concatenate(self._pre_roll) if self._pre_roll else np.zeros(0, np.float32))
                self._pre_roll = []
                self._on_speech_start()
            elif event.kind == "end_of_turn":
                self._decided_after = time.monotonic() - arrived
                self._end_turn()
        self._route(audio[cursor:])

    def _route(self, audio: np.ndarray) -> None:
        if self._speaking:
            self._add(audio)
        elif audio.size:
            self._pre_roll.append(audio)
            keep = self._pre_roll_samples
            joined = np.concatenate(self._pre_roll)
            self._pre_roll = [joined[-keep:]]

    def _add(self, audio: np.ndarray) -> None:
        self._turn.push(audio)
        if self._turn.seconds >= self._limits.max_seconds:  # a monologue: answer what was said so far
            self._on_error(
                ResourceExhausted(f"one spoken turn may be {self._limits.max_seconds:g} s long; ending the turn there")
            )
            self._end_turn()

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, self._new_turn()
        self._speaking = self._detector is None
        if self._detector is not None:
            self._detector.reset()
        if turn.seconds == 0:
            return
        if self._decided_after is not None:
            metrics.observe_stage("vad", self._decided_after)
            self._decided_after = None
        task = asyncio.create_task(self._finish(turn, self._previous))
        self._previous = task
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, turn: SpeechTurn, previous: asyncio.Task | None) -> None:
        try:
            heard: HeardSpeech | None = await turn.finish()
        except Exception as error:
            heard = None
            self._on_error(public_error(error, "transcribing the turn"))
        if previous is not None:  # transcribed at the same time, delivered in the order spoken
            with contextlib.suppress(Exception):
                await previous
        if heard is not None:
            self._on_turn(heard)
