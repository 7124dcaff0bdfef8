"""The gRPC client used by the CLI, notebooks and tests: a thin layer over the generated stubs.

`ask_stream()` yields ServerEvents of one question; `Conversation` holds one Converse stream open and lets a
caller send turns and interrupts while reading answers. Every call carries the caller's credential
(`authorization: Bearer ...`: the `api_key` given, else ALMQUIST_API_KEY, else ~/.almquist/credentials, which
`almquist up` writes). Unary calls that fail with UNAVAILABLE are retried by gRPC itself with back-off (the
channel's retry policy); each turn carries an idempotency key, so a retried turn is never answered or stored twice.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from almquist.credentials import read_credential
from almquist.v1 import (
    account_pb2,
    account_pb2_grpc,
    common_pb2,
    conversation_pb2,
    conversation_pb2_grpc,
    knowledge_pb2,
    knowledge_pb2_grpc,
    media_pb2,
    media_pb2_grpc,
)

DEFAULT_TARGET = "localhost:9000"
APPLICATION = "conversation"  # the Serve app gRPC calls go to, unless ALMQUIST_APPLICATION names another
# gRPC's own retries (https://github.com/grpc/proposal/blob/master/A6-client-retries.md): a unary call that ends
# UNAVAILABLE (a replica restarting, an honest retryable turn) is sent again after 1-8 s, up to 5 tries.
RETRY_POLICY = {
    "methodConfig": [
        {
            "name": [
                {"service": "almquist.v1.Conversation", "method": "Ask"},
                {"service": "almquist.v1.Knowledge"},
                {"service": "almquist.v1.Account"},
            ],
            "retryPolicy": {
                "maxAttempts": 5,  # gRPC's most
                "initialBackoff": "1s",  # 1 + 2 + 4 + 8 s (with jitter): a replica restarts in 5-17 s on 2 cores
                "maxBackoff": "8s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def call_metadata(application: str = "", api_key: str | None = None) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries: the Serve application and the caller's credential (`api_key`, else
    ALMQUIST_API_KEY, else the credentials file)."""
    credential = api_key or read_credential()
    application = application or os.environ.get("ALMQUIST_APPLICATION", APPLICATION)
    return (("application", application),) + ((("authorization", f"Bearer {credential}"),) if credential else ())


