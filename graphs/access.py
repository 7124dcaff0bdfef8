"""Who may call which RPC: every call through the gRPC proxy is authenticated, checked against its role and its
quota before the service that owns it sees it.

In: an RPC's name and its gRPC context (the `authorization: Bearer ...` metadata). Out: the caller's `Identity`,
set for the service in `current_identity()`, or the call ends with UNAUTHENTICATED, PERMISSION_DENIED or
RESOURCE_EXHAUSTED (with `retry-after` metadata). API keys are looked up through the SessionStore actor and
trusted for `auth.key_cache_s`, so a turn costs no extra hop once its key is known; JWTs are verified in process.

A call made by handle from inside the cluster (no gRPC context: tests, notebooks on Ray) acts as the cluster's
internal admin user: reaching a handle already takes the cluster's own credential (Ray's token auth).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from almquist.config.security import AuthConfig, QuotaConfig
from almquist.errors import AlmquistError, PermissionDenied, Unauthenticated
from almquist.identity import Identity, JWTVerifier, bearer, looks_like_jwt
from almquist.quotas import RETRY_AFTER, FairShare, QuotaExceeded, Quotas
from graphs.rpc import abort

_CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("almquist_identity", default=None)


@dataclass(frozen=True)
class Rule:
    """Who may call an RPC (the lowest role) and which quota it draws on (None: none, or counted per turn inside)."""

    role: str | None = "user"  # None: anyone, without a credential (the standard Health service)
    quota: str | None = None


# Every RPC not named here needs the `user` role and no quota of its own. Converse draws a `turn` per turn inside.
RULES: dict[str, Rule] = {
    "Ask": Rule(quota="turn"),
    "AskStream": Rule(quota="turn"),
    "Query": Rule(quota="turn"),
    "Rollback": Rule("admin"),
    "DeleteUser": Rule("admin"),
    "Check": Rule(None),
    "Watch": Rule(None),
    "List": Rule(None),
    **{
        name: Rule(quota="media")
        for name in (
            "Embed",
            "Transcribe",
            "Synthesize",
            "Detect",
            "EstimateDepth",
            "GenerateImage",
            "GenerateMusic",
            "Separate",
            "DetectSpeech",
            "Diarize",
            "RecognizeVoiceEmotion",
            "AnalyzeMusic",
            "Segment",
            "RecognizeGestures",
            "DetectSceneChanges",
        )
    },
}


def rule_for(rpc: str) -> Rule:
    return RULES.get(rpc, Rule())


def current_identity() -> Identity:
    """The identity of the call being served (set by `Access.guard`)."""
    identity = _CURRENT.get()
    if identity is None:
        raise Unauthenticated("no identity for this call")
    return identity


class Access:
    """Authenticates calls (API keys through the SessionStore actor, JWTs in process), applies `RULES` and quotas."""

    def __init__(self, sessions: Any, auth: AuthConfig, quotas: QuotaConfig) -> None:
        self._sessions = sessions
        self._auth = auth
        self._jwt = JWTVerifier(auth.jwt) if auth.jwt else None
        self._known: dict[str, tuple[Identity, float]] = {}  # sha256(credential) -> identity, trusted until
        self._internal: Identity | None = None
        self.quotas = Quotas(quotas)
        self.fair_share = FairShare(quotas.max_llm_turns)

    async def identify(self, grpc_context: Any) -> Identity:
        if grpc_context is None:
            if self._internal is None:
                user = await self._sessions.internal_user.remote()
                self._internal = Identity(user.user_id, user.name, user.role)
            return self._internal
        credential = bearer(grpc_context.invocation_metadata())
        digest = hashlib.sha256(credential.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        identity = await self._look_up(credential)
        if len(self._known) > 50_000:
            self._known.clear()
        self._known[digest] = (identity, time.monotonic() + self._auth.key_cache_s)
        return identity

    async def _look_up(self, credential: str) -> Identity:
        if looks_like_jwt(credential):
            if self._jwt is None:
                raise Unauthenticated("this server takes API keys, not tokens: send `Bearer <API key>`")
            # in a thread: the JWKS client fetches the issuer's keys over HTTP when it meets a new key id
            identity = await asyncio.to_thread(self._jwt.identity, credential)
            await self._sessions.external_user.remote(identity.user_id, identity.name, identity.role)
            return identity
        user = await self._sessions.user_for_key.remote(credential)
        if user is None:
            raise Unauthenticated("the API key is not valid (unknown or revoked): ask an admin for a new one")
        return Identity(user.user_id, user.name, user.role)

    async def admit(self, rpc: str, grpc_context: Any) -> Identity | None:
        """The caller's identity once it may make this call; raises what the client should be told otherwise."""
        rule = rule_for(rpc)
        if rule.role is None:
            return None
        identity = await self.identify(grpc_context)
        if not identity.may(rule.role):
            raise PermissionDenied(f"{rpc} needs the {rule.role} role; you are a {identity.role}")
        if rule.quota is not None:
            self.quotas.admit(identity, rule.quota)
        return identity

    def guard(self, rpc: str, method: Callable[..., Any], server_streaming: bool) -> Callable[..., Any]:
        """`method` behind `admit`: the call's identity is in `current_identity()` while it runs."""

        async def _admitted(grpc_context: Any) -> None:
            try:
                _CURRENT.set(await self.admit(rpc, grpc_context))
            except QuotaExceeded as error:
                if grpc_context is not None:
                    grpc_context.set_trailing_metadata([(RETRY_AFTER, str(max(1, round(error.retry_after_s))))])
                abort(grpc_context, error)
            except AlmquistError as error:
                abort(grpc_context, error)

        if server_streaming:

            async def streamed(request: Any, grpc_context: Any = None) -> AsyncIterator[Any]:
                await _admitted(grpc_context)
                async for item in method(request, grpc_context):
                    yield item

            streamed.__name__ = rpc
            return streamed

        async def unary(request: Any, grpc_context: Any = None) -> Any:
            await _admitted(grpc_context)
            return await method(request, grpc_context)

        unary.__name__ = rpc
        return unary
