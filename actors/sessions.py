"""`SessionStore`: per-user sessions, their conversation threads and personality, in one named Ray actor.

Every ingress replica talks to the same actor (`get_session_store()`), so a session survives a replica restart
and one session can never have two live Converse streams: `claim_stream` is the lock.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import ray

from almquist.errors import FailedPrecondition, NotFound, ResourceExhausted

SESSION_STORE_NAME = "almquist_sessions"
SESSION_STORE_NAMESPACE = "almquist"


@dataclass(frozen=True)
class Exchange:
    """One user turn and the assistant's answer to it."""

    turn_id: str
    user: str
    assistant: str
    interrupted: bool = False
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    user_id: str
    personality: str
    thread_id: str
    threads: tuple[str, ...]
    stream_id: str | None


@dataclass
class _Session:
    session_id: str
    user_id: str
    personality: str
    thread_id: str
    threads: dict[str, list[Exchange]]
    stream_id: str | None = None
    last_seen: float = field(default_factory=time.time)

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.session_id, self.user_id, self.personality, self.thread_id, tuple(self.threads), self.stream_id
        )


class SessionStore:
    """Sessions in memory, least recently used evicted first (never one with a live stream)."""

    def __init__(self, max_sessions: int = 10_000, max_exchanges_per_thread: int = 500) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_exchanges = max_exchanges_per_thread

    def create(self, user_id: str, personality: str) -> SessionInfo:
        self._evict()
        session_id, thread_id = uuid.uuid4().hex, uuid.uuid4().hex[:12]
        session = _Session(session_id, user_id or "anonymous", personality, thread_id, {thread_id: []})
        self._sessions[session_id] = session
        return session.info()

    def get(self, session_id: str) -> SessionInfo:
        return self._get(session_id).info()

    def open_thread(self, session_id: str, thread_id: str) -> SessionInfo:
        """Switches the session to `thread_id`, creating the thread if it is new."""
        session = self._get(session_id)
        session.threads.setdefault(thread_id, [])
        session.thread_id = thread_id
        return session.info()

    def set_personality(self, session_id: str, personality: str) -> SessionInfo:
        session = self._get(session_id)
        session.personality = personality
        return session.info()

    def claim_stream(self, session_id: str, stream_id: str) -> SessionInfo:
        session = self._get(session_id)
        if session.stream_id not in (None, stream_id):
            raise FailedPrecondition(
                f"session {session_id} already has a live Converse stream; close it before opening another"
            )
        session.stream_id = stream_id
        return session.info()

    def release_stream(self, session_id: str, stream_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None and session.stream_id == stream_id:
            session.stream_id = None

    def append(self, session_id: str, thread_id: str, exchange: Exchange) -> None:
        thread = self._get(session_id).threads.setdefault(thread_id, [])
        thread.append(exchange)
        del thread[: -self._max_exchanges]

    def history(self, session_id: str, thread_id: str | None = None, last: int = 6) -> list[Exchange]:
        session = self._get(session_id)
        thread = session.threads.get(thread_id or session.thread_id, [])
        return thread[-last:] if last > 0 else []

    def count(self) -> int:
        return len(self._sessions)

    def _get(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"unknown session {session_id!r}; start a new one with an empty session_id")
        session.last_seen = time.time()
        self._sessions.move_to_end(session_id)
        return session

    def _evict(self) -> None:
        while len(self._sessions) >= self._max_sessions:
            idle = next((sid for sid, s in self._sessions.items() if s.stream_id is None), None)
            if idle is None:
                raise ResourceExhausted(f"all {self._max_sessions} sessions have live streams; try again later")
            del self._sessions[idle]


SessionStoreActor = ray.remote(num_cpus=0, max_restarts=-1)(SessionStore)


def get_session_store():
    """The cluster's one `SessionStore` actor, created on first use."""
    return SessionStoreActor.options(
        name=SESSION_STORE_NAME, namespace=SESSION_STORE_NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()
