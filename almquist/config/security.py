"""Typed configuration of who may call and how much: the durable state's location, credentials (API keys, JWTs
from an OIDC issuer) and per-identity quotas. Part of `AppConfig` (`state:`, `auth:`, `quotas:`)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator

from almquist.config.base import Strict
from almquist.config.models import default_cache_dir

ROLES = ("user", "curator", "admin")  # each role may do what the ones before it may
Role = Literal["user", "curator", "admin"]


def default_state_url() -> str:
    """ALMQUIST_STATE_URL, else a SQLite file beside the knowledge stores (~/.cache/almquist/state/almquist.db)."""
    return os.environ.get("ALMQUIST_STATE_URL") or f"sqlite:///{default_cache_dir() / 'state' / 'almquist.db'}"


class StateConfig(Strict):
    """The durable store: a SQLite file by default, a PostgreSQL server by URL (`postgresql+psycopg://...`)."""

    url: str = Field(default_factory=default_state_url, description="SQLAlchemy URL of the durable store.")
    password_env: str | None = Field(None, description="Env var holding the server's password, kept out of `url`.")


class JWTConfig(Strict):
    """Tokens from an external OIDC issuer, checked against its published keys (JWKS)."""

    issuer: str
    audience: str
    jwks_url: str | None = Field(None, description="The issuer's JWKS endpoint (OIDC discovery's `jwks_uri`).")
    jwks_path: str | None = Field(None, description="A JWKS file instead of a URL (air-gapped clusters, tests).")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    role_claim: str = Field("almquist_role", description="Claim naming the role; absent means `user`.")
    leeway_s: float = Field(30.0, ge=0, description="Clock skew allowed on exp/nbf/iat.")

    @model_validator(mode="after")
    def _one_key_source(self) -> JWTConfig:
        if bool(self.jwks_url) == bool(self.jwks_path):
            raise ValueError("give exactly one of jwks_url and jwks_path")
        return self


class AuthConfig(Strict):
    """How callers prove who they are: an API key or a JWT as `authorization: Bearer <credential>`."""

    jwt: JWTConfig | None = None
    key_cache_s: float = Field(
        10.0, ge=0, description="How long a replica trusts a key it looked up (a revocation takes this long)."
    )


class QuotaConfig(Strict):
    """Per identity: token buckets for turns and media calls, and caps on what one identity may hold at once.

    Buckets are kept by each ingress replica (no extra hop per turn): with N replicas an identity gets up to N times
    the rate, which is the price of the check costing nothing on the hot path.
    """

    turns_per_minute: float = Field(30.0, gt=0)
    turn_burst: int = Field(10, gt=0)
    media_per_minute: float = Field(30.0, gt=0)
    media_burst: int = Field(10, gt=0)
    max_streams: int = Field(4, gt=0, description="Live Converse/AskStream/media streams per identity.")
    max_sessions: int = Field(200, gt=0)
    max_threads_per_session: int = Field(50, gt=0)
    max_llm_turns: int = Field(2, gt=0, description="Turns one identity may have in the LLM at once (fair share).")
    exempt_roles: list[Role] = Field(
        default_factory=lambda: list[Role](["admin"]),
        description="Roles without rates or caps (the operators' own keys); the LLM's fair share still applies.",
    )