@dataclass
class Client:
    """A channel to the Serve gRPC proxy; `application` picks the Serve app (sent as metadata)."""

    target: str = DEFAULT_TARGET
    application: str = field(default_factory=lambda: os.environ.get("ALMQUIST_APPLICATION", APPLICATION))
    timeout_s: float | None = None
    api_key: str | None = field(default_factory=read_credential, repr=False)
    # TLS through `almquist up --tls-cert ...`'s front: the CA that signed its certificate (ALMQUIST_TLS_CA), and
    # for mutual TLS this client's certificate and key (ALMQUIST_TLS_CLIENT_CERT, ALMQUIST_TLS_CLIENT_KEY)
    tls_ca: str | None = field(default_factory=lambda: os.environ.get("ALMQUIST_TLS_CA"))
    tls_client_cert: str | None = field(default_factory=lambda: os.environ.get("ALMQUIST_TLS_CLIENT_CERT"))
    tls_client_key: str | None = field(default_factory=lambda: os.environ.get("ALMQUIST_TLS_CLIENT_KEY"))
    _channel: grpc.Channel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(RETRY_POLICY))]
        if self.tls_ca:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(self.tls_ca).read_bytes(),
                private_key=Path(self.tls_client_key).read_bytes() if self.tls_client_key else None,
                certificate_chain=Path(self.tls_client_cert).read_bytes() if self.tls_client_cert else None,
            )
            self._channel = grpc.secure_channel(self.target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(self.target, options=options)
        self.stub = conversation_pb2_grpc.ConversationStub(self._channel)
        self.knowledge = knowledge_pb2_grpc.KnowledgeStub(self._channel)
        self.media = media_pb2_grpc.MediaStub(self._channel)
        self.account = account_pb2_grpc.AccountStub(self._channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("application", self.application),) + (
            (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()
        )

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def ask(
        self, text: str, session_id: str = "", personality: str = "", max_tokens: int = 0, idempotency_key: str = ""
    ):
        request = conversation_pb2.AskRequest(
            text=text,
            session_id=session_id,
            personality=personality,
            max_tokens=max_tokens,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )
        return self.stub.Ask(request, metadata=self.metadata, timeout=self.timeout_s)

    def whoami(self) -> account_pb2.WhoAmIResponse:
        return self.account.WhoAmI(account_pb2.WhoAmIRequest(), metadata=self.metadata, timeout=self.timeout_s)

    def export_my_data(self) -> dict[str, Any]:
        response = self.account.ExportMyData(
            account_pb2.ExportMyDataRequest(), metadata=self.metadata, timeout=self.timeout_s
        )
        return json.loads(response.json)

    def delete_my_data(self) -> account_pb2.DeleteMyDataResponse:
        return self.account.DeleteMyData(
            account_pb2.DeleteMyDataRequest(), metadata=self.metadata, timeout=self.timeout_s
        )

    def ask_stream(
        self, text: str, session_id: str = "", personality: str = "", max_tokens: int = 0
    ) -> Iterator[conversation_pb2.ServerEvent]:
        request = conversation_pb2.AskRequest(
            text=text,
            session_id=session_id,
            personality=personality,
            max_tokens=max_tokens,
            idempotency_key=uuid.uuid4().hex,
        )
        yield from self.stub.AskStream(request, metadata=self.metadata, timeout=self.timeout_s)

    def influential(self, label: str = "", limit: int = 0, snapshot_id: str = "") -> knowledge_pb2.InfluentialResponse:
        request = knowledge_pb2.InfluentialRequest(label=label, limit=limit, snapshot_id=snapshot_id)
        return self.knowledge.Influential(request, metadata=self.metadata, timeout=self.timeout_s)

    def community(
        self, entity_id: str = "", limit: int = 0, label: str = "", communities: int = 0, snapshot_id: str = ""
    ) -> knowledge_pb2.CommunityResponse:
        request = knowledge_pb2.CommunityRequest(
            entity_id=entity_id, limit=limit, label=label, communities=communities, snapshot_id=snapshot_id
        )
        return self.knowledge.Community(request, metadata=self.metadata, timeout=self.timeout_s)

    def shortest_path(
        self, src_id: str, dst_id: str, max_hops: int = 0, snapshot_id: str = ""
    ) -> knowledge_pb2.ShortestPathResponse:
        request = knowledge_pb2.ShortestPathRequest(
            src_id=src_id, dst_id=dst_id, max_hops=max_hops, snapshot_id=snapshot_id
        )
        return self.knowledge.ShortestPath(request, metadata=self.metadata, timeout=self.timeout_s)

    def detect(
        self, image: common_pb2.ImageFrame, queries: list[str], score_threshold: float = 0.0
    ) -> media_pb2.DetectResponse:
        request = media_pb2.DetectRequest(image=image, queries=queries, score_threshold=score_threshold)
        return self.media.Detect(request, metadata=self.metadata, timeout=self.timeout_s)

    def estimate_depth(
        self, image: common_pb2.ImageFrame, boxes: list[media_pb2.Box] | None = None
    ) -> media_pb2.DepthResponse:
        request = media_pb2.DepthRequest(image=image, boxes=boxes or [])
        return self.media.EstimateDepth(request, metadata=self.metadata, timeout=self.timeout_s)

    def generate_image(self, request: media_pb2.GenerateImageRequest) -> Iterator[media_pb2.MediaProgress]:
        yield from self.media.GenerateImage(request, metadata=self.metadata, timeout=self.timeout_s)

    def transcribe(
        self,
        chunks: Iterator[common_pb2.AudioChunk],
        language: str = "",
        word_timestamps: bool = True,
        diarize: bool = False,
    ) -> Iterator[media_pb2.Transcript]:
        """Partial transcripts while `chunks` are sent, then the final one."""

        def requests() -> Iterator[media_pb2.TranscribeRequest]:
            first = True
            for chunk in chunks:
                if first:
                    yield media_pb2.TranscribeRequest(
                        audio=chunk, language=language, word_timestamps=word_timestamps, diarize=diarize
                    )
                    first = False
                else:
                    yield media_pb2.TranscribeRequest(audio=chunk)

        yield from self.media.Transcribe(requests(), metadata=self.metadata, timeout=self.timeout_s)

    def synthesize(
        self, text: str, voice: str = "", rate: float = 0.0, emotion: str = ""
    ) -> Iterator[media_pb2.SynthesizeChunk]:
        request = media_pb2.SynthesizeRequest(text=text, voice=voice, rate=rate, emotion=emotion)
        yield from self.media.Synthesize(request, metadata=self.metadata, timeout=self.timeout_s)

    def separate(self, request: media_pb2.SeparateRequest) -> Iterator[media_pb2.MediaResult]:
        yield from self.media.Separate(request, metadata=self.metadata, timeout=self.timeout_s)

    def generate_music(self, request: media_pb2.GenerateMusicRequest) -> Iterator[media_pb2.MediaProgress]:
        yield from self.media.GenerateMusic(request, metadata=self.metadata, timeout=self.timeout_s)

    def analyze_music(self, audio: common_pb2.AudioChunk, notes: bool = True) -> media_pb2.AnalyzeMusicResponse:
        request = media_pb2.AnalyzeMusicRequest(audio=audio, notes=notes)
        return self.media.AnalyzeMusic(request, metadata=self.metadata, timeout=self.timeout_s)

    def converse(self, start: conversation_pb2.SessionStart | None = None) -> Conversation:
        return Conversation(self, start or conversation_pb2.SessionStart())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Conversation:
    """One live Converse stream. `send_*` queue client events; iterate `events()` for server events."""

    _DONE = object()

    def __init__(self, client: Client, start: conversation_pb2.SessionStart) -> None:
        self._outgoing: queue.Queue[object] = queue.Queue()
        self._outgoing.put(conversation_pb2.ClientEvent(start=start))
        self._call = client.stub.Converse(self._requests(), metadata=client.metadata, timeout=client.timeout_s)
        self._lock = threading.Lock()

    def _requests(self) -> Iterator[conversation_pb2.ClientEvent]:
        while (event := self._outgoing.get()) is not self._DONE:
            yield event  # type: ignore[misc]

    def send(self, event: conversation_pb2.ClientEvent) -> None:
        self._outgoing.put(event)

    def send_text(self, text: str, idempotency_key: str = "") -> str:
        """Sends a typed turn; returns its idempotency key (send the turn again under it after a broken stream)."""
        key = idempotency_key or uuid.uuid4().hex
        self.send(conversation_pb2.ClientEvent(text=conversation_pb2.TextInput(text=text, idempotency_key=key)))
        return key

    def send_image(self, image: common_pb2.ImageFrame) -> None:
        """A picture with text (a question about it), or without text (a camera frame, read for gestures)."""
        self.send(conversation_pb2.ClientEvent(image=image))

    def send_audio(self, chunk: common_pb2.AudioChunk) -> None:
        """Microphone audio; the turn ends when the server's VAD hears silence, or with `end_turn()`."""
        self.send(conversation_pb2.ClientEvent(audio=chunk))

    def end_turn(self) -> None:
        self.send(conversation_pb2.ClientEvent(end_of_turn=conversation_pb2.EndOfTurn()))

    def interrupt(self, reason: str = "") -> None:
        self.send(conversation_pb2.ClientEvent(interrupt=conversation_pb2.Interrupt(reason=reason)))

    def close_send(self) -> None:
        """Tells the server nothing more is coming; it finishes queued turns and ends the stream."""
        self._outgoing.put(self._DONE)

    def events(self) -> Iterator[conversation_pb2.ServerEvent]:
        return iter(self._call)

    def next_event(self) -> conversation_pb2.ServerEvent:
        return next(self._call)

    def cancel(self) -> None:
        self._call.cancel()


def image_frame(path: str, text: str = "") -> common_pb2.ImageFrame:
    """An ImageFrame of a file, its MIME type from the extension (the server checks the bytes themselves)."""
    import mimetypes
    from pathlib import Path

    mime = mimetypes.guess_type(path)[0] or ""
    return common_pb2.ImageFrame(data=Path(path).read_bytes(), mime_type=mime, text=text)


def audio_chunks(samples: Any, sample_rate_hz: int, chunk_s: float = 0.1) -> Iterator[common_pb2.AudioChunk]:
    """Float samples (`(samples,)` or `(channels, samples)`) as PCM16 AudioChunks of `chunk_s` seconds each."""
    import numpy as np

    from almquist.audio import float_to_pcm16

    array = np.asarray(samples, dtype=np.float32)
    channels = 1 if array.ndim == 1 else array.shape[0]
    step = max(1, int(chunk_s * sample_rate_hz))
    for sequence, start in enumerate(range(0, array.shape[-1], step)):
        yield common_pb2.AudioChunk(
            pcm16=float_to_pcm16(array[..., start : start + step]),
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            start_s=start / sample_rate_hz,
            sequence=sequence,
        )


# ----- riding out failures: retries under the same idempotency key, and streams that resume themselves -----

# Codes after which the same turn may be sent again under its idempotency key: a part restarting (UNAVAILABLE),
# overload or a quota (RESOURCE_EXHAUSTED), a stream whose lease was lost (ABORTED).
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})


