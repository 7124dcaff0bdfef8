"""End to end through the Serve gRPC proxy: the `local` profile with the real SmolLM2 and MiniLM models."""

from __future__ import annotations

import time

import grpc
import pytest

from almquist.client import Client
from almquist.v1 import common_pb2, conversation_pb2

pytestmark = pytest.mark.serve

STORY = "Tell me a long story about a dragon who learns to sing."


@pytest.fixture(scope="module")
def client(serve_stack):
    with Client(serve_stack.target, timeout_s=300) as c:
        c.wait_ready()
        yield c


def events_of(iterator):
    """(kind, event, arrival time) for each ServerEvent."""
    return [(e.WhichOneof("event"), e, time.monotonic()) for e in iterator]


def test_ask_unary_answers(client):
    response = client.ask("Who directed Inception?")
    assert response.answer.strip()
    assert response.turn_end.reason == common_pb2.TURN_END_REASON_COMPLETED
    assert response.turn_end.tokens > 0 and response.turn_id
    assert response.intent == "knowledge" and response.route == "graph_rag"


def test_router_sends_chitchat_to_the_llm(client):
    response = client.ask("Hello there, how are you doing today?")
    assert (response.intent, response.route) == ("chitchat", "llm")
    assert response.answer.strip()


def test_ask_stream_tokens_arrive_incrementally(client):
    sent = time.monotonic()
    events = events_of(client.ask_stream(STORY, max_tokens=48))
    kinds = [k for k, _, _ in events]
    assert kinds[0] == "turn_started" and kinds[-1] == "turn_end"
    tokens = [(e, t) for k, e, t in events if k == "token"]
    assert len(tokens) >= 10
    assert [e.token.index for e, _ in tokens] == list(range(len(tokens)))
    first, last = tokens[0][1], tokens[-1][1]
    # The first token reached us well before the last one was generated: ~10 tokens/s on 2 cores.
    assert last - first > 0.25 * (last - sent)
    assert "".join(e.token.text for e, _ in tokens).strip()
    assert [e.sequence for _, e, _ in events] == list(range(len(events)))


def test_converse_bidi_session_turns_and_history(client):
    conversation = client.converse(conversation_pb2.SessionStart(personality="critic", max_tokens=24))
    started = conversation.next_event().session_started
    assert started.session_id and started.personality == "critic" and not started.resumed
    conversation.send_text("Who directed Inception?")
    conversation.send_text("Hi! Thanks a lot.")  # queued while the first is answered: answered next, in order
    conversation.close_send()
    events = events_of(conversation.events())
    turn_ends = [e.turn_end for k, e, _ in events if k == "turn_end"]
    done = (common_pb2.TURN_END_REASON_COMPLETED, common_pb2.TURN_END_REASON_MAX_TOKENS)
    assert len(turn_ends) == 2 and all(t.reason in done and t.tokens > 0 for t in turn_ends)
    starts = [e.turn_started for k, e, _ in events if k == "turn_started"]
    assert [s.user_text for s in starts] == ["Who directed Inception?", "Hi! Thanks a lot."]
    token_times = [t for k, _, t in events if k == "token"]
    assert len(token_times) >= 4 and token_times[-1] > token_times[0]

    # The session survives the stream: resume it and it remembers both exchanges.
    resumed = client.converse(conversation_pb2.SessionStart(session_id=started.session_id))
    again = resumed.next_event().session_started
    assert again.resumed and again.session_id == started.session_id and again.personality == "critic"
    resumed.close_send()
    assert list(resumed.events()) == []


