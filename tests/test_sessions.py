"""The SessionStore actor over the durable store: what a restart of the actor keeps (everything acknowledged)."""

from __future__ import annotations

import time
import uuid

import pytest

from actors.sessions import INTERNAL_USER, Exchange, SessionStore, get_session_store
from almquist.config.security import StateConfig
from almquist.errors import NotFound


@pytest.fixture
def state(tmp_path) -> StateConfig:
    return StateConfig(url=f"sqlite:///{tmp_path / 'state.db'}")


def test_a_new_store_over_the_same_file_has_every_session_thread_and_turn(state: StateConfig) -> None:
    first = SessionStore(state)
    owner = first.internal_user().user_id
    session = first.create(owner, "critic")
    first.open_thread(session.session_id, owner, "music")
    first.append(session.session_id, "music", Exchange("t1", "play jazz", "here is some jazz"), "key-1")
    second = SessionStore(state)  # what Ray does after the actor dies: a new process opens the same store
    assert second.internal_user() == first.internal_user()
    resumed = second.get(session.session_id, owner)
    assert (resumed.personality, resumed.thread_id) == ("critic", "music")
    assert [e.assistant for e in second.history(session.session_id)] == ["here is some jazz"]
    assert second.answered(session.session_id, "key-1") is not None


def test_the_internal_user_is_an_admin_and_sessions_stay_with_their_owner(state: StateConfig) -> None:
    store = SessionStore(state)
    internal = store.internal_user()
    assert (internal.name, internal.role) == (INTERNAL_USER, "admin")
    other = store.external_user("f" * 32, "oidc-ffffffffffff", "user")
    session = store.create(other.user_id, "friendly")
    with pytest.raises(NotFound):
        store.get(session.session_id, internal.user_id)  # an admin does not read others' conversations either


def test_killing_the_actor_loses_no_session_and_a_held_lease_lapses(local_ray, state: StateConfig) -> None:
    import ray

    # an actor of its own: the session's Serve stack may share this Ray, and its SessionStore must live on
    actor = get_session_store(state, name=f"test-sessions-{uuid.uuid4().hex[:8]}")
    owner = ray.get(actor.internal_user.remote()).user_id
    session = ray.get(actor.create.remote(owner, "friendly"))
    ray.get(actor.append.remote(session.session_id, session.thread_id, Exchange("t", "hi", "hello"), "k"))
    ray.get(actor.claim_stream.remote(session.session_id, owner, "dead-ingress", 1.0))
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 30
    while True:  # calls fail while Ray restarts the actor; it is back within seconds
        try:
            history = ray.get(actor.history.remote(session.session_id), timeout=10)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert [e.assistant for e in history] == ["hello"]
    time.sleep(1.1)  # the holder never renewed: its lease lapsed, and a new stream resumes the session
    assert ray.get(actor.claim_stream.remote(session.session_id, owner, "new", 1.0)).stream_id == "new"
    ray.kill(actor, no_restart=True)