@dataclass
class Backoff:
    """Exponential back-off (each pause drawn from the upper half of the current step), bounded by a deadline."""

    deadline: float
    initial_s: float = 0.25
    max_s: float = 2.0
    _next_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def left(self) -> float:
        import time

        return self.deadline - time.monotonic()

    def wait(self, at_least_s: float = 0.0) -> bool:
        """Sleeps before the next try; False (without sleeping) when the deadline leaves no time for one."""
        import random
        import time

        pause = max(at_least_s, random.uniform(self._next_s / 2, self._next_s))
        if time.monotonic() + pause >= self.deadline:
            return False
        time.sleep(pause)
        self._next_s = min(self.max_s, self._next_s * 2)
        return True


def _retry_after_s(error: grpc.RpcError) -> float:
    """The server's `retry-after` (seconds) on a refused call, else 0."""
    try:
        trailing = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
        return float(trailing.get("retry-after", 0))
    except (TypeError, ValueError, AttributeError):
        return 0.0


def _previous_attempts(call: Any) -> int:
    """How many times gRPC's own retry policy had already sent this call (its `grpc-previous-rpc-attempts`)."""
    try:
        return int(dict(call.initial_metadata() or ()).get("grpc-previous-rpc-attempts", 0))
    except (TypeError, ValueError, AttributeError):
        return 0


