"""The durable state: identities and API keys, sessions with owners and stream leases, threads, history and each
answer's cited entities, in one store (SQLite by default, PostgreSQL by URL; SQLAlchemy Core, Alembic migrations)."""

from almquist.state.store import ApiKey, Exchange, SessionInfo, StateStore, User, schema_head

__all__ = ["ApiKey", "Exchange", "SessionInfo", "StateStore", "User", "schema_head"]
