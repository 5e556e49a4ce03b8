"""External OpenID providers: people who sign in elsewhere (Keycloak, Okta, Entra ID, IBM
Verify, another Tether), known to Tether by issuer URL.

For each configured provider (``issuer``, the ``audience`` Tether is at that provider — its
client id there —, and a short ``name``):

* **discovery** (OpenID Connect Discovery 1.0 §4): ``<issuer>/.well-known/openid-configuration``
  is read once; its ``issuer`` must be exactly the configured one (§4.3), its ``jwks_uri`` is
  where the signing keys are;
* **keys** are cached; a token signed with a key id the cache does not hold makes it read the
  key set again — at most once every :data:`MIN_REFRESH` seconds per provider, one read at a
  time however many requests wait on it — so made-up key ids cannot turn into a fetch storm.
  A cached set older than :data:`MAX_AGE` is read again on its next use (if the provider
  cannot be reached then, the keys it published stay in use until it can);
* **tokens** are verified with an allow-listed algorithm, exact ``iss``, ``aud`` naming the
  configured audience, ``exp``/``nbf``/``iat`` with 30 s of leeway, a bounded lifetime;
* **people** are Tether users named ``<sub>@<provider name>`` — the provider's ``sub``, which
  it never reassigns, not ``preferred_username``, which a person may choose and change (OpenID
  Connect Core §5.7), so nobody can take another's name by choosing it first — created the
  first time they are seen (``user.created`` by ``system:federation``, the preferred name as
  the display name) and found again by (issuer, ``sub``) afterwards. A disabled Tether user
  is refused whatever the provider says. A token that names an actor (``act``) is the
  provider's delegation, not the person: refused.

The HTTP reads are injected (:data:`Fetch`): the domain does no I/O of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.crypto.jwk import PublicJwk, parse_key_set
from tether.crypto.jwt import UnverifiedToken, VerifiedClaims, verify_jwt
from tether.delegation.models import User, UserState
from tether.delegation.users import check_user_name
from tether.errors import Error, Unauthenticated, UserExists
from tether.store.interfaces import UserStore

__all__ = ["ALGORITHMS", "ExternalProvider", "Federation", "Fetch", "ProviderKeys", "reachable"]

#: What an external provider's tokens may be signed with (never ``none`` or HS*).
ALGORITHMS = frozenset({"RS256", "PS256", "ES256", "ES384", "EdDSA"})
MIN_REFRESH = 30.0
MAX_AGE = 600.0
#: The longest-lived external token accepted (an hour).
MAX_LIFETIME = 3600
LEEWAY = 30
_LOCAL = re.compile(r"[^a-z0-9._-]+")

#: GET a URL and return its JSON object (the edge provides it, with its own limits).
Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, kw_only=True)
class ExternalProvider:
    name: str
    issuer: str
    audience: str


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def reachable(url: str, *, issuer: str) -> bool:
    """Whether Tether may read ``url`` for the provider ``issuer``: https — or plain http on a
    loopback address when the provider itself is on loopback (a test or a sidecar), never
    otherwise, so a provider's documents cannot point Tether at its own loopback services."""
    parts, home = urlsplit(url), urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and _loopback(parts.hostname) and _loopback(home.hostname)