@dataclass
class Answered:
    """What a turn that was retried until answered ended with: the answer and what getting it took."""

    turn_id: str
    text: str  # the answer
    route: str
    turn_end: common_pb2.TurnEnd
    idempotency_key: str
    retries: int = 0  # sends after the first (ours and gRPC's own), the same key each time
    reopens: int = 0  # streams opened again after one broke (Converse only)
    resume_s: list[float] = field(default_factory=list)  # seconds from a broken stream to its session resumed
    codes: list[str] = field(default_factory=list)  # the status (or TurnEnd) of each failed try, in order
    events: list[conversation_pb2.ServerEvent] = field(default_factory=list, repr=False)  # the answered try's
    first_s: dict[str, float] = field(default_factory=dict)  # event kind -> seconds from the answered send to its first


def ask_until_answered(
    client: Client,
    text: str,
    session_id: str = "",
    *,
    personality: str = "",
    max_tokens: int = 0,
    idempotency_key: str = "",
    deadline_s: float = 60.0,
) -> Answered:
    """`Ask`, sent again under the same idempotency key after each retryable failure until `deadline_s`: gRPC's own
    retry policy covers about two seconds, this covers a replica's restart. Raises the last RpcError when the
    failure is not retryable or the deadline passes."""
    import time

    key = idempotency_key or uuid.uuid4().hex
    request = conversation_pb2.AskRequest(
        text=text, session_id=session_id, personality=personality, max_tokens=max_tokens, idempotency_key=key
    )
    backoff = Backoff(time.monotonic() + deadline_s)
    retries = 0
    codes: list[str] = []
    while True:
        timeout = max(1.0, min(client.timeout_s or deadline_s, backoff.left()))
        try:
            response, call = client.stub.Ask.with_call(request, metadata=client.metadata, timeout=timeout)
        except grpc.RpcError as error:
            retries += _previous_attempts(error)
            codes.append(error.code().name)  # type: ignore[attr-defined]
            if error.code() not in RETRYABLE_CODES or not backoff.wait(_retry_after_s(error)):  # type: ignore[attr-defined]
                raise
            retries += 1
            continue
        retries += _previous_attempts(call)
        return Answered(
            response.turn_id, response.answer, response.route, response.turn_end, key, retries, 0, [], codes
        )


