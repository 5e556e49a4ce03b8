"""How the demo's resource servers (``accounts``, ``bank``) verify the credential the gateway
injects: a downstream access token Tether minted (RFC 9068), checked against Tether's JWKS as
any third party would — with the JOSE library itself, depending on no part of Tether.

``sub`` names the person the agent acts for, ``act`` the agent instance (RFC 8693 §4.1); a
token without ``act`` is the agent acting for itself, which a server of a person's own data
refuses (:meth:`TokenVerifier.person`).
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError, SecurityWarning
from joserfc.jwk import KeySet

__all__ = ["GATEWAY_ONLY", "NO_PERSON", "Headers", "JwksUnavailable", "TokenVerifier", "ToolError"]

Headers = Mapping[str, str]
GATEWAY_ONLY = "this server answers only through Tether's gateway"
NO_PERSON = "refused: this server serves a person's own data only to an agent acting for them"
#: What Tether signs downstream tokens with (ES256), and the Ed25519 algorithm under both names.
ALGORITHMS = ("ES256", "EdDSA", "Ed25519")
#: RFC 9068 §2.1 (and RFC 8725 §3.11's media-type form).
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
MAX_TOKEN = 8192
MAX_JWKS = 256 * 1024
#: At most one fetch of the JWKS for an unknown ``kid`` this often (seconds).
REFETCH_INTERVAL = 10.0
LEEWAY = 5


class ToolError(Exception):
    """A tool call that ends in a tool error (``isError``); the message is what the caller
    reads, so it never holds a secret."""


class JwksUnavailable(Exception):
    """Tether's JWKS could not be fetched or read."""


def _fetch_jwks(url: str) -> KeySet:
    """The key set at ``url`` (blocking)."""
    try:
        response = httpx.get(url, timeout=5.0)
        response.raise_for_status()
        if len(response.content) > MAX_JWKS:
            raise JwksUnavailable(f"{url}: the key set is over {MAX_JWKS} bytes")
        return KeySet.import_key_set(response.json())
    except (httpx.HTTPError, JoseError, ValueError, KeyError, TypeError) as error:
        raise JwksUnavailable(f"{url}: {error}") from None


def _bearer(headers: Headers) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ToolError(f"refused: no credential: {GATEWAY_ONLY}")
    if len(token) > MAX_TOKEN:
        raise ToolError(f"refused: invalid token: over {MAX_TOKEN} characters")
    return token


class TokenVerifier:
    """Verifies the downstream access tokens Tether mints for one audience (RFC 9068 §4):
    signature by a key of Tether's JWKS (fetched again, at most every
    ``REFETCH_INTERVAL`` seconds, for an unknown ``kid``), ``typ`` ``at+jwt``, ``iss``,
    ``aud``, ``exp``, ``nbf``, ``iat`` and the claims RFC 9068 §2.2 requires. Every failure
    is a :class:`ToolError` ``refused: <reason>``."""

    def __init__(self, *, keys: KeySet, jwks_url: str, issuer: str, audience: str) -> None:
        self._keys = keys
        self._jwks_url = jwks_url
        self._last_refetch: float | None = None
        self._claims = jwt.JWTClaimsRegistry(
            leeway=LEEWAY,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
            client_id={"essential": True},
        )

    @classmethod
    def fetch(cls, *, jwks_url: str, issuer: str, audience: str) -> TokenVerifier:
        """A verifier with the key set fetched from ``jwks_url`` now (``JwksUnavailable``)."""
        keys = _fetch_jwks(jwks_url)
        return cls(keys=keys, jwks_url=jwks_url, issuer=issuer, audience=audience)

    async def person(self, headers: Headers) -> str:
        """The person the request's token says the agent acts for (its ``sub``); refused
        when the agent acts for itself (no ``act``)."""
        claims = await self.verify(_bearer(headers))
        act = claims.get("act")
        if act is None:
            raise ToolError(NO_PERSON)
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
            raise ToolError("refused: invalid token: its act claim names no actor")
        subject: str = claims["sub"]
        return subject

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once every check passed."""
        try:
            try:
                decoded = self._decode(token)
            except InvalidKeyIdError:
                if not await self._refetch():
                    raise
                decoded = self._decode(token)
            if str(decoded.header.get("typ", "")).lower() not in TOKEN_TYPES:
                raise ToolError("refused: invalid token: its typ is not at+jwt")
            self._claims.validate(decoded.claims)
        except InvalidKeyIdError:
            raise ToolError("refused: invalid token: its key is not in Tether's JWKS") from None
        except JoseError as error:
            reason = error.description or error.error.replace("_", " ")
            raise ToolError(f"refused: invalid token: {reason}") from None
        return decoded.claims

    def _decode(self, token: str) -> jwt.Token:
        with warnings.catch_warnings():
            # joserfc flags the name "EdDSA" as deprecated by RFC 9864 (Ed25519 is the new one).
            warnings.simplefilter("ignore", SecurityWarning)
            try:
                return jwt.decode(token, self._keys, algorithms=ALGORITHMS)
            except (ValueError, TypeError, KeyError) as error:
                raise JoseError("the token is malformed") from error

    async def _refetch(self) -> bool:
        """Fetch the key set again unless that was done lately; whether it was."""
        now = time.monotonic()
        if self._last_refetch is not None and now - self._last_refetch < REFETCH_INTERVAL:
            return False
        self._last_refetch = now
        try:
            self._keys = await anyio.to_thread.run_sync(
                functools.partial(_fetch_jwks, self._jwks_url)
            )
        except JwksUnavailable as error:
            print(f"JWKS not refreshed: {error}", file=sys.stderr, flush=True)
            return False
        return True
