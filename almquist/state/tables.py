"""The durable state's tables (SQLAlchemy Core): one schema for SQLite (the embedded default) and PostgreSQL.

Identities and keys (the security issue), sessions with their owners, threads, history and stream leases (the
reliability issue), and each answer's cited entities (the answers issue) live here together, so that deleting a
user, exporting their data or restoring a backup is one transaction over one store. The schema's version is
Alembic's (almquist/state/migrations); a change to these tables comes with a migration.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # user | curator | admin
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),  # public part of the key, shown in listings
    Column("user_id", String(64), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("secret_sha256", String(64), nullable=False),  # the secret is 256 random bits: a plain hash suffices
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

login_links = Table(  # one-time links `almquist up` prints for the browser page
    "login_links",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("used_at", Float, nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("owner", String(64), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False, index=True),
    Column("personality", String(64), nullable=False),
    Column("thread_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    # the live stream's lease: whoever holds it renews it; once it lapses another stream of the owner may claim it
    Column("lease_holder", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
)

threads = Table(
    "threads",
    metadata,
    Column("session_id", String(64), ForeignKey("sessions.session_id", ondelete="CASCADE"), primary_key=True),
    Column("thread_id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
)

exchanges = Table(
    "exchanges",
    metadata,
    Column("exchange_id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id", ondelete="CASCADE"), nullable=False),
    Column("thread_id", String(64), nullable=False),
    Column("turn_id", String(64), nullable=False),
    Column("idempotency_key", String(128), nullable=True),  # the client's key: a retried turn is stored once
    Column("user_text", Text, nullable=False),
    Column("assistant_text", Text, nullable=False),
    Column("interrupted", Boolean, nullable=False, default=False),
    Column("citations", JSON, nullable=False, default=list),  # the entities and facts the answer cited
    Column("at", Float, nullable=False),
    UniqueConstraint("session_id", "idempotency_key", name="uq_exchange_idempotency"),
    Index("ix_exchanges_thread", "session_id", "thread_id", "exchange_id"),
)
