"""The gRPC ingress (`almquist.v1.Conversation`) and the composed application `build_app`.

In: `ClientEvent`s on `Converse` (or one `AskRequest`). Out: `ServerEvent`s: SessionStarted, then per turn
TurnStarted, AnswerTokens, TurnEnd. A Converse stream runs three things at once: a reader that accepts client
events (queueing typed turns, acting on interrupts at once), a worker that answers queued turns one after another
through the router, and the response loop that sends what they produce. Stream-level problems end the RPC with a
status; a bad event inside a live stream gets an in-band ErrorEvent and the stream goes on.

Pictures: an `ImageFrame` with text is a turn about the picture (queued like typed text; a drawing comes back as
a MediaResult event). An `ImageFrame` without text is a camera frame: it is read for hand gestures, and a stop
gesture (an open palm, by default) interrupts the answer being spoken. Camera frames that arrive while one is
being read are dropped: only the newest posture matters. The ingress also serves `almquist.v1.Media`
(graphs/media).

Speech: `AudioChunk`s go to the stream's `AudioInput` (graphs/speech): voice activity detection, partial
transcripts while the user talks, and at the end of the turn (VAD's silence, EndOfTurn, or the length limit) a final
Transcript event, then the transcript is queued as a turn exactly like typed text, with the speaker and the emotion
heard in the voice. Speech that starts while an answer streams interrupts it (barge-in).

The avatar: a session started with `SessionStart.avatar` gets an AvatarHeader right after SessionStarted, then for
each turn the avatar's events (graphs/avatar: voice, face frames, visemes, emotion, gesture, camera, scene) paced
on the audio clock beside the text; the turn's TurnEnd comes once the avatar has finished speaking, and an
interrupt or barge-in stops its voice and face within one frame period.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from actors.sessions import Exchange, SessionInfo, get_session_store
from almquist import metrics
from almquist.audio_config import AudioConfig, SpeechConfig
from almquist.avatar_config import AvatarConfig
from almquist.config import AppConfig, ConversationConfig, ImageLimits
from almquist.errors import (
    AlmquistError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unimplemented,
    as_almquist_error,
    unwrap,
)
from almquist.images import open_image
from almquist.stores.algorithms import Community, GraphPath, RankedEntity
from almquist.v1 import avatar_pb2, common_pb2, conversation_pb2, knowledge_pb2, media_pb2
from deployments.embeddings import Embeddings
from deployments.llm.engine import ChatMessage, TokenChunk
from deployments.llm.server import LLMServer
from graphs.avatar import AvatarStream, AvatarTurn, Voice, voice_of
from graphs.graph_rag import GraphRAG, citations_of
from graphs.media import MediaHandles, MediaService
from graphs.router import Router
from graphs.rpc import abort, call_or_abort
from graphs.speech import AudioInput, HeardSpeech
from graphs.turn import Citation, ImageInput, MediaItem, RouteDecision, Turn

_END = object()  # closes a stream's outgoing queue


@dataclass
class _TurnSettings:
    """What a turn needs from its session (or from an AskRequest without one)."""

    session_id: str | None
    thread_id: str | None
    personality: str
    max_tokens: int


@dataclass(frozen=True)
class _QueuedTurn:
    """A user turn waiting for the one before it to end."""

    text: str
    image: ImageInput | None = None
    speech: HeardSpeech | None = None  # a spoken turn: its final transcript, speaker and emotion


@dataclass
class _StreamState:
    """The live state of one Converse stream."""

    current: asyncio.Task | None = None
    interrupt_reason: str | None = None
    camera: asyncio.Task | None = None  # the camera frame being read for gestures
    audio: AudioInput | None = None  # the microphone, from the first AudioChunk on
    avatar: AvatarStream | None = None  # a session with the avatar on
    out: asyncio.Queue[Any] | None = None  # the stream's outgoing events (the avatar sends into it at its pace)


async def _call(ref: Any) -> Any:
    """Awaits an actor call, re-raising our own errors unwrapped from Ray's task error."""
    try:
        return await ref
    except Exception as error:
        ours = as_almquist_error(error)
        if ours is not None:
            raise ours from None
        raise


