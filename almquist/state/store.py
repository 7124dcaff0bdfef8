"""`StateStore`: the durable state behind identities, sessions and history, on SQLite or PostgreSQL.

In: calls from the SessionStore actor (sessions, threads, leases, history), the ingress (who holds a credential) and
the CLI (users, keys, backups). Out: plain frozen records (`User`, `ApiKey`, `SessionInfo`, `Exchange`). Every write
is committed before the call returns, so whatever a caller acknowledges to a client is on disk (or on the server).

Ownership is checked here, once: a session of another owner is answered exactly like a session that does not
exist (NotFound), so an id never tells anyone it is real.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine, make_url

from almquist.config.security import ROLES, StateConfig
from almquist.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from almquist.state.tables import api_keys, exchanges, login_links, metadata, sessions, threads, users

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
KEY_PREFIX = "alm"  # keys read `alm_<key_id>_<secret>`: greppable in leaked logs, and the id finds the row
_KEY_PATTERN = re.compile(r"^alm_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    role: str
    created_at: float


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    user_id: str
    label: str
    created_at: float
    revoked_at: float | None = None


@dataclass(frozen=True)
class Exchange:
    """One user turn and the assistant's answer to it, with the entities the answer cited."""

    turn_id: str
    user: str
    assistant: str
    interrupted: bool = False
    at: float = field(default_factory=time.time)
    citations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    owner: str
    personality: str
    thread_id: str
    threads: tuple[str, ...]
    stream_id: str | None  # the holder of a lease that has not lapsed


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _engine(config: StateConfig) -> Engine:

    url: URL = make_url(config.url)
    if config.password_env and os.environ.get(config.password_env):
        url = url.set(password=os.environ[config.password_env])
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    # pysqlite's own transaction handling defers BEGIN and skips it for DDL; take over as SQLAlchemy's docs say, and
    # make every transaction IMMEDIATE so concurrent writers (the actor, the CLI, a second migration) queue rather
    # than fail halfway.
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def schema_head() -> str:
    """The newest schema revision the code knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


class StateStore:
    """The durable store: open it with a `StateConfig` (it migrates the schema to the newest revision first)."""

    def __init__(self, config: StateConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self._config = config or StateConfig()
        self._engine = _engine(self._config)
        self._clock = clock
        self.migrate()

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    # ----- schema -----

    def migrate(self) -> str:
        """Upgrades the schema to the newest revision (a no-op when it is there); returns that revision."""
        with self._engine.begin() as connection:
            if connection.dialect.name == "postgresql":  # one migrator at a time across processes
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(718281828)"))
            command.upgrade(_alembic_config(connection), "head")
        return schema_head()

    def revision(self) -> str | None:
        with self._engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._engine.begin() as connection:
            yield connection

    # ----- identities and keys -----

    def add_user(self, name: str, role: str = "user") -> User:
        if not _NAME_PATTERN.match(name):
            raise InvalidArgument(f"user name {name!r}: use 1-64 letters, digits and . _ @ - (no spaces)")
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r}: choose one of {', '.join(ROLES)}")
        user = User(uuid.uuid4().hex, name, role, self._clock())
        with self._tx() as tx:
            if tx.execute(sa.select(users.c.user_id).where(users.c.name == name)).first():
                raise FailedPrecondition(f"a user named {name!r} already exists")
            tx.execute(users.insert().values(**user.__dict__))
        return user

    def ensure_user(self, name: str, role: str) -> User:
        """The user called `name`, created with `role` if there is none."""
        with self._tx() as tx:
            row = tx.execute(sa.select(users).where(users.c.name == name)).first()
        return User(**row._mapping) if row else self.add_user(name, role)

    def ensure_external_user(self, user_id: str, name: str, role: str) -> User:
        """The row of an identity an external issuer vouches for (a JWT's subject), created on first sight; its role
        follows the issuer's latest token."""
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r}: choose one of {', '.join(ROLES)}")
        with self._tx() as tx:
            row = tx.execute(sa.select(users).where(users.c.user_id == user_id)).first()
            if row is None:
                tx.execute(users.insert().values(user_id=user_id, name=name, role=role, created_at=self._clock()))
            elif row.role != role:
                tx.execute(users.update().where(users.c.user_id == user_id).values(role=role))
        return self.user(user_id)

    def user(self, user_id: str) -> User:
        with self._tx() as tx:
            row = tx.execute(sa.select(users).where(users.c.user_id == user_id)).first()
        if row is None:
            raise NotFound(f"no user {user_id!r}")
        return User(**row._mapping)

    def user_named(self, name_or_id: str) -> User:
        with self._tx() as tx:
            row = tx.execute(
                sa.select(users).where(sa.or_(users.c.name == name_or_id, users.c.user_id == name_or_id))
            ).first()
        if row is None:
            raise NotFound(f"no user {name_or_id!r}; `almquist users list` shows them")
        return User(**row._mapping)

    def users(self) -> list[User]:
        with self._tx() as tx:
            return [User(**row._mapping) for row in tx.execute(sa.select(users).order_by(users.c.created_at))]

    def set_role(self, user_id: str, role: str) -> User:
        if role not in ROLES:
            raise InvalidArgument(f"role {role!r}: choose one of {', '.join(ROLES)}")
        with self._tx() as tx:
            if tx.execute(users.update().where(users.c.user_id == user_id).values(role=role)).rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
        return self.user(user_id)

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Removes the user and everything kept about them (keys, sessions, threads, history); returns counts."""
        with self._tx() as tx:
            counts = self._delete_sessions(tx, user_id)
            counts["keys"] = tx.execute(api_keys.delete().where(api_keys.c.user_id == user_id)).rowcount
            tx.execute(login_links.delete().where(login_links.c.user_id == user_id))
            if tx.execute(users.delete().where(users.c.user_id == user_id)).rowcount == 0:
                raise NotFound(f"no user {user_id!r}")
        return counts

    def create_key(self, user_id: str, label: str = "") -> tuple[ApiKey, str]:
        """A new API key for `user_id`: its record, and the credential itself (shown once, stored only hashed)."""
        self.user(user_id)
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        key = ApiKey(key_id, user_id, label[:200], self._clock())
        with self._tx() as tx:
            tx.execute(
                api_keys.insert().values(
                    key_id=key.key_id,
                    user_id=user_id,
                    secret_sha256=_sha256(secret),
                    label=key.label,
                    created_at=key.created_at,
                )
            )
        return key, f"{KEY_PREFIX}_{key_id}_{secret}"

    def revoke_key(self, key_id: str) -> ApiKey:
        with self._tx() as tx:
            done = tx.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = tx.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise NotFound(f"no key {key_id!r}; `almquist keys list` shows them")
        if done.rowcount == 0:
            raise FailedPrecondition(f"key {key_id} was already revoked")
        return self._key(row)

    def keys(self, user_id: str | None = None) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        with self._tx() as tx:
            return [self._key(row) for row in tx.execute(query)]

    def user_for_key(self, credential: str) -> User | None:
        """The user an API key belongs to, or None for a malformed, unknown or revoked key."""
        match = _KEY_PATTERN.match(credential)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self._tx() as tx:
            row = tx.execute(
                sa.select(api_keys.c.secret_sha256, users)
                .join(users, users.c.user_id == api_keys.c.user_id)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            ).first()
        if row is None or not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
            return None
        return User(row.user_id, row.name, row.role, row.created_at)

    def create_login_link(self, user_id: str, ttl_s: float = 900.0) -> str:
        """A one-time token for the browser page's login link; it lapses after `ttl_s` or its first use."""
        token = secrets.token_urlsafe(32)
        with self._tx() as tx:
            tx.execute(
                login_links.insert().values(
                    token_sha256=_sha256(token), user_id=user_id, expires_at=self._clock() + ttl_s
                )
            )
        return token

    def redeem_login_link(self, token: str) -> User | None:
        now = self._clock()
        with self._tx() as tx:
            used = tx.execute(
                login_links.update()
                .where(
                    login_links.c.token_sha256 == _sha256(token),
                    login_links.c.used_at.is_(None),
                    login_links.c.expires_at > now,
                )
                .values(used_at=now)
                .returning(login_links.c.user_id)
            ).first()
        return self.user(used.user_id) if used else None

    @staticmethod
    def _key(row: Any) -> ApiKey:
        m = row._mapping
        return ApiKey(m["key_id"], m["user_id"], m["label"], m["created_at"], m["revoked_at"])

    # ----- sessions, threads and stream leases -----

    def create_session(self, owner: str, personality: str, max_sessions: int = 1_000_000) -> SessionInfo:
        now = self._clock()
        session_id, thread_id = uuid.uuid4().hex, uuid.uuid4().hex[:12]
        with self._tx() as tx:
            held = tx.execute(sa.select(sa.func.count()).where(sessions.c.owner == owner)).scalar_one()
            if held >= max_sessions:
                raise ResourceExhausted(
                    f"you have {held} sessions, the most one identity may keep; resume one of them or delete some"
                )
            tx.execute(
                sessions.insert().values(
                    session_id=session_id,
                    owner=owner,
                    personality=personality,
                    thread_id=thread_id,
                    created_at=now,
                    last_seen=now,
                )
            )
            tx.execute(threads.insert().values(session_id=session_id, thread_id=thread_id, created_at=now))
            return self._info(tx, session_id, owner)

    def session(self, session_id: str, owner: str) -> SessionInfo:
        with self._tx() as tx:
            return self._info(tx, session_id, owner, touch=True)

    def open_thread(self, session_id: str, owner: str, thread_id: str, max_threads: int = 1_000_000) -> SessionInfo:
        """Switches the session to `thread_id`, creating the thread if it is new."""
        with self._tx() as tx:
            self._info(tx, session_id, owner)
            known = tx.execute(sa.select(threads.c.thread_id).where(threads.c.session_id == session_id)).scalars().all()
            if thread_id not in known:
                if len(known) >= max_threads:
                    raise ResourceExhausted(
                        f"session has {len(known)} threads, the most one session may keep; continue one of them"
                    )
                tx.execute(
                    threads.insert().values(session_id=session_id, thread_id=thread_id, created_at=self._clock())
                )
            tx.execute(sessions.update().where(sessions.c.session_id == session_id).values(thread_id=thread_id))
            return self._info(tx, session_id, owner)

    def set_personality(self, session_id: str, owner: str, personality: str) -> SessionInfo:
        with self._tx() as tx:
            self._info(tx, session_id, owner)
            tx.execute(sessions.update().where(sessions.c.session_id == session_id).values(personality=personality))
            return self._info(tx, session_id, owner)

    def claim_stream(
        self, session_id: str, owner: str, holder: str, ttl_s: float, max_streams: int = 1_000_000
    ) -> SessionInfo:
        """Gives `holder` the session's stream lease for `ttl_s`. A lease another holder renews in time keeps the
        session (FailedPrecondition); a lapsed one (its holder died or went silent) is taken over."""
        now = self._clock()
        with self._tx() as tx:
            info = self._info(tx, session_id, owner)
            if info.stream_id not in (None, holder):
                raise FailedPrecondition(
                    "this session already has a live Converse stream; close it first, or resume after it lapses "
                    f"(a stream that stops renewing lets go within {ttl_s:g} s)"
                )
            live = tx.execute(
                sa.select(sa.func.count()).where(
                    sessions.c.owner == owner,
                    sessions.c.session_id != session_id,
                    sessions.c.lease_expires_at > now,
                )
            ).scalar_one()
            if live >= max_streams:
                raise ResourceExhausted(
                    f"you have {live} live streams, the most one identity may hold; close one and try again"
                )
            tx.execute(
                sessions.update()
                .where(sessions.c.session_id == session_id)
                .values(lease_holder=holder, lease_expires_at=now + ttl_s, last_seen=now)
            )
            return self._info(tx, session_id, owner)

    def renew_stream(self, session_id: str, holder: str, ttl_s: float) -> bool:
        """Extends `holder`'s lease; False when it no longer holds it (it lapsed and another stream took it)."""
        now = self._clock()
        with self._tx() as tx:
            done = tx.execute(
                sessions.update()
                .where(
                    sessions.c.session_id == session_id,
                    sessions.c.lease_holder == holder,
                    sessions.c.lease_expires_at > now,
                )
                .values(lease_expires_at=now + ttl_s, last_seen=now)
            )
        return done.rowcount == 1

    def release_stream(self, session_id: str, holder: str) -> None:
        with self._tx() as tx:
            tx.execute(
                sessions.update()
                .where(sessions.c.session_id == session_id, sessions.c.lease_holder == holder)
                .values(lease_holder=None, lease_expires_at=None)
            )

    def live_streams(self, owner: str) -> int:
        with self._tx() as tx:
            return tx.execute(
                sa.select(sa.func.count()).where(sessions.c.owner == owner, sessions.c.lease_expires_at > self._clock())
            ).scalar_one()

    def count_sessions(self, owner: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(sessions)
        if owner is not None:
            query = query.where(sessions.c.owner == owner)
        with self._tx() as tx:
            return tx.execute(query).scalar_one()

    def session_ids(self, owner: str) -> list[str]:
        with self._tx() as tx:
            return list(
                tx.execute(
                    sa.select(sessions.c.session_id).where(sessions.c.owner == owner).order_by(sessions.c.created_at)
                ).scalars()
            )

    def delete_session(self, session_id: str, owner: str) -> None:
        with self._tx() as tx:
            self._info(tx, session_id, owner)
            tx.execute(exchanges.delete().where(exchanges.c.session_id == session_id))
            tx.execute(threads.delete().where(threads.c.session_id == session_id))
            tx.execute(sessions.delete().where(sessions.c.session_id == session_id))

    # ----- history -----

    def append(self, session_id: str, thread_id: str, exchange: Exchange, idempotency_key: str | None = None) -> bool:
        """Stores a finished turn; False (and nothing stored) when a turn with the same idempotency key is there."""
        with self._tx() as tx:
            if idempotency_key and self._find(tx, session_id, idempotency_key) is not None:
                return False
            if (
                tx.execute(
                    sa.select(threads.c.thread_id).where(
                        threads.c.session_id == session_id, threads.c.thread_id == thread_id
                    )
                ).first()
                is None
            ):
                tx.execute(
                    threads.insert().values(session_id=session_id, thread_id=thread_id, created_at=self._clock())
                )
            tx.execute(
                exchanges.insert().values(
                    session_id=session_id,
                    thread_id=thread_id,
                    turn_id=exchange.turn_id,
                    idempotency_key=idempotency_key or None,
                    user_text=exchange.user,
                    assistant_text=exchange.assistant,
                    interrupted=exchange.interrupted,
                    citations=list(exchange.citations),
                    at=exchange.at,
                )
            )
        return True

    def answered(self, session_id: str, idempotency_key: str) -> Exchange | None:
        """The turn stored under the client's idempotency key, if that turn was answered already."""
        with self._tx() as tx:
            return self._find(tx, session_id, idempotency_key)

    def history(self, session_id: str, thread_id: str | None = None, last: int = 6) -> list[Exchange]:
        if last <= 0:
            return []
        with self._tx() as tx:
            if thread_id is None:
                thread_id = tx.execute(
                    sa.select(sessions.c.thread_id).where(sessions.c.session_id == session_id)
                ).scalar_one_or_none()
            rows = tx.execute(
                sa.select(exchanges)
                .where(exchanges.c.session_id == session_id, exchanges.c.thread_id == thread_id)
                .order_by(exchanges.c.exchange_id.desc())
                .limit(last)
            ).all()
        return [self._exchange(row) for row in reversed(rows)]

    # ----- a user's data -----

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything kept about a user, JSON-ready: the identity, key records (never secrets), sessions, history."""
        user = self.user(user_id)
        with self._tx() as tx:
            owned = tx.execute(sa.select(sessions).where(sessions.c.owner == user_id)).all()
            exported = []
            for row in owned:
                rows = tx.execute(
                    sa.select(exchanges)
                    .where(exchanges.c.session_id == row.session_id)
                    .order_by(exchanges.c.exchange_id)
                ).all()
                names = tx.execute(
                    sa.select(threads.c.thread_id).where(threads.c.session_id == row.session_id)
                ).scalars()
                exported.append(
                    {
                        "session_id": row.session_id,
                        "personality": row.personality,
                        "current_thread": row.thread_id,
                        "created_at": row.created_at,
                        "threads": {
                            name: [
                                {
                                    "turn_id": e.turn_id,
                                    "user": e.user_text,
                                    "assistant": e.assistant_text,
                                    "interrupted": e.interrupted,
                                    "at": e.at,
                                    "citations": e.citations,
                                }
                                for e in rows
                                if e.thread_id == name
                            ]
                            for name in names
                        },
                    }
                )
        return {
            "user": user.__dict__,
            "keys": [key.__dict__ for key in self.keys(user_id)],
            "sessions": exported,
        }

    def delete_user_data(self, user_id: str) -> dict[str, int]:
        """Deletes a user's sessions, threads and history (the identity and keys stay); returns counts."""
        with self._tx() as tx:
            return self._delete_sessions(tx, user_id)

    # ----- backup -----

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table, JSON-ready (secrets only as their hashes), for `almquist backup`."""
        with self._tx() as tx:
            return {
                table.name: [dict(row._mapping) for row in tx.execute(sa.select(table))]
                for table in metadata.sorted_tables
            }

    def load(self, dump: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
        """Replaces the store's content with a `dump()` (in one transaction); returns rows per table."""
        with self._tx() as tx:
            for table in reversed(metadata.sorted_tables):
                tx.execute(table.delete())
            for table in metadata.sorted_tables:
                if dump.get(table.name):
                    tx.execute(table.insert(), dump[table.name])
        return {name: len(rows) for name, rows in dump.items()}

    # ----- internals -----

    def _info(self, tx: Connection, session_id: str, owner: str, touch: bool = False) -> SessionInfo:
        row = tx.execute(
            sa.select(sessions).where(sessions.c.session_id == session_id, sessions.c.owner == owner)
        ).first()
        if row is None:  # also another owner's session: the same answer as for an id that does not exist
            # no id in the message: Serve logs a failed call's message, and a session id is all it takes to resume
            raise NotFound("unknown session_id; start a new session with an empty session_id")
        now = self._clock()
        if touch:
            tx.execute(sessions.update().where(sessions.c.session_id == session_id).values(last_seen=now))
        names = tx.execute(
            sa.select(threads.c.thread_id).where(threads.c.session_id == session_id).order_by(threads.c.created_at)
        ).scalars()
        live = row.lease_holder if row.lease_expires_at is not None and row.lease_expires_at > now else None
        return SessionInfo(row.session_id, row.owner, row.personality, row.thread_id, tuple(names), live)

    def _find(self, tx: Connection, session_id: str, idempotency_key: str) -> Exchange | None:
        row = tx.execute(
            sa.select(exchanges).where(
                exchanges.c.session_id == session_id, exchanges.c.idempotency_key == idempotency_key
            )
        ).first()
        return self._exchange(row) if row else None

    @staticmethod
    def _exchange(row: Any) -> Exchange:
        return Exchange(
            row.turn_id, row.user_text, row.assistant_text, row.interrupted, row.at, tuple(row.citations or ())
        )

    def _delete_sessions(self, tx: Connection, user_id: str) -> dict[str, int]:
        owned = sa.select(sessions.c.session_id).where(sessions.c.owner == user_id).scalar_subquery()
        history = tx.execute(exchanges.delete().where(exchanges.c.session_id.in_(owned))).rowcount
        thread_count = tx.execute(threads.delete().where(threads.c.session_id.in_(owned))).rowcount
        session_count = tx.execute(sessions.delete().where(sessions.c.owner == user_id)).rowcount
        return {"sessions": session_count, "threads": thread_count, "exchanges": history}
