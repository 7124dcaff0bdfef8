"""Per-identity rate limits and fair shares, kept in the process that admits calls (no extra hop per turn).

In: an identity and the kind of call (`turn`, `media`). Out: admission, or ResourceExhausted that says when to try
again (the ingress also sends it as `retry-after` metadata). `FairShare` caps the turns one identity has in the LLM
at once, so one client's streams queue behind each other rather than in front of everyone else's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from almquist.config.security import QuotaConfig
from almquist.errors import ResourceExhausted
from almquist.identity import Identity

_PLURAL = {"turn": "turns", "media": "media calls"}
RETRY_AFTER = "retry-after"  # the trailing metadata key, in seconds as an integer (HTTP's Retry-After)


class QuotaExceeded(ResourceExhausted):
    """Over a rate: carries how long to wait."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after_s))


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; a call takes one."""

    rate: float
    burst: int
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        if self.tokens < 0:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass(frozen=True)
class Caps:
    """What one identity may hold at once."""

    sessions: int
    threads_per_session: int
    streams: int


UNCAPPED = Caps(1_000_000, 1_000_000, 1_000_000)


class Quotas:
    """Token buckets per identity and kind of call, and the caps an identity's role gets (`exempt_roles`, the
    operators' own keys, get none: a notebook evaluating the knowledge base over gRPC must not be throttled)."""

    def __init__(self, config: QuotaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._rates = {
            "turn": (config.turns_per_minute / 60, config.turn_burst),
            "media": (config.media_per_minute / 60, config.media_burst),
        }

    def caps(self, identity: Identity) -> Caps:
        if identity.role in self._config.exempt_roles:
            return UNCAPPED
        config = self._config
        return Caps(config.max_sessions, config.max_threads_per_session, config.max_streams)

    def admit(self, identity: Identity, kind: str) -> None:
        if kind not in self._rates or identity.role in self._config.exempt_roles:
            return
        user_id = identity.user_id
        bucket = self._buckets.get((user_id, kind))
        if bucket is None:
            rate, burst = self._rates[kind]
            bucket = self._buckets[(user_id, kind)] = TokenBucket(rate, burst)
            if len(self._buckets) > 100_000:  # forget idle identities rather than grow without end
                self._buckets.clear()
                self._buckets[(user_id, kind)] = bucket
        wait = bucket.take(self._clock())
        if wait > 0:
            per_minute = self._rates[kind][0] * 60
            raise QuotaExceeded(
                f"too many {_PLURAL[kind]}: the limit is {per_minute:g} a minute; try again in {math.ceil(wait)} s",
                wait,
            )


class FairShare:
    """At most `limit` turns per identity in the LLM at once; the rest of that identity's turns wait their turn."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def turn(self, user_id: str) -> AsyncIterator[None]:
        slot = self._slots.setdefault(user_id, asyncio.Semaphore(self._limit))
        self._users[user_id] = self._users.get(user_id, 0) + 1
        try:
            async with slot:
                yield
        finally:
            self._users[user_id] -= 1
            if self._users[user_id] == 0:
                del self._users[user_id], self._slots[user_id]
