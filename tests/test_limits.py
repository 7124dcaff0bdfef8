"""The message size table (almquist.limits) and the proxy's guard (almquist.proxy_guard), without Serve.

The table must name every RPC of every service the proxy serves and agree with what the application accepts. The
guard is installed on Ray Serve's own gRPC server class (`gRPCGenericServer`, what the proxy runs) with a stand-in
for the proxy's handlers, and called with a plain grpcio client: oversized and corrupt messages, an INTERNAL status
carrying a traceback, and client streams. Through the real proxy: tests/test_serve_errors.py.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import grpc
import pytest
from grpc_health.v1 import health_pb2

from almquist import limits
from almquist.config import AudioLimits, ConversationConfig, EmbeddingsConfig, ImageLimits
from almquist.proxy_guard import BUSY, guard_server
from almquist.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc, media_pb2, media_pb2_grpc

PROTOS = Path(__file__).resolve().parents[1] / "protos" / "almquist" / "v1"


def services() -> list[Any]:
    """Every service of every proto in protos/almquist/v1 (their generated modules), and the standard Health."""
    found = [health_pb2.DESCRIPTOR.services_by_name["Health"]]
    for proto in sorted(PROTOS.glob("*.proto")):
        module = importlib.import_module(f"almquist.v1.{proto.stem}_pb2")
        found.extend(module.DESCRIPTOR.services_by_name.values())
    return found


TRACEBACK = (
    "ray.exceptions.RayTaskError(ValueError): ray::ServeReplica:conversation:Router.handle_request() "
    "(pid=4242, ip=10.1.2.3, actor_id=3f2e1d0c9b8a7f6e5d4c3b2a01000000)\n"
    '  File "/home/ray/almquist/graphs/router.py", line 120, in route\nValueError: boom'
)


def test_every_rpc_has_a_limit_and_every_limit_an_rpc() -> None:
    methods = {f"/{service.full_name}/{method.name}" for service in services() for method in service.methods}
    assert methods - set(limits.RPC_LIMITS) == set(), "RPCs without a row in almquist.limits.RPC_LIMITS"
    assert set(limits.RPC_LIMITS) - methods == set(), "rows for RPCs that no longer exist"
    assert {"/almquist.v1.Conversation/Converse", "/almquist.v1.Media/Separate"} <= methods  # the protos were found
    for method, limit in limits.RPC_LIMITS.items():
        assert limit.why, method
        assert 0 < limit.max_bytes <= limits.GLOBAL_MAX_BYTES, method
    assert max(limit.max_bytes for limit in limits.RPC_LIMITS.values()) == limits.GLOBAL_MAX_BYTES
    assert {"RAY_SERVE_GRPC_MAX_MESSAGE_SIZE": str(limits.GLOBAL_MAX_BYTES)} == limits.PROXY_ENV
    assert limits.GLOBAL_MAX_BYTES < 2**31 - 1  # below Ray's default (2 GiB): the cap means something


def test_limits_admit_what_the_application_accepts() -> None:
    """A request the application's own checks accept is never refused at the door."""

    def limit(rpc: str) -> int:
        return limits.RPC_LIMITS[rpc].max_bytes

    assert ImageLimits().max_bytes == limits.IMAGE_BYTES
    # the longest typed turn, all 4-byte characters, with a session id and a personality
    longest = "\U0001f600" * ConversationConfig().max_text_chars
    ask = conversation_pb2.AskRequest(text=longest, session_id="s" * 64, personality="friendly")
    assert ask.ByteSize() <= limit("/almquist.v1.Conversation/Ask")
    # the largest image in a Converse event and in each vision RPC
    image = common_pb2.ImageFrame(data=b"\xff" * limits.IMAGE_BYTES, mime_type="image/png", text="what is this?")
    assert conversation_pb2.ClientEvent(image=image).ByteSize() <= limit("/almquist.v1.Conversation/Converse")
    detect = media_pb2.DetectRequest(image=image, queries=["q" * 200] * 16)
    assert detect.ByteSize() <= limit("/almquist.v1.Media/Detect")
    both = media_pb2.GenerateImageRequest(prompt="p" * 2000, negative_prompt="n" * 2000)
    both.init_image.CopyFrom(image)
    both.control_image.CopyFrom(image)
    assert both.ByteSize() <= limit("/almquist.v1.Media/GenerateImage")
    # 600 s of speech as the speech models take it, and of 48 kHz stereo music
    seconds = AudioLimits().max_seconds
    speech = common_pb2.AudioChunk(pcm16=bytes(int(seconds * 16000) * 2), sample_rate_hz=16000, channels=1)
    assert media_pb2.DiarizeRequest(audio=speech).ByteSize() <= limit("/almquist.v1.Media/Diarize")
    music = bytes(int(seconds * 48000) * 2 * 2)
    assert len(music) + 64 <= limit("/almquist.v1.Media/AnalyzeMusic")
    assert len(music) + 64 <= limit("/almquist.v1.Media/Separate")
    stream_total = limits.RPC_LIMITS["/almquist.v1.Media/Transcribe"].max_stream_bytes
    assert stream_total is not None and len(music) < stream_total
    # one second of the largest format the audio limits allow, as the CLI streams it to Transcribe
    one_second = AudioLimits().max_sample_rate_hz * AudioLimits().max_channels * 2
    assert one_second + 64 <= limit("/almquist.v1.Media/Transcribe")
    # the largest Embed batch of ASCII text
    embeddings = EmbeddingsConfig(model="m")
    embed = media_pb2.EmbedRequest(texts=["x" * embeddings.max_chars] * embeddings.max_texts)
    assert embed.ByteSize() <= limit("/almquist.v1.Media/Embed")


