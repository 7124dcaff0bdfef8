"""Who may call what, through Serve's gRPC proxy and the browser bridge: credentials (API keys and JWTs), roles,
ownership of sessions, quotas, and a user's own data."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from almquist.client import Client
from almquist.config.security import StateConfig
from almquist.credentials import login_link
from almquist.state import StateStore
from almquist.v1 import (
    account_pb2,
    common_pb2,
    conversation_pb2,
    conversation_pb2_grpc,
    knowledge_pb2,
    knowledge_pb2_grpc,
    media_pb2,
)

APPLICATION = (("application", "conversation"),)


@pytest.fixture(scope="module")
def store(serve_stack):
    store = StateStore(StateConfig())  # the stack's own durable store (ALMQUIST_STATE_URL of this test session)
    yield store
    store.close()


def _user(store: StateStore, name: str, role: str = "user") -> str:
    user = store.add_user(f"{name}-{time.monotonic_ns() % 10**9}", role)
    return store.create_key(user.user_id)[1]


@pytest.fixture(scope="module")
def client(serve_stack):
    """The owner (an admin), with the key the stack made the way `almquist up` does."""
    with Client(serve_stack.target, timeout_s=300) as client:
        yield client


@pytest.fixture(scope="module")
def ann(serve_stack, store):
    with Client(serve_stack.target, timeout_s=300, api_key=_user(store, "ann")) as client:
        yield client


@pytest.fixture(scope="module")
def bob(serve_stack, store):
    with Client(serve_stack.target, timeout_s=300, api_key=_user(store, "bob")) as client:
        yield client


def _code(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_no_credential_or_a_wrong_one_is_refused_on_every_service(serve_stack):
    channel = grpc.insecure_channel(serve_stack.target)
    conversation = conversation_pb2_grpc.ConversationStub(channel)
    knowledge = knowledge_pb2_grpc.KnowledgeStub(channel)
    start = conversation_pb2.ClientEvent(start=conversation_pb2.SessionStart())
    for metadata in (APPLICATION, (*APPLICATION, ("authorization", "Bearer alm_0123456789abcdef_" + "x" * 43))):
        for call in (
            lambda m=metadata: conversation.Ask(conversation_pb2.AskRequest(text="hi"), metadata=m, timeout=60),
            lambda m=metadata: knowledge.ListSnapshots(knowledge_pb2.ListSnapshotsRequest(), metadata=m, timeout=60),
            lambda m=metadata: knowledge.Rollback(knowledge_pb2.RollbackRequest(snapshot_id="x"), metadata=m),
            lambda m=metadata: list(conversation.Converse(iter([start]), metadata=m, timeout=60)),
        ):
            error = _code(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            assert "Traceback" not in error.details()
    channel.close()


def test_a_revoked_key_stops_working_within_the_key_cache_time(serve_stack, store):
    user = store.add_user(f"carol-{time.monotonic_ns() % 10**9}")
    key, credential = store.create_key(user.user_id)
    with Client(serve_stack.target, timeout_s=60, api_key=credential) as client:
        assert client.whoami().user_id == user.user_id
        store.revoke_key(key.key_id)
        time.sleep(2.5)  # the stack's auth.key_cache_s is 2 s
        assert _code(client.whoami).code() == grpc.StatusCode.UNAUTHENTICATED


def test_roles_gate_the_admin_calls(ann, client):
    rollback = knowledge_pb2.RollbackRequest(snapshot_id="s999999-nope")
    error = _code(lambda: ann.knowledge.Rollback(rollback, metadata=ann.metadata, timeout=60))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in error.details()
    # the owner key (an admin) gets past the role check to the store's own answer
    error = _code(lambda: client.knowledge.Rollback(rollback, metadata=client.metadata, timeout=60))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    denied = _code(lambda: ann.account.DeleteUser(account_pb2.DeleteUserRequest(user="owner"), metadata=ann.metadata))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


def test_another_users_session_is_not_found_and_its_secret_stays_with_its_owner(ann, bob):
    talk = ann.converse(conversation_pb2.SessionStart(max_tokens=16))
    session_id = talk.next_event().session_started.session_id
    talk.send_text("The secret code word is tulip.")
    while talk.next_event().WhichOneof("event") != "turn_end":
        pass
    talk.close_send()
    for _ in talk.events():
        pass
    # Bob holds Ann's session id: resuming it, asking in it, both answer like an id that does not exist
    resumed = bob.converse(conversation_pb2.SessionStart(session_id=session_id))
    error = _code(resumed.next_event)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "unknown session" in error.details()
    error = _code(lambda: bob.ask("What is the secret code word?", session_id=session_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "tulip" not in json.dumps(bob.export_my_data())
    mine = ann.export_my_data()
    [session] = [s for s in mine["sessions"] if s["session_id"] == session_id]
    assert "tulip" in json.dumps(session)


def test_a_client_cannot_claim_to_be_someone_else(ann):
    conversation = ann.converse(conversation_pb2.SessionStart(user_id="owner"))
    error = _code(conversation.next_event)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "credential" in error.details()
    me = ann.whoami()
    conversation = ann.converse(conversation_pb2.SessionStart(user_id=me.user_id))  # one's own id is fine
    assert conversation.next_event().session_started.session_id
    conversation.cancel()


def test_jwts_from_the_configured_issuer_are_identities_of_their_own(serve_stack):
    issuer = serve_stack.issuer
    with Client(serve_stack.target, timeout_s=60, api_key=issuer.token("dana@example.com")) as dana:
        me = dana.whoami()
        assert me.role == "user" and me.name.startswith("oidc-")
    with Client(serve_stack.target, timeout_s=60, api_key=issuer.token("dana@example.com")) as again:
        assert again.whoami().user_id == me.user_id  # the same subject is the same user
    curator = issuer.token("erin", role="curator")
    with Client(serve_stack.target, timeout_s=60, api_key=curator) as erin:
        assert erin.whoami().role == "curator"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        issuer.token("mallory", key=stranger),  # signed by someone else
        issuer.token("dana@example.com", lifetime_s=-120),  # expired
        issuer.token("dana@example.com", aud="another-service"),  # for another audience
        issuer.token("dana@example.com", role="root"),  # a role that does not exist
    ):
        with Client(serve_stack.target, timeout_s=60, api_key=token) as client:
            assert _code(client.whoami).code() == grpc.StatusCode.UNAUTHENTICATED


def test_over_the_media_quota_calls_are_refused_with_a_retry_after(serve_stack, store):
    with Client(serve_stack.target, timeout_s=120, api_key=_user(store, "frank")) as frank:
        request = media_pb2.EmbedRequest(texts=["a quota"])
        codes, retry_after = [], None
        for _ in range(14):  # the default media burst is 10
            try:
                frank.media.Embed(request, metadata=frank.metadata, timeout=120)
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
                retry_after = dict(error.trailing_metadata() or ()).get("retry-after")
        assert codes[:10] == ["OK"] * 10 and "RESOURCE_EXHAUSTED" in codes[10:]
        assert retry_after is not None and int(retry_after) >= 1
    with Client(serve_stack.target, timeout_s=120, api_key=_user(store, "gina")) as gina:  # others are not affected
        gina.media.Embed(request, metadata=gina.metadata, timeout=120)


def test_a_retried_turn_under_the_same_key_is_answered_and_stored_once(client):
    session_id = _session(client)
    first = client.ask("Tell me a joke.", session_id=session_id, max_tokens=8, idempotency_key="turn-0001")
    again = client.ask("Tell me a joke.", session_id=session_id, max_tokens=8, idempotency_key="turn-0001")
    assert first.turn_end.reason != common_pb2.TURN_END_REASON_ERROR
    assert (again.turn_id, again.answer) == (first.turn_id, first.answer)
    assert again.route == "replay"
    [session] = [s for s in client.export_my_data()["sessions"] if s["session_id"] == session_id]
    assert sum(len(turns) for turns in session["threads"].values()) == 1


def test_a_user_deletes_their_data_and_an_admin_deletes_a_user(serve_stack, store, client):
    name = f"hal-{time.monotonic_ns() % 10**9}"
    hal_id = store.add_user(name).user_id
    with Client(serve_stack.target, timeout_s=300, api_key=store.create_key(hal_id)[1]) as hal:
        hal.ask("Remember that I like jazz.", session_id=_session(hal), max_tokens=8)
        assert hal.export_my_data()["sessions"]
        deleted = hal.delete_my_data()
        assert (deleted.sessions, deleted.exchanges) == (1, 1)
        assert hal.export_my_data()["sessions"] == []
        client.account.DeleteUser(account_pb2.DeleteUserRequest(user=name), metadata=client.metadata, timeout=60)
        time.sleep(2.5)  # the key cache
        assert _code(hal.whoami).code() == grpc.StatusCode.UNAUTHENTICATED


def _session(client: Client) -> str:
    conversation = client.converse(conversation_pb2.SessionStart(max_tokens=8))
    session_id = conversation.next_event().session_started.session_id
    conversation.close_send()
    for _ in conversation.events():
        pass
    return session_id


# ---- the browser bridge ----
def _avatar(serve_stack) -> str:
    return f"http://127.0.0.1:{serve_stack.schema.http_options.port}/avatar"


def test_the_bridge_refuses_another_origin_and_a_socket_without_a_credential(serve_stack, client):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = _avatar(serve_stack).replace("http://", "ws://") + "/ws"
    bearer = {"Authorization": f"Bearer {client.api_key}"}
    with pytest.raises(InvalidStatus) as evil:
        connect(url, origin="http://evil.example", additional_headers=bearer, open_timeout=30)
    assert evil.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as anonymous:
        connect(url, open_timeout=30)
    assert anonymous.value.response.status_code == 403
    own = f"http://127.0.0.1:{serve_stack.schema.http_options.port}"
    with connect(url, origin=own, additional_headers=bearer, open_timeout=30) as socket:
        socket.send(json.dumps({"start": {}}))
        assert "session_started" in json.loads(socket.recv(timeout=60))


def test_a_login_link_works_once_and_sets_an_httponly_samesite_cookie(serve_stack):
    link = login_link(StateConfig(), _avatar(serve_stack))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as redirected:
        opener.open(link, timeout=30)
    assert redirected.value.code in (302, 303, 307)
    cookie = redirected.value.headers["set-cookie"]
    assert cookie.startswith("almquist_key=alm_") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    with pytest.raises(urllib.error.HTTPError) as reused:
        opener.open(link, timeout=30)
    assert reused.value.code == 401


def test_an_idle_stream_is_closed_with_its_status_and_its_session_resumes_at_once(client):
    conversation = client.converse(conversation_pb2.SessionStart())
    session_id = conversation.next_event().session_started.session_id
    started = time.monotonic()
    error = _code(conversation.next_event)  # the client sends nothing more
    waited = time.monotonic() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "idle" in error.details()
    assert 25 < waited < 60  # the stack's conversation.idle_stream_s is 30 s
    resumed = client.converse(conversation_pb2.SessionStart(session_id=session_id))
    assert resumed.next_event().session_started.resumed  # the closed stream let go of the session
    resumed.cancel()


def test_over_the_turn_quota_a_stream_gets_an_in_band_error_with_its_wait(serve_stack, store):
    with Client(serve_stack.target, timeout_s=300, api_key=_user(store, "ivy")) as ivy:
        conversation = ivy.converse(conversation_pb2.SessionStart(max_tokens=4))
        assert conversation.next_event().session_started.session_id
        for n in range(12):  # the default turn burst is 10
            conversation.send_text(f"Quick question number {n}?")
        while (event := conversation.next_event()).WhichOneof("event") != "error" or (
            "too many turns" not in event.error.message
        ):
            pass
        assert event.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert event.error.retry_after_s > 0
        conversation.cancel()
