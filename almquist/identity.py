"""Who is calling: the bearer credential of a call, JWTs from an external OIDC issuer, and roles.

In: the `authorization: Bearer <credential>` metadata of a gRPC call (or the browser bridge's cookie). Out: an
`Identity` (user id, name, role). API keys are looked up in the durable store (by the ingress, through the
SessionStore actor, cached); a JWT is checked here against the issuer's published keys (PyJWT's JWKS client), and
its subject becomes a user id of our own (a hash of issuer and subject: stable, and no issuer's id format leaks
into ours).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jwt

from almquist.config.security import ROLES, JWTConfig
from almquist.errors import Unauthenticated

BEARER = "authorization"  # gRPC metadata keys are lower case


@dataclass(frozen=True)
class Identity:
    user_id: str
    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this identity's role is `role` or above it (user < curator < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def bearer(metadata: Any) -> str:
    """The credential in a call's `authorization: Bearer ...` metadata; Unauthenticated when there is none."""
    for key, value in metadata or ():
        if key.lower() == BEARER:
            scheme, _, credential = str(value).partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise Unauthenticated("the authorization metadata must read `Bearer <API key or token>`")
            return credential.strip()
    raise Unauthenticated(
        "this call needs a credential: send `authorization: Bearer <API key>` metadata "
        "(`almquist keys create` makes a key; the CLI and notebooks read ~/.almquist/credentials)"
    )


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and not credential.startswith("alm_")


class JWTVerifier:
    """Checks a JWT's signature (the issuer's JWKS), issuer, audience and times; yields the caller's Identity."""

    def __init__(self, config: JWTConfig) -> None:
        self._config = config
        self._jwks: jwt.PyJWKSet | None = None
        self._client: jwt.PyJWKClient | None = None
        if config.jwks_path:
            with open(config.jwks_path) as file:
                self._jwks = jwt.PyJWKSet.from_dict(json.load(file))
        else:
            assert config.jwks_url
            self._client = jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300)

    def identity(self, token: str) -> Identity:
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self._config.algorithms,
                audience=self._config.audience,
                issuer=self._config.issuer,
                leeway=self._config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired: get a new one from your identity provider") from None
        except (jwt.PyJWTError, KeyError, ValueError):
            # which check failed stays in the server: telling a caller narrows a forger's search
            raise Unauthenticated("the token was not accepted (signature, issuer, audience or times)") from None
        role = str(claims.get(self._config.role_claim, "user"))
        if role not in ROLES:
            raise Unauthenticated(f"the token's {self._config.role_claim} claim is not one of {', '.join(ROLES)}")
        user_id = hashlib.sha256(f"{claims['iss']}|{claims['sub']}".encode()).hexdigest()[:32]
        return Identity(user_id, f"oidc-{user_id[:12]}", role)

    def _signing_key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise KeyError(kid)
