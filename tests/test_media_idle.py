"""Idle limits on media streams (reliability issue 18, item 2): a Transcribe stream that sends nothing for
`speech.stt.idle_timeout_s` ends with DEADLINE_EXCEEDED and a plain message, and a stream the client cancelled makes
no final transcript. The service object directly (graphs/media.py), with Serve's own input stream type: no audio
reaches the STT handle in these cases, so it is a stand-in that fails the test if it is called."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import numpy as np
import pytest
from ray.serve.grpc_util import gRPCInputStream

from almquist.config import AudioConfig, SpeechConfig
from almquist.errors import DeadlineExceeded
from almquist.v1 import common_pb2, media_pb2
from graphs.handles import Handles
from graphs.media import MediaService

RATE = 16000


class Context:
    """What the ingress's RPCs set on Serve's gRPC context."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class NoSTT:
    """The STT handle's stand-in: none of these streams may reach the model."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the STT handle was used ({name}) for a stream that sent no audio or went away")


def service(idle_timeout_s: float) -> MediaService:
    speech = SpeechConfig.model_validate({"stt": {"idle_timeout_s": idle_timeout_s}})
    return MediaService(Handles(stt=NoSTT()), speech, AudioConfig())  # type: ignore[arg-type]


def settings(audio_s: float = 0.0) -> media_pb2.TranscribeRequest:
    pcm16 = np.zeros(int(audio_s * RATE), np.int16).tobytes()
    return media_pb2.TranscribeRequest(audio=common_pb2.AudioChunk(pcm16=pcm16, sample_rate_hz=RATE, channels=1))


async def then_silence(*messages: media_pb2.TranscribeRequest):
    """A client that sends `messages`, then nothing, and never closes its side."""
    for message in messages:
        yield message
    await asyncio.Event().wait()


async def transcribe(media: MediaService, stream: Any, context: Context) -> tuple[list, BaseException | None]:
    out: list = []
    try:
        async for transcript in media.Transcribe(stream, context):
            out.append(transcript)
    except Exception as error:
        return out, error
    return out, None


@pytest.mark.parametrize("sent", [(), (settings(),)], ids=["nothing", "settings-only"])
def test_a_silent_transcribe_stream_is_closed_after_the_idle_time(sent):
    context = Context()
    started = time.monotonic()
    out, error = asyncio.run(transcribe(service(0.3), gRPCInputStream(then_silence(*sent)), context))
    waited = time.monotonic() - started
    assert out == [] and isinstance(error, DeadlineExceeded)
    assert context.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert context.details == "no audio for 0.3 s; the stream was closed"
    assert 0.25 < waited < 5, waited


def test_the_idle_time_counts_from_the_last_message():
    async def slow_client():
        yield settings(audio_s=0.01)
        for _ in range(4):  # 0.8 s in all, never 0.3 s without a message
            await asyncio.sleep(0.2)
            yield settings(audio_s=0.01)  # 10 ms of audio: the client is alive
        await asyncio.Event().wait()

    context = Context()
    started = time.monotonic()
    _, error = asyncio.run(transcribe(service(0.3), gRPCInputStream(slow_client()), context))
    assert isinstance(error, DeadlineExceeded) and time.monotonic() - started > 0.9


def test_the_default_idle_time_is_15_s():
    assert SpeechConfig.model_validate({"stt": {}}).stt.idle_timeout_s == 15.0  # type: ignore[union-attr]


def test_a_stream_the_client_cancelled_makes_no_final_transcript():
    cancelled = asyncio.Event()

    async def client():
        yield settings(audio_s=0.1)  # audio to transcribe, were the stream to end normally
        cancelled.set()  # the client goes away: Serve sets the input stream's cancel event
        yield settings(audio_s=0.01)
        await asyncio.Event().wait()

    context = Context()
    stream = gRPCInputStream(client(), cancel_event=cancelled)
    out, error = asyncio.run(transcribe(service(5.0), stream, context))
    assert (out, error, context.code) == ([], None, None), "no final transcript (NoSTT fails the test if asked)"