def citation_proto(citation: Citation) -> knowledge_pb2.Citation:
    return knowledge_pb2.Citation(
        source_id=citation.source_id,
        title=citation.title,
        snippet=citation.snippet,
        path=list(citation.path),
        snapshot_id=citation.snapshot_id,
        score=citation.score,
        uri=citation.url,
        published_unix_s=citation.published,
    )


def _error_event(error: AlmquistError) -> conversation_pb2.ServerEvent:
    """An in-band ErrorEvent for a rejected client event (the stream goes on), counted like every error."""
    metrics.record(metrics.ERRORS, 1, code=error.code.name, where="event")
    return conversation_pb2.ServerEvent(
        error=conversation_pb2.ErrorEvent(code=error.code.value[0], message=error.message)
    )


def media_result_proto(item: MediaItem) -> media_pb2.MediaResult:
    return media_pb2.MediaResult(
        kind=item.kind,
        mime_type=item.mime_type,
        data=item.data,
        description=item.description,
        metadata=dict(item.metadata),
    )


def ranked_proto(entity: RankedEntity) -> knowledge_pb2.RankedEntity:
    return knowledge_pb2.RankedEntity(id=entity.id, name=entity.name, kind=entity.label, score=entity.score)


def community_proto(community: Community) -> knowledge_pb2.GraphCommunity:
    return knowledge_pb2.GraphCommunity(
        index=community.index, size=community.size, members=[ranked_proto(m) for m in community.members]
    )


def path_proto(path: GraphPath | None) -> knowledge_pb2.ShortestPathResponse:
    if path is None:
        return knowledge_pb2.ShortestPathResponse(found=False)
    return knowledge_pb2.ShortestPathResponse(
        found=True, names=list(path.names), ids=list(path.ids), relations=list(path.rels)
    )


def _snapshot_items(record: dict[str, Any]) -> int:
    """Nodes and edges an ingestion snapshot created (its last run's report)."""
    last = (record.get("info") or {}).get("last_run") or {}
    return int(last.get("created_nodes", 0)) + int(last.get("created_edges", 0))