# ----- the guard on Ray Serve's own gRPC server class -----


class StandInProxy:
    """What Serve's proxy does with a request (grpc_util.gRPCGenericServer calls this factory per method): answer
    serialized bytes, or a status set on the context as `set_grpc_code_and_details` does."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    def factory(self, service_method: str, streaming_type: Any) -> Any:
        from ray.serve._private.proxy_request_response import gRPCStreamingType

        received = self.received

        async def unary_unary(request: Any, context: Any) -> bytes:
            received.append(request)
            if request.text == "fail":
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(TRACEBACK)
                return b""
            if request.text == "dead":
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details("ray.exceptions.ActorDiedError: The actor died (pid=7, ip=10.0.0.9)")
                return b""
            if request.text == "replica died":  # what Serve's proxy says of an ingress replica killed under a call
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(
                    "The actor died unexpectedly before finishing this task. class_name: ServeReplica:conversation"
                )
                return b""
            if request.text == "busy":
                context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
                context.set_details(
                    "Request dropped due to backpressure (num_queued_requests=2, max_queued_requests=2)."
                )
                return b""
            if request.text == "raise":
                raise RuntimeError(TRACEBACK)
            if request.text == "ours":
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details("the call failed on the server (reference 0123456789ab); the log has the details")
                return b""
            return conversation_pb2.AskResponse(answer=request.text).SerializeToString()

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[bytes]:
            received.append(request)
            yield conversation_pb2.ServerEvent(sequence=0).SerializeToString()
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details(TRACEBACK)

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[bytes]:
            async for request in requests:
                received.append(request)
                yield media_pb2.Transcript(text=str(len(received))).SerializeToString()

        return {
            gRPCStreamingType.UNARY_UNARY: unary_unary,
            gRPCStreamingType.UNARY_STREAM: unary_stream,
            gRPCStreamingType.STREAM_UNARY: None,
            gRPCStreamingType.STREAM_STREAM: stream_stream,
        }[streaming_type]


@pytest.fixture
def guarded_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, StandInProxy]]:
    """Ray Serve's gRPCGenericServer with the guard and two services, on its own event loop thread."""
    import threading

    from ray.serve._private.grpc_util import gRPCGenericServer

    # a small Transcribe stream total so the test sends kilobytes, not 128 MiB
    small = limits.MessageLimit(4 * limits.KiB, "test", max_stream_bytes=10 * limits.KiB)
    monkeypatch.setitem(limits.RPC_LIMITS, "/almquist.v1.Media/Transcribe", small)
    proxy = StandInProxy()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def serve() -> None:
        server = gRPCGenericServer(proxy.factory)
        guard_server(Mock(), server)
        conversation_pb2_grpc.add_ConversationServicer_to_server(Mock(), server)
        media_pb2_grpc.add_MediaServicer_to_server(Mock(), server)
        port.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        started.set()
        await stop.wait()
        await server.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"127.0.0.1:{port[0]}", proxy
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def _raw_call(target: str, method: str, payload: bytes) -> grpc.RpcError:
    """A generic grpcio unary call with identity serializers: the bytes go on the wire as they are."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=10)
    return caught.value  # type: ignore[return-value]


def test_corrupt_request_bytes_are_invalid_argument(guarded_server: tuple[str, StandInProxy]) -> None:
    target, proxy = guarded_server
    error = _raw_call(target, "/almquist.v1.Conversation/Ask", b"\xff\xff\xff\xff\x0f garbage")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid almquist.v1.AskRequest" in (error.details() or "")
    assert proxy.received == []  # never passed on


def test_an_oversized_message_is_refused_before_it_is_parsed(guarded_server: tuple[str, StandInProxy]) -> None:
    target, proxy = guarded_server
    big = conversation_pb2.AskRequest(text="x" * (70 * 1024)).SerializeToString()
    error = _raw_call(target, "/almquist.v1.Conversation/Ask", big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Ask accepts at most 64 KiB" in (error.details() or "")
    assert proxy.received == []
    # just under the limit passes
    with grpc.insecure_channel(target) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        answer = stub.Ask(conversation_pb2.AskRequest(text="y" * (60 * 1024)), timeout=10)
    assert len(answer.answer) == 60 * 1024


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("fail", grpc.StatusCode.INTERNAL, "Ask failed on the server (reference "),
        ("raise", grpc.StatusCode.INTERNAL, "Ask failed on the server (reference "),
        ("dead", grpc.StatusCode.UNAVAILABLE, "retry Ask in a moment (reference "),
        ("replica died", grpc.StatusCode.UNAVAILABLE, "retry Ask in a moment (reference "),
        ("busy", grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY),
        ("ours", grpc.StatusCode.INTERNAL, "(reference 0123456789ab)"),
    ],
)
def test_errors_tell_nothing_away(
    guarded_server: tuple[str, StandInProxy], text: str, code: grpc.StatusCode, says: str
) -> None:
    target, _ = guarded_server
    with grpc.insecure_channel(target) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Ask(conversation_pb2.AskRequest(text=text), timeout=10)
    error: Any = caught.value
    assert error.code() == code
    details = error.details() or ""
    assert says in details
    for leak in ("Traceback", "pid=", "ip=", "actor_id", "/home/", ".py", "ray::", "num_queued"):
        assert leak not in details


def test_a_server_stream_ending_internal_is_scrubbed(guarded_server: tuple[str, StandInProxy]) -> None:
    target, _ = guarded_server
    with grpc.insecure_channel(target) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        events = []
        with pytest.raises(grpc.RpcError) as caught:
            for event in stub.AskStream(conversation_pb2.AskRequest(text="hi"), timeout=10):
                events.append(event)
    error: Any = caught.value
    assert len(events) == 1
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "AskStream failed on the server (reference " in error.details()
    assert "pid=" not in error.details()


def _chunks(sizes: list[int]) -> Iterator[media_pb2.TranscribeRequest]:
    for size in sizes:
        yield media_pb2.TranscribeRequest(audio=common_pb2.AudioChunk(pcm16=bytes(size), sample_rate_hz=16000))


def test_stream_messages_and_totals_are_capped(guarded_server: tuple[str, StandInProxy]) -> None:
    target, proxy = guarded_server
    with grpc.insecure_channel(target) as channel:
        stub = media_pb2_grpc.MediaStub(channel)
        # within both limits: every chunk passes
        assert len(list(stub.Transcribe(_chunks([2048] * 4), timeout=10))) == 4
        # one chunk over the per-message limit (4 KiB here)
        proxy.received.clear()
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Transcribe(_chunks([1024, 8192, 1024]), timeout=10))
        error: Any = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Transcribe accepts at most 4 KiB per message" in error.details()
        assert len(proxy.received) == 1
        # chunks within the limit whose total passes 10 KiB
        proxy.received.clear()
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Transcribe(_chunks([3000] * 6), timeout=10))
        error = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "more than 10 KiB in all" in error.details()
        assert len(proxy.received) == 3
        # a corrupt message in the stream
        raw = channel.stream_stream(
            "/almquist.v1.Media/Transcribe", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(raw(iter([media_pb2.TranscribeRequest().SerializeToString(), b"\xff\xff\xff"]), timeout=10))
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid almquist.v1.TranscribeRequest" in error.details()
