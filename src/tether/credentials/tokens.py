"""The downstream token engine: short-lived, audience-restricted JWTs for internal APIs.

An internal API (a resource server) that trusts Tether verifies these tokens with Tether's JWKS
(``/.well-known/jwks.json``); no shared secret is handed out and nothing is created anywhere.
The token follows the JWT profile for OAuth 2.0 access tokens (RFC 9068 §2): header ``typ``
``at+jwt`` (§2.1), claims ``iss`` (Tether's issuer URL), ``sub`` (the SPIFFE ID of the agent
instance holding the lease — or, for a lease taken under a person's grant, that person: the
resource owner, §2.2 — with the instance in ``act``, RFC 8693 §4.1, as in Tether's own
delegated tokens), ``client_id`` (the agent's SPIFFE ID), ``aud`` (the role's
``options["audience"]``), ``iat``, ``nbf``, ``exp`` (the lease's expiry), ``jti`` (the lease
id) and, if the role names one, ``scope`` (§2.2.3, RFC 6749 §3.3).

Why it is built this way:

* The ``typ`` tells it from a JWT-SVID (``JWT``), and a role may not name an audience Tether's
  own tokens are meant for (Tether itself, anything under its issuer URL, the audiences
  JWT-SVIDs may carry): a downstream token must never pass where an agent's identity token
  is expected, even at a verifier that ignores ``typ``.
* Signed by the key ring's token-signing key through :mod:`tether.crypto` (no JOSE library
  here). A retired key stays in the JWKS only for the longest JWT-SVID lifetime plus a margin,
  so a role's ``max_ttl`` may not exceed that lifetime (``max_ttl`` of :func:`open_token_engine`):
  a longer-lived token would stop verifying after a key rotation.
* A JWT cannot be extended: :meth:`DownstreamTokenEngine.extend` refuses (``InvalidInput``,
  "take a new lease"), so a renewed lease never claims more than its token. Nor recalled:
  revoking ends the lease record but the token verifies until ``exp`` — resource servers
  should keep TTLs short (that is what the lease is for) and may check ``jti`` against
  ``GET /v1/leases/{id}`` where a revocation must take effect at once.

Example::

    >>> validate_token_settings({})
    {}
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import datetime
from types import MappingProxyType

from tether._internal.clock import Clock
from tether.credentials.engine import UnmanagedLogin
from tether.credentials.models import EngineConfig, IssuedCredential, RoleTemplate
from tether.crypto.keyring import KeyRing
from tether.errors import InvalidInput
from tether.identity.names import agent_spiffe_id, parse_agent_spiffe_id, parse_spiffe_id

__all__ = [
    "TOKEN_KIND",
    "TOKEN_TYPE",
    "DownstreamTokenEngine",
    "open_token_engine",
    "validate_token_settings",
]

TOKEN_KIND = "token"
#: RFC 9068 §2.1: the ``typ`` header of a JWT access token.
TOKEN_TYPE = "at+jwt"
MAX_AUDIENCE = 1024
MAX_SCOPE = 1024
_OPTIONS = frozenset({"audience", "scope"})
#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: No whitespace and no control characters in an audience.
_AUDIENCE = re.compile(r"[\x21-\x7e\u00a0-\U0010ffff]+")


def validate_token_settings(settings: Mapping[str, object]) -> dict[str, object]:
    """A token engine has no settings: ``{}``, or ``InvalidInput`` for any key."""
    if unknown := sorted(settings):
        raise InvalidInput(
            f"unknown token settings: {', '.join(unknown)} (a token engine takes none)",
            details={"unknown": unknown},
        )
    return {}


def _invalid(role: RoleTemplate, rule: str) -> InvalidInput:
    return InvalidInput(f"role {role.name!r}: {rule}", details={"role": role.name, "rule": rule})


def _audience(role: RoleTemplate, reserved: Collection[str], issuer: str) -> str:
    audience = role.options.get("audience")
    if (
        not isinstance(audience, str)
        or len(audience) > MAX_AUDIENCE
        or not _AUDIENCE.fullmatch(audience)
    ):
        raise _invalid(role, f"options.audience is 1 to {MAX_AUDIENCE} characters, no spaces")
    if audience in reserved or audience == issuer or audience.startswith(issuer + "/"):
        raise _invalid(
            role, "options.audience may not be Tether or an audience of its agent tokens"
        )
    return audience


def _scope(role: RoleTemplate) -> str | None:
    scope = role.options.get("scope")
    if scope is None:
        return None
    if not isinstance(scope, str) or len(scope) > MAX_SCOPE:
        raise _invalid(role, f"options.scope is a string of at most {MAX_SCOPE} characters")
    tokens = scope.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise _invalid(role, "options.scope is scope tokens separated by single spaces")
    return " ".join(dict.fromkeys(tokens))


class DownstreamTokenEngine:
    """Mints one JWT per lease for the role's audience; see the module."""

    def __init__(
        self,
        *,
        keyring: KeyRing,
        clock: Clock,
        issuer: str,
        audiences: Mapping[str, tuple[str, str | None]],
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._issuer = issuer
        #: Each role's audience and scope, checked at open.
        self._audiences = MappingProxyType(dict(audiences))

    @property
    def kind(self) -> str:
        return TOKEN_KIND

    def credential_name(self, lease_id: str) -> str:
        """The lease id, which is also the token's ``jti``."""
        if not isinstance(lease_id, str) or not lease_id:
            raise InvalidInput("a lease id is a non-empty string", details={"rule": "id"})
        return lease_id

    async def create(
        self,
        *,
        credential: str,
        role: RoleTemplate,
        expires_at: datetime,
        holder: str,
        user: str | None = None,
    ) -> IssuedCredential:
        """A token for ``holder`` (an instance SPIFFE ID) — or, when the lease acts for
        ``user``, a token whose ``sub`` is that person and whose ``act`` names the instance —
        expiring with the lease."""
        found = self._audiences.get(role.name)
        if found is None:
            raise InvalidInput(f"role {role.name!r} is not a role of this engine")
        audience, scope = found
        ref = parse_agent_spiffe_id(holder, trust_domain=parse_spiffe_id(holder).trust_domain)
        if ref.instance_id is None:
            raise InvalidInput("a downstream token is for an agent instance")
        now = self._clock.timestamp()
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": holder if user is None else user,
            "client_id": agent_spiffe_id(parse_spiffe_id(holder).trust_domain, ref.name),
            "aud": audience,
            "iat": now,
            "nbf": now,
            # Never past the lease: whole seconds, rounded down.
            "exp": math.floor(expires_at.timestamp()),
            "jti": credential,
        }
        if user is not None:
            claims["act"] = {"sub": holder}
        if scope is not None:
            claims["scope"] = scope
        token = self._keyring.signer.sign_jwt(claims, typ=TOKEN_TYPE)
        details = {"token_type": "Bearer", "audience": audience, "scope": scope}
        return IssuedCredential(
            credential=credential, secret=token, details=MappingProxyType(details)
        )

    async def extend(self, *, credential: str, role: RoleTemplate, expires_at: datetime) -> None:
        raise InvalidInput(
            "a downstream token cannot be extended: take a new lease",
            details={"rule": "token leases are not renewable"},
        )

    async def revoke(self, *, credential: str, role: RoleTemplate) -> None:
        """Nothing to remove: the token verifies until it expires (see the module)."""

    async def managed(self) -> set[str]:
        return set()

    async def unmanaged_logins(self) -> list[UnmanagedLogin]:
        return []

    async def close(self) -> None:
        """Nothing is held open."""