@serve.deployment(name="ConversationIngress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
class ConversationIngress(MediaService):
    def __init__(
        self,
        router: DeploymentHandle,
        config: ConversationConfig | dict[str, Any] | None = None,
        default_max_tokens: int = 128,
        max_tokens_limit: int = 1024,
        knowledge: DeploymentHandle | None = None,
        media: dict[str, DeploymentHandle] | None = None,
        stop_gestures: tuple[str, ...] = ("open_palm",),
        image_limits: ImageLimits | dict[str, Any] | None = None,
        speech: SpeechConfig | dict[str, Any] | None = None,
        audio: AudioConfig | dict[str, Any] | None = None,
        avatar: AvatarConfig | dict[str, Any] | None = None,
    ) -> None:
        self._router = router
        self._knowledge = knowledge
        self._media = MediaHandles(**(media or {}))
        self._stop_gestures = tuple(stop_gestures)
        self._image_limits = ImageLimits.model_validate(image_limits or {})
        self._speech = SpeechConfig.model_validate(speech or {})
        self._audio_config = AudioConfig.model_validate(audio or {})
        self._avatar_config = AvatarConfig.model_validate(avatar or {})
        self._voices: dict[str, Voice] = {}  # the TTS facts avatar streams need, asked once per voice
        self._config = ConversationConfig.model_validate(config or {})
        self._default_max_tokens = default_max_tokens
        self._max_tokens_limit = max_tokens_limit
        self._sessions = get_session_store()

    # ----- gRPC methods -----

    async def Ask(self, request: conversation_pb2.AskRequest, grpc_context: Any = None) -> conversation_pb2.AskResponse:
        response = conversation_pb2.AskResponse()
        try:
            settings = await self._ask_settings(request)
            text = self._check_text(request.text)
            async for event in self._answer(_QueuedTurn(text), settings, _StreamState()):
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
        except AlmquistError as error:
            abort(grpc_context, error)
        return response

    async def AskStream(
        self, request: conversation_pb2.AskRequest, grpc_context: Any = None
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        try:
            settings = await self._ask_settings(request)
            text = self._check_text(request.text)
        except AlmquistError as error:
            abort(grpc_context, error)
        sequence = 0
        async for event in self._answer(_QueuedTurn(text), settings, _StreamState()):
            event.sequence = sequence
            sequence += 1
            yield event

    async def Converse(
        self, request_stream: AsyncIterator[conversation_pb2.ClientEvent], grpc_context: Any = None
    ) -> AsyncIterator[conversation_pb2.ServerEvent]:
        stream_id = uuid.uuid4().hex
        try:
            first = await anext(aiter(request_stream))
        except StopAsyncIteration:
            return
        try:
            if first.WhichOneof("event") != "start":
                raise FailedPrecondition("the first event of a Converse stream must be SessionStart")
            avatar = await self._avatar_stream() if first.start.avatar else None
            session = await self._open_session(first.start, stream_id)
        except AlmquistError as error:
            abort(grpc_context, error)

        settings = _TurnSettings(
            session.session_id, session.thread_id, session.personality, self._max_tokens(first.start.max_tokens)
        )
        out: asyncio.Queue[Any] = asyncio.Queue()
        turns: asyncio.Queue[_QueuedTurn | None] = asyncio.Queue()
        state = _StreamState(avatar=avatar, out=out)
        reader = asyncio.create_task(self._read_events(request_stream, turns, out, state))
        worker = asyncio.create_task(self._answer_turns(turns, out, settings, state))
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
                event.sequence = sequence
                sequence += 1
                yield event
        finally:
            tasks = [t for t in (reader, worker, state.camera) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if state.audio is not None:
                await state.audio.close()
            await self._sessions.release_stream.remote(session.session_id, stream_id)

    async def _avatar_stream(self) -> AvatarStream:
        tts = self._media.tts
        if tts is None or self._speech.tts is None:
            raise FailedPrecondition(
                "the avatar speaks through a TTS deployment and none is configured (speech.tts in the profile): "
                "start the session without `avatar`"
            )
        voice_name = self._avatar_config.voice
        if voice_name not in self._voices:
            self._voices[voice_name] = await _call(voice_of(tts, voice_name))
        return AvatarStream(self._avatar_config, self._voices[voice_name])

    # ----- Knowledge service (almquist.v1.Knowledge), served by the same ingress -----

    async def _knowledge_call(self, grpc_context: Any, method: str, *args: Any) -> Any:
        if self._knowledge is None:
            abort(grpc_context, Unimplemented("this application has no knowledge base"))
        return await call_or_abort(grpc_context, getattr(self._knowledge, method).remote(*args))

    async def Query(
        self, request: knowledge_pb2.KnowledgeQuery, grpc_context: Any = None
    ) -> knowledge_pb2.KnowledgeAnswer:
        result = await self._knowledge_call(grpc_context, "query", request.question, request.snapshot_id)
        limit = request.max_citations or len(result.facts)
        return knowledge_pb2.KnowledgeAnswer(
            answers=result.answers,
            citations=[
                citation_proto(replace(citation, snapshot_id=request.snapshot_id))
                for citation in citations_of(result, limit)
            ],
            linked_entities=result.linked,
            snapshot_id=request.snapshot_id,
        )

    async def Search(
        self, request: knowledge_pb2.SearchRequest, grpc_context: Any = None
    ) -> knowledge_pb2.SearchResponse:
        if not request.text.strip():
            abort(grpc_context, InvalidArgument("search text is empty"))
        hits = await self._knowledge_call(grpc_context, "search", request.text, request.limit, request.kind)
        return knowledge_pb2.SearchResponse(
            hits=[knowledge_pb2.SearchHit(id=h["id"], name=h["name"], kind=h["label"], score=h["score"]) for h in hits]
        )

    async def ListSnapshots(
        self, request: knowledge_pb2.ListSnapshotsRequest, grpc_context: Any = None
    ) -> knowledge_pb2.ListSnapshotsResponse:
        records = await self._knowledge_call(grpc_context, "snapshots")
        return knowledge_pb2.ListSnapshotsResponse(
            snapshots=[
                knowledge_pb2.Snapshot(
                    snapshot_id=r["snapshot_id"],
                    source=r.get("source", ""),
                    created_unix_s=r.get("created_unix_s", 0.0),
                    items=_snapshot_items(r),
                    status=r.get("status", ""),
                )
                for r in reversed(records)
            ]
        )

    async def Rollback(
        self, request: knowledge_pb2.RollbackRequest, grpc_context: Any = None
    ) -> knowledge_pb2.RollbackResponse:
        removed = await self._knowledge_call(grpc_context, "rollback", request.snapshot_id)
        # nodes and edges, as a snapshot's `items` counts them (the dict also holds per-label and per-type counts)
        return knowledge_pb2.RollbackResponse(items_removed=int(removed["nodes"] + removed["edges"]))

    async def Influential(
        self, request: knowledge_pb2.InfluentialRequest, grpc_context: Any = None
    ) -> knowledge_pb2.InfluentialResponse:
        ranked = await self._knowledge_call(
            grpc_context, "influential", request.label, request.limit, list(request.relations), request.snapshot_id
        )
        return knowledge_pb2.InfluentialResponse(entities=[ranked_proto(entity) for entity in ranked])

    async def Community(
        self, request: knowledge_pb2.CommunityRequest, grpc_context: Any = None
    ) -> knowledge_pb2.CommunityResponse:
        found, total = await self._knowledge_call(
            grpc_context,
            "community",
            request.entity_id.strip(),
            request.limit,
            request.label,
            list(request.relations),
            request.snapshot_id,
            request.communities,
        )
        return knowledge_pb2.CommunityResponse(communities=[community_proto(c) for c in found], total=total)

    async def ShortestPath(
        self, request: knowledge_pb2.ShortestPathRequest, grpc_context: Any = None
    ) -> knowledge_pb2.ShortestPathResponse:
        if not request.src_id.strip() or not request.dst_id.strip():
            abort(grpc_context, InvalidArgument("give both src_id and dst_id (entity ids like 'Person:Tom Hanks')"))
        path = await self._knowledge_call(
            grpc_context, "shortest_path", request.src_id, request.dst_id, request.max_hops, request.snapshot_id
        )
        return path_proto(path)

    # ----- Converse internals -----

    async def _read_events(
        self,
        request_stream: AsyncIterator[conversation_pb2.ClientEvent],
        turns: asyncio.Queue[_QueuedTurn | None],
        out: asyncio.Queue[Any],
        state: _StreamState,
    ) -> None:
        """Accepts client events: typed turns are queued, interrupts act on the current turn at once."""
        try:
            async for event in request_stream:
                try:
                    self._accept(event, turns, out, state)
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
    ) -> None:
        kind = event.WhichOneof("event")
        if kind == "text":
            self._queue(turns, _QueuedTurn(self._check_text(event.text.text)))
        elif kind == "image" and event.image.text.strip():
            open_image(event.image.data, event.image.mime_type, self._image_limits)  # refuse non-images now
            image = ImageInput(event.image.data, event.image.mime_type)
            self._queue(turns, _QueuedTurn(self._check_text(event.image.text), image))
        elif kind == "image":
            self._camera_frame(event.image, out, state)
        elif kind == "interrupt":
            self._interrupt(state, event.interrupt.reason or "interrupted by the client")
        elif kind == "start":
            raise FailedPrecondition("the session is already started; SessionStart is only valid as the first event")
        elif kind == "audio":
            self._microphone(turns, out, state).push(event.audio)
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
        self, turns: asyncio.Queue[_QueuedTurn | None], out: asyncio.Queue[Any], state: _StreamState
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
            ours = as_almquist_error(error) or AlmquistError(f"reading the camera frame failed: {unwrap(error)!r}")
            out.put_nowait(_error_event(ours))
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
        """Routes one turn and turns the router's stream into ServerEvents, always ending with TurnEnd."""
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
        reason = common_pb2.TURN_END_REASON_COMPLETED
        detail = ""
        route = "none"  # the `route` tag of the turn's latency when it fails before the router decides
        speaking: AvatarTurn | None = None
        stream = self._router.options(stream=True).route.remote(turn)
        try:
            async for item in stream:
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
                    yield conversation_pb2.ServerEvent(turn_id=turn_id, citation=citation_proto(item))
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
            cause = unwrap(error)
            reason = common_pb2.TURN_END_REASON_ERROR
            detail = cause.message if isinstance(cause, AlmquistError) else f"answering failed: {cause!r}"
            code = cause.code if isinstance(cause, AlmquistError) else grpc.StatusCode.INTERNAL
            metrics.record(metrics.ERRORS, 1, code=code.name, where="turn")
            if speaking is not None:
                await speaking.stop(reason, detail)
        if settings.session_id:
            exchange = Exchange(turn_id, text, "".join(answer), reason == common_pb2.TURN_END_REASON_INTERRUPTED)
            await self._sessions.append.remote(settings.session_id, settings.thread_id, exchange)
        elapsed = time.monotonic() - started  # one value for the TurnEnd and the metric: a client can match them
        reason_tag = common_pb2.TurnEndReason.Name(reason).removeprefix("TURN_END_REASON_").lower()
        metrics.record(metrics.TURN_SECONDS, elapsed, route=route, reason=reason_tag)
        yield conversation_pb2.ServerEvent(
            turn_id=turn_id,
            turn_end=common_pb2.TurnEnd(
                turn_id=turn_id, reason=reason, detail=detail, tokens=len(answer), elapsed_s=elapsed
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

    def _check_personality(self, personality: str) -> None:
        if personality and personality not in self._config.personalities:
            raise InvalidArgument(
                f"unknown personality {personality!r}; choose one of {sorted(self._config.personalities)}"
            )

    def _max_tokens(self, requested: int) -> int:
        if requested > self._max_tokens_limit:
            raise InvalidArgument(f"max_tokens {requested} is over the limit of {self._max_tokens_limit}")
        return requested or self._default_max_tokens

    async def _open_session(self, start: conversation_pb2.SessionStart, stream_id: str) -> SessionInfo:
        self._check_personality(start.personality)
        self._max_tokens(start.max_tokens)
        if start.session_id:
            session = await _call(self._sessions.get.remote(start.session_id))
            if start.personality and start.personality != session.personality:
                session = await _call(self._sessions.set_personality.remote(session.session_id, start.personality))
        else:
            personality = start.personality or self._config.default_personality
            session = await _call(self._sessions.create.remote(start.user_id, personality))
        if start.thread_id and start.thread_id != session.thread_id:
            session = await _call(self._sessions.open_thread.remote(session.session_id, start.thread_id))
        return await _call(self._sessions.claim_stream.remote(session.session_id, stream_id))

    async def _ask_settings(self, request: conversation_pb2.AskRequest) -> _TurnSettings:
        self._check_personality(request.personality)
        max_tokens = self._max_tokens(request.max_tokens)
        if not request.session_id:
            return _TurnSettings(None, None, request.personality or self._config.default_personality, max_tokens)
        session = await _call(self._sessions.get.remote(request.session_id))
        return _TurnSettings(
            session.session_id, session.thread_id, request.personality or session.personality, max_tokens
        )


def compose(
    config: AppConfig,
    llm_engine_cls: str | type | None = None,
    embeddings_engine_cls: type | None = None,
    vision_engines: dict[str, type] | None = None,
    ray_actor_options: dict[str, dict[str, Any]] | None = None,
    audio_engines: dict[str, type] | None = None,
) -> Application:
    """The conversation graph: ingress -> router -> {llm, graph_rag -> llm, scene describer, image_gen}, with
    embeddings for both and the vision, speech and audio families the profile configures (the ingress holds the
    speech families: it hears spoken turns; all of them serve `Media`). `vision_engines` / `audio_engines` swap
    their engines;
    `ray_actor_options` (deployment name -> options) replaces the decorators' defaults, for graphs run from code
    (a Serve config's `deployments:` does the same for profiles)."""
    from deployments.depth import Depth
    from deployments.detection import Detector
    from deployments.diarization import Diarization
    from deployments.gestures import Gestures
    from deployments.image_gen import ImageGen
    from deployments.music_analysis import MusicAnalysis
    from deployments.music_gen import MusicGen
    from deployments.scene_changes import SceneChanges
    from deployments.segmentation import Segmentation
    from deployments.separation import Separation
    from deployments.stt import SpeechToText
    from deployments.tts import TextToSpeech
    from deployments.vad import VoiceActivity
    from deployments.voice_emotion import VoiceEmotion
    from graphs.vision import SceneDescriber

    engines = {**(vision_engines or {}), **(audio_engines or {})}
    options = ray_actor_options or {}

    def placed(deployment: Any) -> Any:
        name = deployment.name
        return deployment.options(ray_actor_options=options[name]) if name in options else deployment

    embeddings = placed(Embeddings).bind(config.embeddings, embeddings_engine_cls)
    llm = placed(LLMServer).bind(config.llm, llm_engine_cls)
    graph_rag = placed(GraphRAG).bind(llm, embeddings, config.knowledge, config.kgqa, config.news)
    vision = config.vision
    families = {
        "detection": Detector,
        "depth": Depth,
        "segmentation": Segmentation,
        "gestures": Gestures,
        "scene_changes": SceneChanges,
        "image_gen": ImageGen,
    }
    bound = {
        name: placed(deployment).bind(getattr(vision, name), engines.get(name))
        for name, deployment in families.items()
        if getattr(vision, name) is not None
    }
    sound = {
        "stt": (SpeechToText, config.speech.stt),
        "vad": (VoiceActivity, config.speech.vad),
        "diarization": (Diarization, config.speech.diarization),
        "voice_emotion": (VoiceEmotion, config.speech.voice_emotion),
        "tts": (TextToSpeech, config.speech.tts),
        "separation": (Separation, config.audio.separation),
        "music_analysis": (MusicAnalysis, config.audio.music_analysis),
        "music_gen": (MusicGen, config.audio.music_gen),
    }
    bound |= {
        name: placed(deployment).bind(family_config, engines.get(name))
        for name, (deployment, family_config) in sound.items()
        if family_config is not None
    }
    scene = (
        placed(SceneDescriber).bind(
            bound["detection"], llm, vision.detection, bound.get("depth"), bound.get("segmentation")
        )
        if "detection" in bound
        else None
    )
    router = placed(Router).bind(llm, graph_rag, embeddings, config.router, scene, bound.get("image_gen"))
    stop_gestures = vision.gestures.stop_gestures if vision.gestures else ()
    return placed(ConversationIngress).bind(
        router,
        config.conversation,
        config.llm.default_max_tokens,
        config.llm.max_tokens_limit,
        graph_rag,
        {"embeddings": embeddings, "llm": llm, **bound},
        stop_gestures,
        None,
        config.speech,
        config.audio,
        config.avatar,
    )


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: graphs.conversation:build_app`); `args` is an AppConfig."""
    return compose(AppConfig.model_validate(args or {}))
