"""`SessionStore`: the one Ray actor through which the serving path reads and writes the durable state.

In: calls from every ingress replica and the browser bridge: sessions (each with an owner), threads, personality,
stream leases, history with idempotency keys, and credential lookups. Out: the store's records. The state itself
lives in `almquist.state.StateStore` (a SQLite file by default, PostgreSQL by URL), so when this actor dies Ray
restarts it and it reopens the same store: nothing acknowledged is lost. One actor keeps an embedded SQLite file
in one process on one node, wherever the replicas that use it run.
"""

from __future__ import annotations

from typing import Any

import ray

from almquist.config.security import StateConfig
from almquist.state import Exchange, SessionInfo, StateStore, User

SESSION_STORE_NAME = "almquist_sessions"
SESSION_STORE_NAMESPACE = "almquist"
INTERNAL_USER = "internal"  # the owner of calls made by handle from inside the cluster (tests, notebooks on Ray)

__all__ = ["Exchange", "SessionInfo", "SessionStore", "User", "get_session_store"]


class SessionStore:
    """The durable store's serving-path operations; every method commits before it returns."""

    def __init__(self, config: StateConfig | dict[str, Any] | None = None) -> None:
        self._store = StateStore(StateConfig.model_validate(config or {}))
        self._internal = self._store.ensure_user(INTERNAL_USER, "admin")

    def internal_user(self) -> User:
        return self._internal

    # ----- identities -----

    def user_for_key(self, credential: str) -> User | None:
        return self._store.user_for_key(credential)

    def external_user(self, user_id: str, name: str, role: str) -> User:
        return self._store.ensure_external_user(user_id, name, role)

    def redeem_login_link(self, token: str) -> tuple[User, str] | None:
        """A one-time login link's user and a new API key for the browser that redeemed it."""
        user = self._store.redeem_login_link(token)
        if user is None:
            return None
        _, credential = self._store.create_key(user.user_id, "browser login")
        return user, credential

    # ----- sessions -----

    def create(self, owner: str, personality: str, max_sessions: int = 1_000_000) -> SessionInfo:
        return self._store.create_session(owner, personality, max_sessions)

    def get(self, session_id: str, owner: str) -> SessionInfo:
        return self._store.session(session_id, owner)

    def open_thread(self, session_id: str, owner: str, thread_id: str, max_threads: int = 1_000_000) -> SessionInfo:
        return self._store.open_thread(session_id, owner, thread_id, max_threads)

    def set_personality(self, session_id: str, owner: str, personality: str) -> SessionInfo:
        return self._store.set_personality(session_id, owner, personality)

    def claim_stream(
        self, session_id: str, owner: str, stream_id: str, ttl_s: float, max_streams: int = 1_000_000
    ) -> SessionInfo:
        return self._store.claim_stream(session_id, owner, stream_id, ttl_s, max_streams)

    def renew_stream(self, session_id: str, stream_id: str, ttl_s: float) -> bool:
        return self._store.renew_stream(session_id, stream_id, ttl_s)

    def release_stream(self, session_id: str, stream_id: str) -> None:
        self._store.release_stream(session_id, stream_id)

    # ----- history -----

    def append(self, session_id: str, thread_id: str, exchange: Exchange, idempotency_key: str | None = None) -> bool:
        return self._store.append(session_id, thread_id, exchange, idempotency_key)

    def answered(self, session_id: str, idempotency_key: str) -> Exchange | None:
        return self._store.answered(session_id, idempotency_key)

    def history(self, session_id: str, thread_id: str | None = None, last: int = 6) -> list[Exchange]:
        return self._store.history(session_id, thread_id, last)

    # ----- a user's data -----

    def export_user(self, user_id: str) -> dict[str, Any]:
        return self._store.export_user(user_id)

    def delete_user_data(self, user_id: str) -> dict[str, int]:
        return self._store.delete_user_data(user_id)

    def delete_user(self, user_id: str) -> dict[str, int]:
        return self._store.delete_user(user_id)

    def user(self, name_or_id: str) -> User:
        return self._store.user_named(name_or_id)

    def count(self) -> int:
        return self._store.count_sessions()


# max_task_retries: a call in flight when the actor dies is run again once Ray restarted it (writes are idempotent:
# history appends carry a key)
SessionStoreActor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)(SessionStore)


def get_session_store(config: StateConfig | dict[str, Any] | None = None, name: str = SESSION_STORE_NAME) -> Any:
    """The cluster's one `SessionStore` actor, created on first use (with `config`: where the durable store is).
    Another `name` is another actor (a test's own, beside a running stack's)."""
    state = StateConfig.model_validate(config or {})
    # max_concurrency: calls are short transactions; several at once keep one slow commit from queueing every turn
    return SessionStoreActor.options(
        name=name,
        namespace=SESSION_STORE_NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        max_concurrency=8,
    ).remote(state.model_dump())
