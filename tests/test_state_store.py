"""The durable store on both backends it supports: a SQLite file and a PostgreSQL server (Debian's package, started
by the test), through the same code."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from almquist.config.security import StateConfig
from almquist.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from almquist.state import Exchange, StateStore, schema_head
from almquist.state.tables import metadata
from tests.postgres_server import postgres_server


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'almquist.db'}"
    base = request.getfixturevalue("postgres_url")
    # a database per test, so each starts empty
    import sqlalchemy as sa

    name = f"t{abs(hash(request.node.nodeid)) % 10**12}"
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(url: str, clock: Clock) -> Iterator[StateStore]:
    store = StateStore(StateConfig(url=url), clock=clock)
    yield store
    store.close()


def test_a_fresh_store_is_migrated_to_the_newest_schema_and_the_migrations_match_the_tables(store: StateStore) -> None:
    assert store.revision() == schema_head()
    assert store.migrate() == schema_head()  # a second migration is a no-op
    with store._engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_a_key_names_its_user_until_it_is_revoked_and_only_its_hash_is_kept(store: StateStore) -> None:
    ann = store.add_user("ann", "admin")
    key, secret = store.create_key(ann.user_id, "laptop")
    assert secret.startswith(f"alm_{key.key_id}_")
    assert store.user_for_key(secret) == ann
    assert store.user_for_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None  # wrong secret
    assert store.user_for_key("Bearer nonsense") is None
    assert secret.split("_")[-1] not in json.dumps(store.dump())  # only the hash is stored
    store.revoke_key(key.key_id)
    assert store.user_for_key(secret) is None
    with pytest.raises(FailedPrecondition):
        store.revoke_key(key.key_id)
    with pytest.raises(NotFound):
        store.revoke_key("0" * 16)


def test_user_names_and_roles_are_checked(store: StateStore) -> None:
    store.add_user("ann")
    with pytest.raises(FailedPrecondition, match="already exists"):
        store.add_user("ann")
    with pytest.raises(InvalidArgument, match="role"):
        store.add_user("bob", "root")
    with pytest.raises(InvalidArgument, match="user name"):
        store.add_user("bob smith")
    assert store.ensure_user("ann", "admin").role == "user"  # an existing user keeps its role


def test_another_owners_session_is_answered_like_one_that_does_not_exist(store: StateStore) -> None:
    ann, bob = store.add_user("ann"), store.add_user("bob")
    session = store.create_session(ann.user_id, "friendly")
    with pytest.raises(NotFound) as other:
        store.session(session.session_id, bob.user_id)
    with pytest.raises(NotFound) as unknown:
        store.session("f" * 32, bob.user_id)
    assert str(other.value) == str(unknown.value)
    assert session.session_id not in str(other.value)  # failed calls' messages reach the server's logs
    for call in (
        lambda: store.claim_stream(session.session_id, bob.user_id, "h", 5),
        lambda: store.open_thread(session.session_id, bob.user_id, "t2"),
        lambda: store.set_personality(session.session_id, bob.user_id, "critic"),
        lambda: store.delete_session(session.session_id, bob.user_id),
    ):
        with pytest.raises(NotFound):
            call()
    assert store.session(session.session_id, ann.user_id).personality == "friendly"


def test_a_lease_keeps_the_session_while_renewed_and_lapses_when_its_holder_goes_silent(
    store: StateStore, clock: Clock
) -> None:
    ann = store.add_user("ann")
    session = store.create_session(ann.user_id, "friendly")
    assert store.claim_stream(session.session_id, ann.user_id, "first", ttl_s=6).stream_id == "first"
    clock.now += 4
    assert store.renew_stream(session.session_id, "first", ttl_s=6)
    clock.now += 4  # 8 s after the claim, 4 s after the renewal: still held
    with pytest.raises(FailedPrecondition, match="live Converse stream"):
        store.claim_stream(session.session_id, ann.user_id, "second", ttl_s=6)
    clock.now += 2.5  # the holder stopped renewing: its lease lapsed
    assert store.session(session.session_id, ann.user_id).stream_id is None
    assert store.claim_stream(session.session_id, ann.user_id, "second", ttl_s=6).stream_id == "second"
    assert not store.renew_stream(session.session_id, "first", ttl_s=6)  # the old holder learns it lost the lease
    store.release_stream(session.session_id, "first")  # a late release of a lost lease changes nothing
    assert store.session(session.session_id, ann.user_id).stream_id == "second"
    store.release_stream(session.session_id, "second")
    assert store.session(session.session_id, ann.user_id).stream_id is None


def test_caps_on_streams_sessions_and_threads_per_identity(store: StateStore) -> None:
    ann, bob = store.add_user("ann"), store.add_user("bob")
    first = store.create_session(ann.user_id, "friendly", max_sessions=2)
    second = store.create_session(ann.user_id, "friendly", max_sessions=2)
    with pytest.raises(ResourceExhausted, match="sessions"):
        store.create_session(ann.user_id, "friendly", max_sessions=2)
    store.create_session(bob.user_id, "friendly", max_sessions=2)  # the cap is per identity
    store.claim_stream(first.session_id, ann.user_id, "a", ttl_s=6, max_streams=1)
    with pytest.raises(ResourceExhausted, match="live streams"):
        store.claim_stream(second.session_id, ann.user_id, "b", ttl_s=6, max_streams=1)
    store.open_thread(first.session_id, ann.user_id, "music", max_threads=2)
    with pytest.raises(ResourceExhausted, match="threads"):
        store.open_thread(first.session_id, ann.user_id, "news", max_threads=2)
    assert store.open_thread(first.session_id, ann.user_id, "music", max_threads=2).thread_id == "music"


def test_a_retried_turn_is_stored_once_under_its_idempotency_key(store: StateStore) -> None:
    ann = store.add_user("ann")
    session = store.create_session(ann.user_id, "friendly")
    turn = Exchange("turn-1", "who directed Alien?", "Ridley Scott.", citations=({"entity": "Ridley Scott"},))
    assert store.append(session.session_id, session.thread_id, turn, idempotency_key="k-1")
    assert not store.append(session.session_id, session.thread_id, turn, idempotency_key="k-1")
    assert store.history(session.session_id) == [turn]
    assert store.answered(session.session_id, "k-1") == turn
    assert store.answered(session.session_id, "k-2") is None


def test_history_is_per_thread_in_order_and_survives_reopening(url: str, store: StateStore) -> None:
    ann = store.add_user("ann")
    session = store.create_session(ann.user_id, "friendly")
    for n in range(8):
        store.append(session.session_id, session.thread_id, Exchange(f"t{n}", f"q{n}", f"a{n}"))
    store.open_thread(session.session_id, ann.user_id, "music")
    store.append(session.session_id, "music", Exchange("m0", "song?", "yes"))
    store.close()
    reopened = StateStore(StateConfig(url=url))
    assert [e.user for e in reopened.history(session.session_id, session.thread_id, last=3)] == ["q5", "q6", "q7"]
    assert [e.user for e in reopened.history(session.session_id)] == ["song?"]  # the current thread
    assert reopened.session(session.session_id, ann.user_id).threads == (session.thread_id, "music")
    reopened.close()


def test_another_process_sees_every_write_as_soon_as_it_returns(url: str, store: StateStore) -> None:
    ann = store.add_user("ann")
    session = store.create_session(ann.user_id, "critic")
    store.append(session.session_id, session.thread_id, Exchange("t", "hello", "hi"))
    code = (
        "import sys; from almquist.state import StateStore; from almquist.config.security import StateConfig;"
        "s = StateStore(StateConfig(url=sys.argv[1]));"
        "print(s.session(sys.argv[2], sys.argv[3]).personality, s.history(sys.argv[2])[0].assistant)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, url, session.session_id, ann.user_id], capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["critic", "hi"]


def test_a_user_can_export_everything_kept_about_them_and_deleting_them_leaves_others_alone(
    store: StateStore,
) -> None:
    ann, bob = store.add_user("ann"), store.add_user("bob")
    store.create_key(ann.user_id)
    mine, theirs = store.create_session(ann.user_id, "friendly"), store.create_session(bob.user_id, "friendly")
    store.append(mine.session_id, mine.thread_id, Exchange("t", "my secret is tulip", "noted"))
    store.append(theirs.session_id, theirs.thread_id, Exchange("t", "bob's turn", "ok"))
    exported = json.loads(json.dumps(store.export_user(ann.user_id)))
    assert exported["user"]["name"] == "ann"
    assert [turn["user"] for turn in exported["sessions"][0]["threads"][mine.thread_id]] == ["my secret is tulip"]
    assert "bob's turn" not in json.dumps(exported)
    assert store.delete_user_data(ann.user_id) == {"sessions": 1, "threads": 1, "exchanges": 1}
    assert store.session_ids(ann.user_id) == []
    assert store.delete_user(ann.user_id)["keys"] == 1
    with pytest.raises(NotFound):
        store.user(ann.user_id)
    assert [e.user for e in store.history(theirs.session_id)] == ["bob's turn"]


def test_a_login_link_works_once_and_lapses(store: StateStore, clock: Clock) -> None:
    ann = store.add_user("ann")
    token = store.create_login_link(ann.user_id, ttl_s=60)
    assert store.redeem_login_link(token) == ann
    assert store.redeem_login_link(token) is None
    late = store.create_login_link(ann.user_id, ttl_s=60)
    clock.now += 61
    assert store.redeem_login_link(late) is None


def test_a_dump_restores_into_an_empty_store(store: StateStore, tmp_path) -> None:
    ann = store.add_user("ann", "curator")
    _, secret = store.create_key(ann.user_id)
    session = store.create_session(ann.user_id, "friendly")
    store.append(session.session_id, session.thread_id, Exchange("t", "q", "a", citations=({"entity": "Alien"},)))
    dump = json.loads(json.dumps(store.dump()))
    other = StateStore(StateConfig(url=f"sqlite:///{tmp_path / 'restored.db'}"))
    other.load(dump)
    assert other.user_for_key(secret) == ann
    assert other.history(session.session_id)[0].citations == ({"entity": "Alien"},)


def test_two_processes_opening_a_new_file_at_once_both_migrate_it(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'almquist.db'}"
    code = "import sys; from almquist.state import StateStore; from almquist.config.security import StateConfig;"
    code += "print(StateStore(StateConfig(url=sys.argv[1])).revision())"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [schema_head(), schema_head()]