async def open_token_engine(
    config: EngineConfig,
    secret: str | None,
    *,
    keyring: KeyRing,
    clock: Clock,
    issuer: str,
    reserved_audiences: Collection[str],
    max_ttl: int,
) -> DownstreamTokenEngine:
    """The engine of ``config``; bind the keyword arguments to make an
    :data:`~tether.credentials.engine.EngineFactory`. ``InvalidInput`` for settings, a secret,
    unknown options, an audience that is Tether's own, or a ``max_ttl`` past ``max_ttl``."""
    if config.kind != TOKEN_KIND:
        raise InvalidInput(f"engine {config.name!r} is not a token engine")
    validate_token_settings(config.settings)
    if secret is not None:
        raise InvalidInput("a token engine takes no secret: Tether signs with its own key")
    audiences: dict[str, tuple[str, str | None]] = {}
    for role in config.roles.values():
        if unknown := sorted(set(role.options) - _OPTIONS):
            raise _invalid(role, f"unknown options {', '.join(unknown)} (audience, scope)")
        if role.group is not None:
            raise _invalid(role, "a token role takes no group")
        if role.max_ttl > max_ttl:
            raise _invalid(
                role, f"max_ttl is at most {max_ttl} s (how long a retired key stays published)"
            )
        audiences[role.name] = (_audience(role, reserved_audiences, issuer), _scope(role))
    return DownstreamTokenEngine(keyring=keyring, clock=clock, issuer=issuer, audiences=audiences)