class ResilientConversation:
    """A Converse session that survives its stream breaking: typed turns are sent one at a time with an idempotency
    key; when the stream breaks (the ingress died, the lease was lost) the session is resumed on a new stream by its
    id (waiting out the dead stream's lease) and the unanswered turn is sent again under the same key, so it is
    answered once and stored once. A TurnEnd that says `retryable` is sent again the same way on the same stream.

        with ResilientConversation(client, conversation_pb2.SessionStart(max_tokens=16)) as session:
            answered = session.turn("Tell me a joke.")
    """

    _CLOSED = object()  # the stream ended with OK
    _SILENT = object()  # nothing came in time

    def __init__(
        self,
        client: Client,
        start: conversation_pb2.SessionStart | None = None,
        deadline_s: float = 60.0,
        turn_timeout_s: float = 120.0,
    ) -> None:
        import time

        self._client = client
        self._start = conversation_pb2.SessionStart()
        self._start.CopyFrom(start or conversation_pb2.SessionStart())
        self.deadline_s = deadline_s
        self.turn_timeout_s = turn_timeout_s
        self.session_id = self._start.session_id
        self.opened = 0  # streams opened, the first included
        self.silent_ends = 0  # streams that ended with OK while a turn was unanswered (a server bug if ever > 0)
        self._conversation: Conversation | None = None
        self._events: queue.Queue[Any] = queue.Queue()
        self.started: conversation_pb2.SessionStarted | None = None
        # resuming a session by id waits out the lease of a stream that died holding it
        self._open(Backoff(time.monotonic() + deadline_s), resume=bool(self.session_id))

    # ----- the stream -----

    def _open(self, backoff: Backoff, resume: bool, codes: list[str] | None = None) -> None:
        """Opens a stream on the session (a new one, or ours by id) and reads its SessionStarted; a refusal that may
        pass (the old stream's lease not lapsed yet: FAILED_PRECONDITION; a restarting part) is tried again."""
        while True:
            start = conversation_pb2.SessionStart()
            start.CopyFrom(self._start)
            start.session_id = self.session_id
            events: queue.Queue[Any] = queue.Queue()
            conversation = Conversation(self._client, start)
            threading.Thread(target=self._pump, args=(conversation, events), daemon=True).start()
            self.opened += 1
            first = self._get(events, max(1.0, min(self.turn_timeout_s, backoff.left())))
            if isinstance(first, conversation_pb2.ServerEvent) and first.WhichOneof("event") == "session_started":
                self._conversation, self._events = conversation, events
                self.started = first.session_started
                self.session_id = first.session_started.session_id
                return
            conversation.cancel()
            code = first.code() if isinstance(first, grpc.RpcError) else None  # type: ignore[attr-defined]
            if codes is not None:
                codes.append(code.name if code is not None else "NO_SESSION_STARTED")
            retryable = code in RETRYABLE_CODES or (resume and code == grpc.StatusCode.FAILED_PRECONDITION)
            retryable = retryable or first is self._SILENT or first is self._CLOSED
            if not retryable or not backoff.wait(_retry_after_s(first) if code is not None else 0.0):
                if isinstance(first, grpc.RpcError):
                    raise first
                raise TimeoutError(f"the session did not start within {self.deadline_s:g} s")

    @classmethod
    def _pump(cls, conversation: Conversation, events: queue.Queue[Any]) -> None:
        try:
            for event in conversation.events():
                events.put(event)
            events.put(cls._CLOSED)
        except grpc.RpcError as error:
            events.put(error)

    @staticmethod
    def _get(events: queue.Queue[Any], timeout_s: float) -> Any:
        """The next event, an RpcError, _CLOSED, or _SILENT when nothing came within `timeout_s`."""
        try:
            return events.get(timeout=timeout_s)
        except queue.Empty:
            return ResilientConversation._SILENT

    # ----- turns -----

    def turn(self, text: str, idempotency_key: str = "") -> Answered:
        """Sends a typed turn and reads it to its TurnEnd, resending it under the same key until it is answered or
        `deadline_s` passes (then it raises the last RpcError, or TimeoutError)."""
        import time

        key = idempotency_key or uuid.uuid4().hex
        backoff = Backoff(time.monotonic() + self.deadline_s)
        retries, reopens = 0, 0
        resume_s: list[float] = []
        codes: list[str] = []
        while True:
            if self._conversation is None:  # a spoken turn's stream broke: resume the session first
                self._open(backoff, resume=True, codes=codes)
            assert self._conversation is not None
            self._conversation.send_text(text, key)
            sent = time.monotonic()
            first_s: dict[str, float] = {}
            events: list[conversation_pb2.ServerEvent] = []
            turn_deadline = time.monotonic() + min(self.turn_timeout_s, max(1.0, backoff.left()))
            broken: Any = None  # stays None only when the turn's TurnEnd came
            while True:
                item = self._get(self._events, max(0.0, turn_deadline - time.monotonic()))
                if not isinstance(item, conversation_pb2.ServerEvent):
                    broken = item
                    break
                kind = item.WhichOneof("event")
                if kind == "error":  # the turn itself was refused in-band (quota, queue full, bad input)
                    broken = item.error
                    break
                events.append(item)
                first_s.setdefault(kind or "", time.monotonic() - sent)
                if kind == "avatar":  # avatar.audio, avatar.face, ...: what a player waits for
                    first_s.setdefault(f"avatar.{item.avatar.WhichOneof('event')}", time.monotonic() - sent)
                if kind == "turn_end":
                    break
            if broken is None:
                end = events[-1].turn_end
                if not end.retryable:
                    started = next((e.turn_started for e in events if e.WhichOneof("event") == "turn_started"), None)
                    return Answered(
                        end.turn_id,
                        "".join(e.token.text for e in events if e.WhichOneof("event") == "token"),
                        started.route if started is not None else "",
                        end,
                        key,
                        retries,
                        reopens,
                        resume_s,
                        codes,
                        events,
                        first_s,
                    )
                codes.append("TURN_END_RETRYABLE")
                if not backoff.wait():
                    raise TimeoutError(f"the turn was not answered within {self.deadline_s:g} s: {end.detail}")
                retries += 1
                continue
            if isinstance(broken, conversation_pb2.ErrorEvent):
                code = next((c for c in grpc.StatusCode if c.value[0] == broken.code), grpc.StatusCode.UNKNOWN)
                codes.append(f"EVENT_{code.name}")
                if code not in RETRYABLE_CODES:
                    raise ValueError(f"the turn was refused: {code.name}: {broken.message}")
                if not backoff.wait():
                    raise TimeoutError(f"the turn was refused until the deadline: {broken.message}")
                retries += 1
                continue
            # the stream broke (an error status, an end without our TurnEnd, or silence past the turn's timeout)
            if isinstance(broken, grpc.RpcError):
                code = broken.code()  # type: ignore[attr-defined]
                codes.append(code.name)
                if code not in RETRYABLE_CODES and code != grpc.StatusCode.CANCELLED:
                    self._conversation.cancel()
                    self._conversation = None  # ended: close() has nothing to wait for; the next turn resumes
                    raise broken
            elif broken is self._CLOSED:
                self.silent_ends += 1
                codes.append("CLOSED_WITHOUT_TURN_END")
            else:
                codes.append("NO_TURN_END_IN_TIME")
            self._conversation.cancel()
            broke_at = time.monotonic()
            if not backoff.wait():
                raise TimeoutError(f"the turn was not answered within {self.deadline_s:g} s ({codes})")
            self._open(backoff, resume=True, codes=codes)
            resume_s.append(time.monotonic() - broke_at)
            reopens += 1
            retries += 1

    def speak(self, chunks: Iterator[common_pb2.AudioChunk], timeout_s: float | None = None) -> Answered:
        """A spoken turn: the chunks, then EndOfTurn, read to the turn's TurnEnd. Audio carries no idempotency key,
        so a spoken turn is never sent twice: a broken stream raises (the RpcError, or TimeoutError), an in-band
        refusal raises ValueError, and the caller decides (the session itself resumes on the next call).
        `first_s` is timed from EndOfTurn."""
        import time

        if self._conversation is None:
            self._open(Backoff(time.monotonic() + self.deadline_s), resume=True)
        assert self._conversation is not None
        for chunk in chunks:
            self._conversation.send_audio(chunk)
        self._conversation.end_turn()
        sent = time.monotonic()
        deadline = sent + (timeout_s or self.turn_timeout_s)
        events: list[conversation_pb2.ServerEvent] = []
        first_s: dict[str, float] = {}
        while True:
            item = self._get(self._events, max(0.0, deadline - time.monotonic()))
            if isinstance(item, conversation_pb2.ServerEvent):
                kind = item.WhichOneof("event")
                if kind == "error":
                    code = next((c for c in grpc.StatusCode if c.value[0] == item.error.code), grpc.StatusCode.UNKNOWN)
                    raise ValueError(f"the spoken turn was refused: {code.name}: {item.error.message}")
                events.append(item)
                first_s.setdefault(kind or "", time.monotonic() - sent)
                if kind == "turn_end":
                    end = item.turn_end
                    started = next((e.turn_started for e in events if e.WhichOneof("event") == "turn_started"), None)
                    answer = "".join(e.token.text for e in events if e.WhichOneof("event") == "token")
                    route = started.route if started is not None else ""
                    return Answered(end.turn_id, answer, route, end, "", events=events, first_s=first_s)
                continue
            self._conversation.cancel()
            self._conversation = None  # the next call opens the session again
            if isinstance(item, grpc.RpcError):
                raise item
            raise TimeoutError(
                "the spoken turn got no TurnEnd" + (" (the stream ended)" if item is self._CLOSED else "")
            )

    # ----- the end -----

    def close(self) -> None:
        """Tells the server nothing more is coming and lets the stream end (its lease is released)."""
        if self._conversation is None:
            return
        self._conversation.close_send()
        while True:
            item = self._get(self._events, 30.0)
            if not isinstance(item, conversation_pb2.ServerEvent):
                break
        self._conversation.cancel()
        self._conversation = None

    def __enter__(self) -> ResilientConversation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
