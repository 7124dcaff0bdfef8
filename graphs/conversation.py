"""The `almquist.v1.Conversation` gRPC service: sessions, turns, interrupts, speech and the avatar on one stream.

In: `ClientEvent`s on `Converse` (or one `AskRequest`). Out: `ServerEvent`s: SessionStarted, then per turn
TurnStarted, AnswerTokens, TurnEnd. A Converse stream runs three things at once: a reader that accepts client
events (queueing typed turns, acting on interrupts at once), a worker that answers queued turns one after another
through the router, and the response loop that sends what they produce. Stream-level problems end the RPC with a
status; a bad event inside a live stream gets an in-band ErrorEvent and the stream goes on.

Pictures: an `ImageFrame` with text is a turn about the picture (queued like typed text; a drawing comes back as
a MediaResult event). An `ImageFrame` without text is a camera frame: it is read for hand gestures, and a stop
gesture (an open palm, by default) interrupts the answer being spoken. Camera frames that arrive while one is
being read are dropped: only the newest posture matters.

Speech: `AudioChunk`s go to the stream's `AudioInput` (graphs/speech): voice activity detection, partial
transcripts while the user talks, and at the end of the turn (VAD's silence, EndOfTurn, or the length limit) a final
Transcript event, then the transcript is queued as a turn exactly like typed text, with the speaker and the emotion
heard in the voice. Speech that starts while an answer streams interrupts it (barge-in).

The avatar: a session started with `SessionStart.avatar` gets an AvatarHeader right after SessionStarted, then for
each turn the avatar's events (graphs/avatar: voice, face frames, visemes, emotion, gesture, camera, scene) paced
on the audio clock beside the text; the turn's TurnEnd comes once the avatar has finished speaking, and an
interrupt or barge-in stops its voice and face within one frame period.

Depends on the router, the speech families (stt, diarization, voice emotion, tts) and gestures (graphs/handles.py),
and the SessionStore actor; the router's events it turns into ServerEvents are named in graphs/turn.py. Served by
the single gRPC ingress (graphs/ingress.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from actors.sessions import Exchange, SessionInfo
from almquist import metrics
from almquist.config import AppConfig, ImageLimits
from almquist.errors import (
    Aborted,
    AlmquistError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    public_error,
)
from almquist.identity import Identity
from almquist.images import open_image
from almquist.v1 import avatar_pb2, common_pb2, conversation_pb2, knowledge_pb2, media_pb2
from deployments.llm.engine import ChatMessage
from graphs.access import Access, current_identity
from graphs.avatar import AvatarStream, AvatarTurn, Voice, voice_of
from graphs.handles import Handles, streaming
from graphs.knowledge import citation_proto
from graphs.rpc import abort, aborting
from graphs.speech import AudioInput, HeardSpeech
from graphs.turn import Citation, ImageInput, MediaItem, RouteDecision, TokenChunk, Turn, TurnEvent

_END = object()  # closes a stream's outgoing queue


@dataclass
class _TurnSettings:
    """What a turn needs from its session (or from an AskRequest without one)."""

    session_id: str | None
    thread_id: str | None
    personality: str
    max_tokens: int
    identity: Identity


@dataclass(frozen=True)
class _QueuedTurn:
    """A user turn waiting for the one before it to end."""

    text: str
    image: ImageInput | None = None
    speech: HeardSpeech | None = None  # a spoken turn: its final transcript, speaker and emotion
    idempotency_key: str = ""  # the client's; a turn answered under it before is replayed from the history


@dataclass(frozen=True)
class _StreamClosed:
    """Put on a stream's outgoing queue to end the RPC with `error`'s status (idle too long, lease lost)."""

    error: AlmquistError


@dataclass
class _StreamState:
    """The live state of one Converse stream."""

    current: asyncio.Task | None = None
    interrupt_reason: str | None = None
    camera: asyncio.Task | None = None  # the camera frame being read for gestures
    audio: AudioInput | None = None  # the microphone, from the first AudioChunk on
    avatar: AvatarStream | None = None  # a session with the avatar on
    out: asyncio.Queue[Any] | None = None  # the stream's outgoing events (the avatar sends into it at its pace)
    last_event: float = 0.0  # monotonic time of the client's last event: an idle stream is closed


def _error_event(error: AlmquistError) -> conversation_pb2.ServerEvent:
    """An in-band ErrorEvent for a rejected client event (the stream goes on), counted like every error."""
    metrics.record(metrics.ERRORS, 1, code=error.code.name, where="event")
    return conversation_pb2.ServerEvent(
        error=conversation_pb2.ErrorEvent(
            code=error.code.value[0],
            message=error.message,
            retry_after_s=getattr(error, "retry_after_s", 0.0),  # a quota's (almquist.quotas.QuotaExceeded)
        )
    )


def media_result_proto(item: MediaItem) -> media_pb2.MediaResult:
    return media_pb2.MediaResult(
        kind=item.kind,
        mime_type=item.mime_type,
        data=item.data,
        description=item.description,
        metadata=dict(item.metadata),
    )


class ConversationService:
    """gRPC methods of `almquist.v1.Conversation`: `Ask`, `AskStream` and the bidirectional `Converse`."""

    def __init__(self, handles: Handles, config: AppConfig, sessions: Any, access: Access) -> None:
        if handles.router is None:
            raise ValueError("the conversation needs the Router deployment (Handles.router)")
        self._router = handles.router
        self._media = handles
        self._stop_gestures = tuple(config.vision.gestures.stop_gestures if config.vision.gestures else ())
        self._image_limits = ImageLimits()  # the picture limits of the vision families' defaults
        self._speech = config.speech
        self._avatar_config = config.avatar
        self._voices: dict[str, Voice] = {}  # the TTS facts avatar streams need, asked once per voice
        self._config = config.conversation
        self._default_max_tokens = config.llm.default_max_tokens
        self._max_tokens_limit = config.llm.max_tokens_limit
        self._sessions = sessions  # the SessionStore actor (actors/sessions.py): the durable state
        self._access = access

    # ----- gRPC methods -----

    async def Ask(self, request: conversation_pb2.AskRequest, grpc_context: Any = None) -> conversation_pb2.AskResponse:
        response = conversation_pb2.AskResponse()
        with aborting(grpc_context):
            settings = await self._ask_settings(request)
            turn = _QueuedTurn(self._check_text(request.text), idempotency_key=self._check_key(request.idempotency_key))
            async for event in self._answer(turn, settings, _StreamState()):
                kind = event.WhichOneof("event")
                if kind == "turn_started":
                    response.turn_id = event.turn_started.turn_id
                    response.intent = event.turn_started.intent
                    response.route = event.turn_started.route
                elif kind == "token":
                    response.answer += event.token.text
                elif kind == "citation":
                    response.citations.append(event.citation)
                elif kind == "turn_end":
                    response.turn_end.CopyFrom(event.turn_end)
            if response.turn_end.retryable:  # an honest status: the client's retry (same key) will be answered
                raise Unavailable(f"{response.turn_end.detail}; send the same question again")
        return response

    async def AskStream(
        self, request: conversation_pb2.AskRequest, grpc_context: Any = None
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        with aborting(grpc_context):
            settings = await self._ask_settings(request)
            turn = _QueuedTurn(self._check_text(request.text), idempotency_key=self._check_key(request.idempotency_key))
        sequence = 0
        async for event in self._answer(turn, settings, _StreamState()):
            event.sequence = sequence
            sequence += 1
            yield event

    async def Converse(
        self, request_stream: AsyncIterator[conversation_pb2.ClientEvent], grpc_context: Any = None
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        stream_id = uuid.uuid4().hex
        identity = current_identity()
        try:
            first = await asyncio.wait_for(anext(aiter(request_stream)), self._config.idle_stream_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            abort(grpc_context, DeadlineExceeded(f"no SessionStart within {self._config.idle_stream_s:g} s"))
        with aborting(grpc_context):
            if first.WhichOneof("event") != "start":
                raise FailedPrecondition("the first event of a Converse stream must be SessionStart")
            avatar = await self._avatar_stream() if first.start.avatar else None
            session = await self._open_session(first.start, stream_id, identity)

        settings = _TurnSettings(
            session.session_id,
            session.thread_id,
            session.personality,
            self._max_tokens(first.start.max_tokens),
            identity,
        )
        out: asyncio.Queue[Any] = asyncio.Queue()
        turns: asyncio.Queue[_QueuedTurn | None] = asyncio.Queue()
        state = _StreamState(avatar=avatar, out=out, last_event=time.monotonic())
        reader = asyncio.create_task(self._read_events(request_stream, turns, out, state, identity))
        worker = asyncio.create_task(self._answer_turns(turns, out, settings, state))
        keeper = asyncio.create_task(self._keep_lease(session.session_id, stream_id, out, state))
        try:
            yield conversation_pb2.ServerEvent(
                sequence=0,
                session_started=conversation_pb2.SessionStarted(
                    session_id=session.session_id,
                    thread_id=session.thread_id,
                    personality=session.personality,
                    resumed=bool(first.start.session_id),
                ),
            )
            sequence = 1
            if avatar is not None:
                yield conversation_pb2.ServerEvent(sequence=sequence, avatar=avatar.header())
                sequence += 1
            while (event := await out.get()) is not _END:
                if isinstance(event, _StreamClosed):
                    abort(grpc_context, event.error)
                event.sequence = sequence
                sequence += 1
                yield event
        finally:
            tasks = [t for t in (reader, worker, keeper, state.camera) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if state.audio is not None:
                await state.audio.close()
            # best effort: if the store is restarting, the lease lapses by itself within stream_lease_s
            with contextlib.suppress(Exception):
                await self._sessions.release_stream.remote(session.session_id, stream_id)

    async def _keep_lease(self, session_id: str, stream_id: str, out: asyncio.Queue[Any], state: _StreamState) -> None:
        """Renews the stream's lease on its session while it lives, and closes the stream when the client has been
        silent for `idle_stream_s` with no answer in flight, or when the lease was lost to another stream (it
        lapsed: this process could not renew it in time)."""
        ttl = self._config.stream_lease_s
        while True:
            await asyncio.sleep(min(ttl / 4, self._config.idle_stream_s / 2))
            busy = state.current is not None and not state.current.done()
            if not busy and time.monotonic() - state.last_event > self._config.idle_stream_s:
                out.put_nowait(
                    _StreamClosed(
                        DeadlineExceeded(
                            f"the stream was idle for {self._config.idle_stream_s:g} s and was closed; "
                            "resume the session with a new stream"
                        )
                    )
                )
                return
            try:
                held = await self._sessions.renew_stream.remote(session_id, stream_id, ttl)
            except Exception:  # the store restarting: try again on the next beat, well before the lease lapses
                continue
            if not held:
                out.put_nowait(_StreamClosed(Aborted("another stream took over this session; this one was closed")))
                return

    async def _avatar_stream(self) -> AvatarStream:
        tts = self._media.tts
        if tts is None or self._speech.tts is None:
            raise FailedPrecondition(
                "the avatar speaks through a TTS deployment and none is configured (speech.tts in the profile): "
                "start the session without `avatar`"
            )
        voice_name = self._avatar_config.voice
        if voice_name not in self._voices:
            self._voices[voice_name] = await voice_of(tts, voice_name)
        return AvatarStream(self._avatar_config, self._voices[voice_name])

    # ----- Converse internals -----

    async def _read_events(
        self,
        request_stream: AsyncIterator[conversation_pb2.ClientEvent],
        turns: asyncio.Queue[_QueuedTurn | None],
        out: asyncio.Queue[Any],
        state: _StreamState,
        identity: Identity,
    ) -> None:
        """Accepts client events: typed turns are queued, interrupts act on the current turn at once."""
        try:
            async for event in request_stream:
                state.last_event = time.monotonic()
                try:
                    self._accept(event, turns, out, state, identity)
                except AlmquistError as error:
                    out.put_nowait(_error_event(error))
            if state.audio is not None:  # what the user said before closing is heard and answered too
                await state.audio.drain()
        finally:
            turns.put_nowait(None)  # the client is done sending: answer what is queued, then end the stream

    def _accept(
        self,
        event: conversation_pb2.ClientEvent,
        turns: asyncio.Queue[_QueuedTurn | None],
        out: asyncio.Queue[Any],
        state: _StreamState,
        identity: Identity,
    ) -> None:
        kind = event.WhichOneof("event")
        if kind == "text":
            text, key = self._check_text(event.text.text), self._check_key(event.text.idempotency_key)
            self._access.quotas.admit(identity, "turn")
            self._queue(turns, _QueuedTurn(text, idempotency_key=key))
        elif kind == "image" and event.image.text.strip():
            open_image(event.image.data, event.image.mime_type, self._image_limits)  # refuse non-images now
            image = ImageInput(event.image.data, event.image.mime_type)
            text = self._check_text(event.image.text)
            self._access.quotas.admit(identity, "turn")
            self._queue(turns, _QueuedTurn(text, image))
        elif kind == "image":
            self._camera_frame(event.image, out, state)
        elif kind == "interrupt":
            self._interrupt(state, event.interrupt.reason or "interrupted by the client")
        elif kind == "start":
            raise FailedPrecondition("the session is already started; SessionStart is only valid as the first event")
        elif kind == "audio":
            self._microphone(turns, out, state, identity).push(event.audio)
        elif kind == "end_of_turn":
            if state.audio is None:
                raise FailedPrecondition("EndOfTurn ends a spoken turn, and no audio was sent: send AudioChunks first")
            state.audio.end_of_turn()
        else:
            raise InvalidArgument("empty ClientEvent: set one of start, text, audio, image, end_of_turn, interrupt")

    def _queue(self, turns: asyncio.Queue[_QueuedTurn | None], turn: _QueuedTurn) -> None:
        if turns.qsize() >= self._config.max_pending_turns:
            raise ResourceExhausted(f"{turns.qsize()} turns are already waiting; send the next one after a TurnEnd")
        turns.put_nowait(turn)

    def _microphone(
        self, turns: asyncio.Queue[_QueuedTurn | None], out: asyncio.Queue[Any], state: _StreamState, identity: Identity
    ) -> AudioInput:
        """The stream's AudioInput, made at its first AudioChunk; its callbacks feed this stream's queues."""
        if state.audio is not None:
            return state.audio
        stt = self._media.stt
        if stt is None or self._speech.stt is None:
            raise Unimplemented("speech input needs a speech recogniser (speech.stt in the profile); send typed text")

        def heard(speech: HeardSpeech) -> None:
            out.put_nowait(conversation_pb2.ServerEvent(transcript=speech.transcript()))
            if speech.text:
                try:
                    self._access.quotas.admit(identity, "turn")
                    self._queue(turns, _QueuedTurn(speech.text, speech=speech))
                except AlmquistError as error:
                    out.put_nowait(_error_event(error))

        state.audio = AudioInput(
            stt,
            self._speech.stt.partial_interval_s,
            self._speech.stt.audio,
            self._speech.vad,
            on_speech_start=lambda: self._interrupt(state, "barge-in: the user started speaking"),
            on_partial=lambda partial: out.put_nowait(conversation_pb2.ServerEvent(transcript=partial)),
            on_turn=heard,
            on_error=lambda error: out.put_nowait(_error_event(error)),
            diarization=self._media.diarization,
            voice_emotion=self._media.voice_emotion,
            language=self._speech.stt.language or "",
        )
        return state.audio

    @staticmethod
    def _interrupt(state: _StreamState, reason: str) -> None:
        if state.current is not None and not state.current.done():
            state.interrupt_reason = reason
            state.current.cancel()

    def _camera_frame(self, frame: common_pb2.ImageFrame, out: asyncio.Queue[Any], state: _StreamState) -> None:
        """Reads a camera frame for a stop gesture, unless the previous frame is still being read."""
        if self._media.gestures is None:
            raise Unimplemented(
                "an ImageFrame without text is a camera frame for gestures, and no gesture model is deployed "
                "(vision.gestures): add text to ask about the picture"
            )
        open_image(frame.data, frame.mime_type, self._image_limits)
        if state.camera is None or state.camera.done():
            state.camera = asyncio.create_task(self._read_gestures(frame, out, state))

    async def _read_gestures(self, frame: common_pb2.ImageFrame, out: asyncio.Queue[Any], state: _StreamState) -> None:
        try:
            hands = await self._media.gestures.recognize.remote(frame.data, frame.mime_type)  # type: ignore[union-attr]
        except Exception as error:
            out.put_nowait(_error_event(public_error(error, "reading the camera frame")))
            return
        stops = [hand.gesture for hand in hands if hand.gesture in self._stop_gestures]
        if stops:
            self._interrupt(state, f"stop gesture ({stops[0].replace('_', ' ')}) seen on camera")

    async def _answer_turns(
        self,
        turns: asyncio.Queue[_QueuedTurn | None],
        out: asyncio.Queue[Any],
        settings: _TurnSettings,
        state: _StreamState,
    ) -> None:
        """Answers queued turns one at a time, in order."""
        try:
            while (queued := await turns.get()) is not None:
                state.interrupt_reason = None
                state.current = asyncio.create_task(self._pump(self._answer(queued, settings, state), out))
                await state.current
        finally:
            out.put_nowait(_END)

    @staticmethod
    async def _pump(events: AsyncIterator[conversation_pb2.ServerEvent], out: asyncio.Queue[Any]) -> None:
        async for event in events:
            out.put_nowait(event)

    # ----- one turn -----

    async def _answer(
        self, queued: _QueuedTurn, settings: _TurnSettings, state: _StreamState
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        """Routes one turn and turns the router's stream into ServerEvents, always ending with TurnEnd. A turn the
        session answered before under the same idempotency key is replayed from the history instead."""
        if queued.idempotency_key and settings.session_id:
            earlier = await self._sessions.answered.remote(settings.session_id, queued.idempotency_key)
            if earlier is not None:
                async for event in self._replay(earlier):
                    yield event
                return
        async with self._access.fair_share.turn(settings.identity.user_id):
            async for event in self._answer_now(queued, settings, state):
                yield event

    @staticmethod
    async def _replay(earlier: Exchange) -> AsyncIterator[conversation_pb2.ServerEvent]:
        turn_id = earlier.turn_id
        yield conversation_pb2.ServerEvent(
            turn_id=turn_id,
            turn_started=conversation_pb2.TurnStarted(turn_id=turn_id, user_text=earlier.user, route="replay"),
        )
        for cited in earlier.citations:
            yield conversation_pb2.ServerEvent(turn_id=turn_id, citation=knowledge_pb2.Citation(**cited))
        if earlier.assistant:
            yield conversation_pb2.ServerEvent(
                turn_id=turn_id, token=conversation_pb2.AnswerToken(text=earlier.assistant, index=0)
            )
        reason = common_pb2.TURN_END_REASON_INTERRUPTED if earlier.interrupted else common_pb2.TURN_END_REASON_COMPLETED
        yield conversation_pb2.ServerEvent(
            turn_id=turn_id,
            turn_end=common_pb2.TurnEnd(
                turn_id=turn_id, reason=reason, detail="answered before under this idempotency key", tokens=1
            ),
        )

    async def _answer_now(
        self, queued: _QueuedTurn, settings: _TurnSettings, state: _StreamState
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        text = queued.text
        turn_id = uuid.uuid4().hex[:16]
        started = time.monotonic()
        history = await self._history(settings)
        turn = Turn(
            turn_id=turn_id,
            text=text,
            system_prompt=self._config.personalities[settings.personality],
            history=history,
            max_tokens=settings.max_tokens,
            modality="image" if queued.image is not None else "audio" if queued.speech is not None else "text",
            image=queued.image,
            emotion=queued.speech.emotion if queued.speech is not None else "",
        )
        answer: list[str] = []
        cited: list[knowledge_pb2.Citation] = []
        reason = common_pb2.TURN_END_REASON_COMPLETED
        detail = ""
        retryable = False
        route = "none"  # the `route` tag of the turn's latency when it fails before the router decides
        speaking: AvatarTurn | None = None
        stream = self._router.options(stream=True).route.remote(turn)
        try:
            item: TurnEvent
            async for item in streaming(stream):
                if isinstance(item, RouteDecision):
                    route = item.route
                    yield conversation_pb2.ServerEvent(
                        turn_id=turn_id,
                        turn_started=conversation_pb2.TurnStarted(
                            turn_id=turn_id,
                            user_text=text,
                            intent=item.intent,
                            modality=turn.modality,
                            route=item.route,
                            confidence=item.confidence,
                            topic=item.topic,
                        ),
                    )
                    speaking = self._avatar_turn(state, turn_id, item.topic, turn.emotion)
                elif isinstance(item, Citation):
                    cited.append(citation_proto(item))
                    yield conversation_pb2.ServerEvent(turn_id=turn_id, citation=cited[-1])
                elif isinstance(item, MediaItem):
                    yield conversation_pb2.ServerEvent(turn_id=turn_id, media=media_result_proto(item))
                elif isinstance(item, TokenChunk):
                    if item.text:
                        yield conversation_pb2.ServerEvent(
                            turn_id=turn_id,
                            token=conversation_pb2.AnswerToken(text=item.text, index=len(answer)),
                        )
                        answer.append(item.text)
                        if speaking is not None:
                            speaking.add_text(item.text)
                    if item.finish_reason == "length":
                        reason = common_pb2.TURN_END_REASON_MAX_TOKENS
                        detail = f"stopped at max_tokens={turn.max_tokens}"
            if speaking is not None:
                await speaking.finish()  # the turn ends when the avatar has said it all
        except asyncio.CancelledError:
            stream.cancel()  # reaches the router and, through it, the model: generation stops
            if state.interrupt_reason is None:
                if speaking is not None:
                    await speaking.stop(common_pb2.TURN_END_REASON_INTERRUPTED, "the client went away")
                raise  # the client went away, not an interrupt
            reason = common_pb2.TURN_END_REASON_INTERRUPTED
            detail = f"{state.interrupt_reason} after {len(answer)} tokens"
            if speaking is not None:
                spoken = await speaking.stop(reason, detail)
                detail += f" and {spoken:.2f} s of speech"
        except Exception as error:
            public = public_error(error, "answering")  # a plain message; the traceback stays in the server's log
            reason = common_pb2.TURN_END_REASON_ERROR
            detail = public.message
            retryable = public.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
            metrics.record(metrics.ERRORS, 1, code=public.code.name, where="turn")
            if speaking is not None:
                await speaking.stop(reason, detail)
        if settings.session_id and not retryable:  # a retryable failure is answered again under the same key
            exchange = Exchange(
                turn_id,
                text,
                "".join(answer),
                reason == common_pb2.TURN_END_REASON_INTERRUPTED,
                citations=tuple(json_format.MessageToDict(c, preserving_proto_field_name=True) for c in cited),
            )
            key = queued.idempotency_key or turn_id
            await self._sessions.append.remote(settings.session_id, settings.thread_id, exchange, key)
        elapsed = time.monotonic() - started  # one value for the TurnEnd and the metric: a client can match them
        reason_tag = common_pb2.TurnEndReason.Name(reason).removeprefix("TURN_END_REASON_").lower()
        metrics.record(metrics.TURN_SECONDS, elapsed, route=route, reason=reason_tag)
        yield conversation_pb2.ServerEvent(
            turn_id=turn_id,
            turn_end=common_pb2.TurnEnd(
                turn_id=turn_id,
                reason=reason,
                detail=detail,
                tokens=len(answer),
                elapsed_s=elapsed,
                retryable=retryable,
            ),
        )

    @staticmethod
    def _avatar_turn(state: _StreamState, turn_id: str, topic: str, user_emotion: str) -> AvatarTurn | None:
        """The avatar's side of a turn, in a session with the avatar on; its events go out at their own pace."""
        if state.avatar is None or state.out is None:
            return None
        out = state.out

        def emit(event: avatar_pb2.AvatarEvent) -> None:
            out.put_nowait(conversation_pb2.ServerEvent(turn_id=turn_id, avatar=event))

        return state.avatar.turn(turn_id, emit, topic, user_emotion)

    async def _history(self, settings: _TurnSettings) -> tuple[ChatMessage, ...]:
        if not settings.session_id or self._config.max_history_turns == 0:
            return ()
        exchanges = await self._sessions.history.remote(
            settings.session_id, settings.thread_id, self._config.max_history_turns
        )
        messages: list[ChatMessage] = []
        for exchange in exchanges:
            messages += [ChatMessage("user", exchange.user), ChatMessage("assistant", exchange.assistant)]
        return tuple(messages)

    # ----- validation and sessions -----

    def _check_text(self, text: str) -> str:
        if not text or not text.strip():
            raise InvalidArgument("text is empty: say something")
        if len(text) > self._config.max_text_chars:
            raise ResourceExhausted(
                f"text has {len(text)} characters; the limit is {self._config.max_text_chars}: send a shorter turn"
            )
        return text.strip()

    @staticmethod
    def _check_key(key: str) -> str:
        if len(key) > 128:
            raise InvalidArgument(f"idempotency_key has {len(key)} characters; the limit is 128")
        return key

    def _check_personality(self, personality: str) -> None:
        if personality and personality not in self._config.personalities:
            raise InvalidArgument(
                f"unknown personality {personality!r}; choose one of {sorted(self._config.personalities)}"
            )

    def _max_tokens(self, requested: int) -> int:
        if requested > self._max_tokens_limit:
            raise InvalidArgument(f"max_tokens {requested} is over the limit of {self._max_tokens_limit}")
        return requested or self._default_max_tokens

    async def _open_session(
        self, start: conversation_pb2.SessionStart, stream_id: str, identity: Identity
    ) -> SessionInfo:
        self._check_personality(start.personality)
        self._max_tokens(start.max_tokens)
        if start.user_id and start.user_id not in (identity.user_id, identity.name):
            raise PermissionDenied(
                "SessionStart.user_id names someone else: the user comes from your credential; leave user_id empty"
            )
        owner = identity.user_id
        caps = self._access.quotas.caps(identity)
        if start.session_id:
            session = await self._sessions.get.remote(start.session_id, owner)
            if start.personality and start.personality != session.personality:
                session = await self._sessions.set_personality.remote(session.session_id, owner, start.personality)
        else:
            personality = start.personality or self._config.default_personality
            session = await self._sessions.create.remote(owner, personality, caps.sessions)
        if start.thread_id and start.thread_id != session.thread_id:
            session = await self._sessions.open_thread.remote(
                session.session_id, owner, start.thread_id, caps.threads_per_session
            )
        return await self._sessions.claim_stream.remote(
            session.session_id, owner, stream_id, self._config.stream_lease_s, caps.streams
        )

    async def _ask_settings(self, request: conversation_pb2.AskRequest) -> _TurnSettings:
        self._check_personality(request.personality)
        max_tokens = self._max_tokens(request.max_tokens)
        identity = current_identity()
        if not request.session_id:
            personality = request.personality or self._config.default_personality
            return _TurnSettings(None, None, personality, max_tokens, identity)
        session = await self._sessions.get.remote(request.session_id, identity.user_id)
        return _TurnSettings(
            session.session_id, session.thread_id, request.personality or session.personality, max_tokens, identity
        )