def test_interrupt_stops_generation(client, serve_stack):
    full = client.ask(STORY, max_tokens=64)
    assert full.turn_end.reason in (common_pb2.TURN_END_REASON_MAX_TOKENS, common_pb2.TURN_END_REASON_COMPLETED)
    before = serve_stack.llm_stats()

    conversation = client.converse(conversation_pb2.SessionStart(max_tokens=64))
    conversation.next_event()
    conversation.send_text(STORY)
    tokens = 0
    turn_end = None
    for event in conversation.events():
        kind = event.WhichOneof("event")
        if kind == "token":
            tokens += 1
            if tokens == 3:
                conversation.interrupt("user pressed stop")
        elif kind == "turn_end":
            turn_end = event.turn_end
            break
    conversation.close_send()
    assert turn_end is not None
    assert turn_end.reason == common_pb2.TURN_END_REASON_INTERRUPTED
    assert "user pressed stop" in turn_end.detail
    assert turn_end.tokens < full.turn_end.tokens
    # Generation itself stopped in the LLM replica, not just the stream to us.
    time.sleep(0.5)
    after = serve_stack.llm_stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < full.turn_end.tokens


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        ({"text": ""}, grpc.StatusCode.INVALID_ARGUMENT, "text is empty"),
        ({"text": "   "}, grpc.StatusCode.INVALID_ARGUMENT, "text is empty"),
        ({"text": "x" * 4001}, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit is 4000"),
        ({"text": "hi", "session_id": "no-such-session"}, grpc.StatusCode.NOT_FOUND, "unknown session"),
        ({"text": "hi", "personality": "pirate"}, grpc.StatusCode.INVALID_ARGUMENT, "unknown personality"),
        ({"text": "hi", "max_tokens": 10**6}, grpc.StatusCode.INVALID_ARGUMENT, "over the limit"),
    ],
)
def test_bad_ask_gets_its_status_and_the_app_keeps_serving(client, kwargs, code, message):
    with pytest.raises(grpc.RpcError) as caught:
        client.ask(**kwargs)
    assert caught.value.code() == code
    assert message in caught.value.details()
    assert client.ask("Hello!", max_tokens=4).answer.strip()


@pytest.mark.parametrize(
    ("start", "code", "message"),
    [
        (conversation_pb2.SessionStart(session_id="missing"), grpc.StatusCode.NOT_FOUND, "unknown session"),
        (conversation_pb2.SessionStart(personality="pirate"), grpc.StatusCode.INVALID_ARGUMENT, "unknown personality"),
    ],
)
def test_bad_session_start_ends_the_stream_with_its_status(client, start, code, message):
    conversation = client.converse(start)
    with pytest.raises(grpc.RpcError) as caught:
        conversation.next_event()
    assert caught.value.code() == code and message in caught.value.details()


def test_first_event_must_be_session_start(client):
    call = client.stub.Converse(
        iter([conversation_pb2.ClientEvent(text=conversation_pb2.TextInput(text="hi"))]), metadata=client.metadata
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_second_stream_on_a_session_is_refused(client):
    first = client.converse(conversation_pb2.SessionStart())
    session_id = first.next_event().session_started.session_id
    second = client.converse(conversation_pb2.SessionStart(session_id=session_id))
    with pytest.raises(grpc.RpcError) as caught:
        second.next_event()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already has a live Converse stream" in caught.value.details()
    # The first stream is unharmed and still answers.
    first.send_text("Hello!")
    first.close_send()
    assert any(e.WhichOneof("event") == "turn_end" for e in first.events())


def test_bad_events_inside_a_stream_are_reported_in_band(client):
    conversation = client.converse(conversation_pb2.SessionStart(max_tokens=8))
    conversation.next_event()
    conversation.send_text("")
    conversation.send_text("y" * 5000)
    conversation.send(conversation_pb2.ClientEvent())
    conversation.send(conversation_pb2.ClientEvent(start=conversation_pb2.SessionStart()))
    conversation.send_text("Hello!")  # accepted after the bad ones: still answered
    conversation.close_send()
    events = [e for e in conversation.events()]
    errors = [e.error for e in events if e.WhichOneof("event") == "error"]
    assert [grpc.StatusCode.INVALID_ARGUMENT.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]] == [
        e.code for e in errors[:2]
    ]
    assert errors[2].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "empty ClientEvent" in errors[2].message
    assert errors[3].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    ends = [e.turn_end for e in events if e.WhichOneof("event") == "turn_end"]
    assert len(ends) == 1 and ends[0].tokens > 0