class ProviderKeys:
    """One provider's signing keys, read through discovery and cached (see the module)."""

    def __init__(
        self,
        provider: ExternalProvider,
        fetch: Fetch,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._fetch = fetch
        self._monotonic = monotonic
        self._keys: dict[str, PublicJwk] = {}
        self._meta: Mapping[str, Any] | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        #: How many times the key set was read (for tests and metrics).
        self.reads = 0

    async def key(self, kid: str) -> PublicJwk | None:
        found = self._keys.get(kid)
        if found is not None and not self._stale(MAX_AGE):
            return found
        async with self._lock:  # one read at a time; the waiters use its result
            found = self._keys.get(kid)
            if found is not None and not self._stale(MAX_AGE):
                return found
            if self._stale(MIN_REFRESH):
                try:
                    await self._read()
                except Error:
                    if found is None:
                        raise
                    # The provider is unreachable: a key it published stays trusted until
                    # it can be read again (tokens in date keep working through an outage).
            return self._keys.get(kid)

    def _stale(self, age: float) -> bool:
        return self._read_at is None or self._monotonic() - self._read_at >= age

    async def endpoint(self, name: str) -> str:
        """One of the provider's endpoints from its discovery document (``jwks_uri``,
        ``authorization_endpoint``, ``token_endpoint``), read once; ``Unauthenticated`` if it
        publishes none Tether may reach."""
        if self._meta is None:
            issuer = self._provider.issuer
            if not reachable(issuer, issuer=issuer):
                raise Unauthenticated("the provider's issuer is not an https URL")
            meta = await self._fetch(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
            if meta.get("issuer") != issuer:
                raise Unauthenticated("the provider's discovery names another issuer")
            self._meta = meta
        uri = self._meta.get(name)
        if not isinstance(uri, str) or not reachable(uri, issuer=self._provider.issuer):
            raise Unauthenticated(f"the provider publishes no usable {name}")
        return uri

    async def _read(self) -> None:
        self._read_at = self._monotonic()  # a failed read also waits MIN_REFRESH
        uri = await self.endpoint("jwks_uri")
        self.reads += 1
        self._keys = parse_key_set(await self._fetch(uri))


class Federation:
    """The configured external providers: whose token a token claims to be, and the Tether
    user a verified one names (see the module)."""

    def __init__(
        self,
        *,
        providers: Sequence[ExternalProvider],
        fetch: Fetch,
        users: UserStore,
        audit: AuditSink,
        clock: Clock,
    ) -> None:
        self._providers = {p.issuer: p for p in providers}
        self.by_name = {p.name: p for p in providers}
        self._keys = {p.issuer: ProviderKeys(p, fetch) for p in providers}
        self._users = users
        self._audit = audit
        self._clock = clock

    def knows(self, token: str) -> bool:
        """Whether ``token`` claims to come from a configured provider (unverified: routing
        only; the provider's own keys decide)."""
        try:
            issuer = UnverifiedToken.parse(token).claims.get("iss")
        except Error:
            return False
        return isinstance(issuer, str) and issuer in self._providers

    def keys(self, issuer: str) -> ProviderKeys:
        return self._keys[issuer]

    async def verify(self, token: str) -> tuple[User, VerifiedClaims]:
        """The Tether user an external token proves, and its claims; ``Unauthenticated``
        for anything else."""
        try:
            parsed = UnverifiedToken.parse(token)
            issuer = str(parsed.claims.get("iss"))
            provider = self._providers[issuer]
            kid = parsed.header.get("kid")
            key = await self._keys[issuer].key(kid) if isinstance(kid, str) else None
            if key is None:
                raise Unauthenticated("the token's key is not the provider's")
            claims = verify_jwt(
                parsed, key=key, algorithms=ALGORITHMS, now=self._clock.timestamp(),
                audience=provider.audience, issuer=issuer, leeway=LEEWAY,
                max_lifetime=MAX_LIFETIME, require=("exp", "iss", "sub", "aud"),
            )  # fmt: skip
        except (Error, KeyError) as exc:
            raise Unauthenticated("not a valid token of a trusted provider") from exc
        if "act" in claims.claims:
            raise Unauthenticated("a provider's delegated token is not its person's")
        user = await self._user(provider, claims)
        if user.state is not UserState.ACTIVE:
            raise Unauthenticated("the user is disabled")
        return user, claims

    async def _user(self, provider: ExternalProvider, claims: VerifiedClaims) -> User:
        subject = claims.sub or ""
        found = await self._users.get_user_by_subject(provider.issuer, subject)
        if found is not None:
            return found
        local = _LOCAL.sub("-", subject.lower()).strip("-._")[:100]
        try:
            name = check_user_name(f"{local}@{provider.name}")
        except Error as exc:
            raise Unauthenticated("the provider's account cannot be named here") from exc
        now = self._clock.now()
        email = claims.claims.get("email")
        shown = claims.claims.get("name") or claims.claims.get("preferred_username")
        user = User(
            id=new_id("usr"), name=name, display_name=_text(shown),
            email=email if isinstance(email, str) and len(email) < 320 else None,
            state=UserState.ACTIVE, password_hash=None, issuer=provider.issuer,
            subject=subject, created_at=now, updated_at=now,
        )  # fmt: skip
        await self._audit.append(
            AuditRecord.new(
                type="user.created",
                actor="system:federation",
                subject=f"user:{name}",
                time=now,
                details={
                    "id": user.id,
                    "name": name,
                    "issuer": provider.issuer,
                    "email": user.email,
                    "password_set": False,
                },
            )
        )
        try:
            await self._users.create_user(user)
        except UserExists:
            again = await self._users.get_user_by_subject(provider.issuer, subject)
            if again is None:  # the name is another person's
                raise Unauthenticated("the provider's account name is taken here") from None
            return again
        return user


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value.isprintable() else None
