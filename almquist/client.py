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
# UNAVAILABLE (a replica restarting, an honest retryable turn) is sent again after 0.25-2 s, up to 4 tries.
RETRY_POLICY = {
    "methodConfig": [
        {
            "name": [
                {"service": "almquist.v1.Conversation", "method": "Ask"},
                {"service": "almquist.v1.Knowledge"},
                {"service": "almquist.v1.Account"},
            ],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.25s",
                "maxBackoff": "2s",
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
    _channel: grpc.Channel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        options = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(RETRY_POLICY))]
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
