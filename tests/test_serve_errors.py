"""Errors tell nothing away, corrupt bytes are INVALID_ARGUMENT, oversized messages are refused: through Serve's
gRPC proxy (the session's `local` profile, whose grpc_servicer_functions start with almquist.proxy_guard).

Besides the conversation application, a small `errors` application is deployed whose `Ask` fails in the ways a
service can: an exception escaping every handler (the proxy's scrub), one inside `graphs.rpc.aborting`, a Ray actor
that dies under a call (UNAVAILABLE), and a server stream failing mid-way. No answer may carry a traceback, a path,
an address, a pid or an actor id. The classification itself (almquist.errors.public_error) is checked without Serve.
"""

from __future__ import annotations

import os
import time
from typing import Any

import grpc
import pytest

from almquist.errors import InvalidArgument, log_id, public_error
from almquist.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc, media_pb2

APP = "errors"
LEAKS = ("Traceback", 'File "', ".py", "pid=", "ip=", "actor_id", "ray::", "/home/", "/work/", "/tmp/", "127.0.0.1")


def assert_plain(details: str) -> None:
    for leak in LEAKS:
        assert leak not in details, f"{leak!r} in {details!r}"


# ----- the classification, without Serve -----


def test_public_error_classifies_rays_errors() -> None:
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    assert public_error(InvalidArgument("say more")).message == "say more"
    cases = [
        (ActorDiedError(), grpc.StatusCode.UNAVAILABLE, "retry the search in a moment"),
        (
            DeploymentUnavailableError(DeploymentID(name="LLMServer", app_name="conversation")),
            grpc.StatusCode.UNAVAILABLE,
            "retry the search",
        ),
        (BackPressureError(num_queued_requests=3, max_queued_requests=3), grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"),
        (ValueError("/home/ray/x.py pid=12"), grpc.StatusCode.INTERNAL, "the search failed on the server (reference"),
    ]
    for error, code, says in cases:
        ours = public_error(error, "the search")
        assert ours.code == code and says in ours.message, (error, ours.message)
        assert_plain(ours.message)
    # a dead actor downstream arrives wrapped in Ray's task error (the class Ray builds deriving from both)
    wrapped = RayTaskError("route", "Traceback ... pid=1", ActorDiedError()).as_instanceof_cause()
    assert public_error(wrapped).code == grpc.StatusCode.UNAVAILABLE
    inner = RayTaskError("route", "Traceback ... pid=1", InvalidArgument("bad text")).as_instanceof_cause()
    assert public_error(inner).code == grpc.StatusCode.INVALID_ARGUMENT and public_error(inner).message == "bad text"
    # references differ per failure; log ids are stable and short
    assert public_error(ValueError()).message != public_error(ValueError()).message
    assert log_id("session-1") == log_id("session-1") != log_id("session-2") and len(log_id("x")) == 12


# ----- through the proxy -----


@pytest.fixture(scope="module")
def errors_target(serve_stack):
    """The `errors` application beside the session's conversation application."""
    import ray
    from ray import serve

    from graphs.rpc import aborting

    class Dies:
        def die(self) -> None:
            os._exit(1)

    Doomed: Any = ray.remote(max_restarts=0)(Dies)

    @serve.deployment(name="Failing", ray_actor_options={"num_cpus": 0})
    class Failing:
        async def Ask(self, request: Any, grpc_context: Any = None) -> Any:
            if request.text == "escape":  # nothing of ours catches it: Serve reports its traceback
                raise ValueError(f"boom in {__file__} (pid={os.getpid()})")
            if request.text == "wrapped":
                with aborting(grpc_context, "the test call"):
                    raise ValueError(f"boom in {__file__} (pid={os.getpid()})")
            if request.text == "dead":
                with aborting(grpc_context, "the test call"):
                    await Doomed.remote().die.remote()
            if request.text == "dead-escape":
                await Doomed.remote().die.remote()
            return conversation_pb2.AskResponse(answer="fine")

        async def AskStream(self, request: Any, grpc_context: Any = None) -> Any:
            yield conversation_pb2.ServerEvent(sequence=0)
            raise RuntimeError(f"mid-stream failure in {__file__} (pid={os.getpid()})")

    serve.run(Failing.bind(), name=APP, route_prefix=f"/{APP}", blocking=False)
    deadline = time.monotonic() + 120
    while serve.status().applications[APP].status != "RUNNING":
        assert time.monotonic() < deadline, serve.status().applications[APP]
        time.sleep(0.5)
    yield serve_stack.target
    serve.delete(APP)


def _metadata(serve_stack: Any, application: str) -> list[tuple[str, str]]:
    """The application, and the caller's credential where the stack asks for one (almquist.client.call_metadata)."""
    try:
        from almquist.client import call_metadata  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return [("application", application)]
    return list(call_metadata(application))


@pytest.mark.parametrize(
    ("text", "code", "says"),
    [
        ("escape", grpc.StatusCode.INTERNAL, "Ask failed on the server (reference "),
        ("wrapped", grpc.StatusCode.INTERNAL, "the test call failed on the server (reference "),
        ("dead", grpc.StatusCode.UNAVAILABLE, "retry the test call in a moment (reference "),
        ("dead-escape", grpc.StatusCode.UNAVAILABLE, "retry Ask in a moment (reference "),
    ],
)
def test_failures_answer_a_code_and_a_plain_message(errors_target, serve_stack, text, code, says) -> None:
    with grpc.insecure_channel(errors_target) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        assert stub.Ask(conversation_pb2.AskRequest(text="ok"), metadata=_metadata(serve_stack, APP)).answer == "fine"
        with pytest.raises(grpc.RpcError) as caught:
            stub.Ask(conversation_pb2.AskRequest(text=text), metadata=_metadata(serve_stack, APP), timeout=60)
    error: Any = caught.value
    assert error.code() == code, error.details()
    assert says in error.details()
    assert_plain(error.details())


def test_a_stream_failing_midway_tells_nothing_away(errors_target, serve_stack) -> None:
    with grpc.insecure_channel(errors_target) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        events = []
        with pytest.raises(grpc.RpcError) as caught:
            for event in stub.AskStream(conversation_pb2.AskRequest(text="hi"), metadata=_metadata(serve_stack, APP)):
                events.append(event)
    error: Any = caught.value
    assert len(events) == 1
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "AskStream failed on the server (reference " in error.details()
    assert_plain(error.details())


def test_corrupt_request_bytes_answer_invalid_argument(serve_stack) -> None:
    """Raw garbage through a generic grpcio call (identity serializers): unary, server-streaming and bidi."""
    garbage = b"\xff\xff\xff\xff\xff\x01 not a protobuf"
    metadata = _metadata(serve_stack, "conversation")
    with grpc.insecure_channel(serve_stack.target) as channel:
        for method in ("/almquist.v1.Conversation/Ask", "/almquist.v1.Conversation/AskStream"):
            call = (channel.unary_unary if method.endswith("Ask") else channel.unary_stream)(
                method, request_serializer=None, response_deserializer=None
            )
            with pytest.raises(grpc.RpcError) as caught:
                result = call(garbage, metadata=metadata, timeout=30)
                list(result) if method.endswith("Stream") else result
            error: Any = caught.value
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
            assert "not a valid almquist.v1.AskRequest" in error.details()
        converse = channel.stream_stream(
            "/almquist.v1.Conversation/Converse", request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(converse(iter([garbage]), metadata=metadata, timeout=30))
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "not a valid almquist.v1.ClientEvent" in error.details()


def test_oversized_messages_are_refused_at_the_proxy(serve_stack) -> None:
    """A 60 MB Ask (the issue's) and a Transcribe chunk over its limit: RESOURCE_EXHAUSTED, quickly, and the
    application still answers."""
    metadata = _metadata(serve_stack, "conversation")
    options = [("grpc.max_send_message_length", 256 * 1024 * 1024)]
    with grpc.insecure_channel(serve_stack.target, options=options) as channel:
        stub = conversation_pb2_grpc.ConversationStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Ask(conversation_pb2.AskRequest(text="x" * 60_000_000), metadata=metadata, timeout=60)
        elapsed = time.monotonic() - started
        error: Any = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        print(f"60 MB Ask refused in {elapsed:.2f} s: {error.details()}")
        transcribe = channel.stream_stream(
            "/almquist.v1.Media/Transcribe",
            request_serializer=media_pb2.TranscribeRequest.SerializeToString,
            response_deserializer=media_pb2.Transcript.FromString,
        )
        chunk = media_pb2.TranscribeRequest(
            audio=common_pb2.AudioChunk(pcm16=bytes(5 * 1024 * 1024), sample_rate_hz=16000)
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(transcribe(iter([chunk]), metadata=metadata, timeout=60))
        error = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert "Transcribe accepts at most 4 MiB per message" in error.details()
        # the text check of the application still answers within the limit
        with pytest.raises(grpc.RpcError) as caught:
            stub.Ask(conversation_pb2.AskRequest(text="x" * 5000), metadata=metadata, timeout=60)
        error = caught.value
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "64 KiB" not in error.details()  # refused by the application's own 4,000-character check
