"""SessionStore: the rules every ingress replica relies on (plain class; the actor is the same code)."""

import pytest

from actors.sessions import Exchange, SessionStore
from almquist.errors import FailedPrecondition, NotFound, ResourceExhausted


def test_create_get_and_unknown_session():
    store = SessionStore()
    info = store.create("ada", "critic")
    assert store.get(info.session_id) == info
    assert info.personality == "critic" and info.thread_id in info.threads
    with pytest.raises(NotFound, match="unknown session"):
        store.get("nope")


def test_one_live_stream_per_session():
    store = SessionStore()
    sid = store.create("ada", "friendly").session_id
    store.claim_stream(sid, "stream-1")
    store.claim_stream(sid, "stream-1")  # the holder may claim again
    with pytest.raises(FailedPrecondition, match="already has a live Converse stream"):
        store.claim_stream(sid, "stream-2")
    store.release_stream(sid, "stream-2")  # not the holder: no effect
    with pytest.raises(FailedPrecondition):
        store.claim_stream(sid, "stream-2")
    store.release_stream(sid, "stream-1")
    assert store.claim_stream(sid, "stream-2").stream_id == "stream-2"


def test_history_is_per_thread_and_bounded():
    store = SessionStore(max_exchanges_per_thread=3)
    info = store.create("ada", "friendly")
    for i in range(5):
        store.append(info.session_id, info.thread_id, Exchange(f"t{i}", f"q{i}", f"a{i}"))
    assert [e.user for e in store.history(info.session_id, last=10)] == ["q2", "q3", "q4"]
    assert [e.user for e in store.history(info.session_id, last=2)] == ["q3", "q4"]
    other = store.open_thread(info.session_id, "side")
    assert other.thread_id == "side" and store.history(info.session_id) == []


def test_eviction_spares_live_streams():
    store = SessionStore(max_sessions=2)
    live = store.create("a", "friendly").session_id
    store.claim_stream(live, "s")
    idle = store.create("b", "friendly").session_id
    store.create("c", "friendly")  # evicts the idle one, never the live one
    assert store.get(live)
    with pytest.raises(NotFound):
        store.get(idle)
    store2 = SessionStore(max_sessions=1)
    store2.claim_stream(store2.create("a", "friendly").session_id, "s")
    with pytest.raises(ResourceExhausted):
        store2.create("b", "friendly")
