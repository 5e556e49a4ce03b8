"""SVIDs: the short-lived identity documents Tether issues to agent instances.

* JWT-SVID (SPIFFE JWT-SVID spec): ES256, ``sub`` = the instance's SPIFFE ID
  ``spiffe://<td>/agent/<name>/i/<instance>``, ``aud`` from an allow-list (RFC 8707 ``resource``
  or RFC 8693-style ``audience``; Tether itself by default), ``exp`` 5 minutes by default
  (SPIRE's default), a fresh ``jti``. When the instance authenticated with an X.509-SVID the
  token is certificate-bound (RFC 8705 §3: ``cnf`` ``x5t#S256``) and refused without it.
* X.509-SVID (SPIFFE X.509-SVID spec): a CSR signed by Tether's CA, URI SAN = the instance's
  SPIFFE ID, one hour by default, asked for by the instance with its JWT-SVID.

A JWT-SVID can be revoked before it expires — one token by ``jti``, or every token of an agent
or instance issued before the revocation or up to 30 s after it
(:mod:`tether.identity.revocations`); :meth:`SvidIssuer.revoke` records it,
:meth:`SvidIssuer.verify_agent_token` refuses a revoked token from then on, and
:meth:`SvidIssuer.issue_jwt_svid` refuses (``temporarily_unavailable``) to issue a token that
a revocation would cover.

Example::

    issued = await issuer.issue_jwt_svid(client, audience=())  # IssuedToken(expires_in=300, …)
    caller = await issuer.verify_agent_token(issued.token, certificate_thumbprint=None)
    await issuer.revoke(actor=sam, jti=issued.jti, reason="leaked in a log")
    await issuer.verify_agent_token(issued.token, certificate_thumbprint=None)  # Unauthenticated
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether._internal.kept import Kept
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.crypto.jwt import VerifiedClaims
from tether.crypto.keyring import KeyRing
from tether.errors import (
    AgentNotFound,
    Error,
    InvalidInput,
    InvalidTarget,
    TemporarilyUnavailable,
    TokenInvalid,
    Unauthenticated,
)
from tether.identity.access import Actor, Permission, require
from tether.identity.client_auth import AuthenticatedClient
from tether.identity.directory import AgentDirectory
from tether.identity.models import Agent
from tether.identity.names import (
    check_agent_name,
    instance_spiffe_id,
    is_gateway_resource,
    parse_agent_spiffe_id,
)
from tether.identity.revocations import Revocation, RevocationKind, RevocationList
from tether.store.interfaces import AgentStore

__all__ = ["VERIFY_LEEWAY", "AgentCaller", "IssuedToken", "SvidIssuer"]

MAX_AUDIENCES = 5
MAX_VERIFIED_CACHE = 10_000
#: Seconds of clock skew allowed when verifying a JWT-SVID (``exp``, ``nbf``, ``iat``).
VERIFY_LEEWAY = 30
MAX_REASON = 500
_JTI = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


@dataclass(frozen=True, kw_only=True)
class IssuedToken:
    token: str
    expires_in: int
    jti: str
    audience: tuple[str, ...]
    token_type: str = "Bearer"


@dataclass(frozen=True, kw_only=True)
class AgentCaller:
    """An agent instance proven by a JWT-SVID Tether issued (and, if bound, its certificate)."""

    agent: Agent
    instance_id: str
    spiffe_id: str
    claims: VerifiedClaims


class SvidIssuer:
    def __init__(
        self,
        *,
        keyring: KeyRing,
        store: AgentStore,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
        trust_domain: str,
        audiences: frozenset[str],
        jwt_ttl: int,
        x509_ttl: int,
        revocations: RevocationList,
        directory: AgentDirectory | None = None,
    ) -> None:
        self._keyring = keyring
        self._store = store
        self._audit = audit
        self._clock = clock
        self._issuer = issuer
        self._trust_domain = trust_domain
        self._audiences = audiences
        self._jwt_ttl = jwt_ttl
        self._x509_ttl = x509_ttl
        self._directory = directory
        self._revocations = revocations
        #: Tokens already verified, until they expire: a cache hit skips the signature check.
        self._verified: Kept[str, VerifiedClaims] = Kept(limit=MAX_VERIFIED_CACHE)

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def issuer(self) -> str:
        return self._issuer

    def check_audience(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The audiences a token will carry; ``invalid_target`` for one not on the allow-list."""
        wanted = tuple(dict.fromkeys(a for a in requested if a)) or (self._issuer,)
        if len(wanted) > MAX_AUDIENCES:
            raise InvalidTarget(f"at most {MAX_AUDIENCES} audiences")
        refused = [
            a
            for a in wanted
            if a not in self._audiences and not is_gateway_resource(self._issuer, a)
        ]
        if refused:
            raise InvalidTarget("an audience is not on this server's allow-list")
        return wanted

    async def issue_jwt_svid(
        self,
        client: AuthenticatedClient,
        *,
        audience: Sequence[str],
        correlation_id: str | None = None,
    ) -> IssuedToken:
        aud = self.check_audience(audience)
        now = self._clock.timestamp()
        wait = self._revocations.blocks_issuance(
            agent=client.agent.name, instance=client.instance.spiffe_id, issued_at=now
        )
        if wait > 0:
            raise TemporarilyUnavailable(
                f"this agent's tokens were just revoked; ask again in {wait} s"
            )
        jti = new_id("jti")
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": client.instance.spiffe_id,
            "aud": list(aud) if len(aud) > 1 else aud[0],
            "iat": now,
            "nbf": now,
            "exp": now + self._jwt_ttl,
            "jti": jti,
            "client_id": client.agent.spiffe_id,
        }
        if client.certificate_thumbprint:
            claims["cnf"] = {"x5t#S256": client.certificate_thumbprint}
        token = self._keyring.signer.sign_jwt(claims)
        await self._audit.append(
            AuditRecord.new(
                type="svid.jwt_issued",
                actor=client.instance.spiffe_id,
                subject=client.instance.spiffe_id,
                time=self._clock.now(),
                correlation_id=correlation_id,
                details={
                    "agent_id": client.agent.id,
                    "instance_id": client.instance.instance_id,
                    "auth_method": client.method,
                    "kid": client.kid,
                    "jti": jti,
                    "aud": list(aud),
                    "exp": now + self._jwt_ttl,
                    "risk_tier": str(client.agent.risk_tier),
                    "cert_bound": bool(client.certificate_thumbprint),
                },
            )
        )
        return IssuedToken(token=token, expires_in=self._jwt_ttl, jti=jti, audience=aud)

    async def verify_agent_token(
        self, token: str, *, certificate_thumbprint: str | None, audience: str | None = None
    ) -> AgentCaller:
        """A JWT-SVID Tether issued, meant for ``audience`` (Tether itself by default), from an
        active agent; a certificate-bound token only together with its certificate (RFC 8705
        §3)."""
        try:
            claims = await self._verify(token, audience or self._issuer)
            ref = parse_agent_spiffe_id(claims.sub or "", trust_domain=self._trust_domain)
        except Error as exc:
            raise Unauthenticated(
                "a valid agent token for this server is required",
                # Why, for monitoring: an expired token is routine, a forged one is not.
                details={"reason": "invalid_token", "cause": exc.details.get("reason")},
            ) from exc
        # After the cache: a token verified before its revocation is refused all the same.
        revoked = self._revocations.is_revoked(
            jti=claims.jti,
            agent=ref.name,
            instance=claims.sub if ref.instance_id is not None else None,
            issued_at=claims.iat,
        )
        if revoked is not None:
            # Not the operator's reason: whoever holds a revoked token may be the one it was
            # revoked against.
            raise Unauthenticated("the token is revoked", details={"reason": "revoked"})
        bound = claims.claims.get("cnf")
        if bound is not None:
            want = bound.get("x5t#S256") if isinstance(bound, dict) else None
            if not want or want != certificate_thumbprint:
                raise Unauthenticated("this token is bound to a client certificate")
        if self._directory is not None:
            agent = await self._directory.get(ref.name)
        else:
            agent = await self._store.get_agent(ref.name)
        if agent is None or ref.instance_id is None or not agent.can_authenticate:
            # A valid signature on an agent no longer registered, or not active.
            reason = "unknown_agent" if agent is None else "agent_not_active"
            raise Unauthenticated("the agent is not active", details={"reason": reason})
        return AgentCaller(
            agent=agent, instance_id=ref.instance_id, spiffe_id=claims.sub or "", claims=claims
        )

    async def _verify(self, token: str, audience: str) -> VerifiedClaims:
        now = self._clock.timestamp()
        cached = self._verified.get(token)
        if cached is not None and _current(cached, now):
            if audience in cached.aud:
                return cached
            raise TokenInvalid(
                "the token is not meant for this audience", details={"reason": "wrong_audience"}
            )
        claims = await self._keyring.verify_issued_reloading(
            token, audience=audience, issuer=self._issuer, now=now, leeway=VERIFY_LEEWAY
        )
        return self._verified.put(token, claims)

    async def issue_x509_svid(
        self, caller: AgentCaller, csr_pem: bytes, *, correlation_id: str | None = None
    ) -> bytes:
        spiffe_id = instance_spiffe_id(self._trust_domain, caller.agent.name, caller.instance_id)
        now = self._clock.now()
        ttl = timedelta(seconds=self._x509_ttl)
        cert = self._keyring.ca.sign_csr(csr_pem, spiffe_id=spiffe_id, ttl=ttl, now=now)
        await self._audit.append(
            AuditRecord.new(
                type="svid.x509_issued",
                actor=caller.spiffe_id,
                subject=spiffe_id,
                time=now,
                correlation_id=correlation_id,
                details={"agent_id": caller.agent.id, "ttl": self._x509_ttl},
            )
        )
        return cert

    # -- revocation ----------------------------------------------------------------------

    async def revoke(
        self,
        *,
        actor: Actor,
        jti: str | None = None,
        agent: str | None = None,
        instance: str | None = None,
        reason: str | None = None,
        correlation_id: str | None = None,
    ) -> Revocation:
        """Revoke one token (``jti``: admins), or every token so far of an ``agent`` or of one
        ``instance`` of it (admins, and a developer for an agent they own). The
        ``svid.revoked`` record and the entry are made durable before the entry is in force
        here; other replicas read it within ``hot_state_refresh_seconds``."""
        kind, target, subject = await self._target(actor, jti=jti, agent=agent, instance=instance)
        entry = self._revocations.entry(
            kind=kind, target=target, actor=actor.label, reason=_reason(reason)
        )
        record = AuditRecord.new(
            type="svid.revoked",
            actor=actor.label,
            subject=subject,
            time=entry.revoked_at,
            correlation_id=correlation_id,
            details={
                "revocation_id": entry.id,
                "kind": str(kind),
                "target": target,
                "reason": entry.reason,
                "until": entry.until.isoformat(),
            },
        )
        await self._audit.append(record)
        try:
            await self._revocations.record(entry)
        except Error as exc:
            await self._audit.append(record.failure(exc.code, time=self._clock.now()))
            raise
        return entry

    async def revocations(self, *, actor: Actor) -> list[Revocation]:
        """The revocations in force, as the store holds them (oldest first)."""
        require(actor, Permission.AGENT_READ)
        await self._revocations.refresh()
        return self._revocations.live()

    async def _target(
        self, actor: Actor, *, jti: str | None, agent: str | None, instance: str | None
    ) -> tuple[RevocationKind, str, str]:
        """What to revoke (kind, target, audit subject), once ``actor`` may revoke it."""
        if jti is not None and agent is None and instance is None:
            if not _JTI.fullmatch(jti):
                raise InvalidInput(
                    "a jti is 1 to 128 URL-safe characters", details={"field": "jti"}
                )
            require(actor, Permission.SVID_REVOKE)  # a jti alone names no owner
            return RevocationKind.JTI, jti, f"jti:{jti}"
        if jti is not None or agent is None:
            raise InvalidInput(
                "name exactly one of: a jti, an agent, or an agent and one of its instances",
                details={"rule": "jti | agent | agent + instance"},
            )
        found = await self._agent(agent)
        require(actor, Permission.SVID_REVOKE, owners=found.owners)
        if instance is None:
            return RevocationKind.AGENT, found.name, found.spiffe_id
        spiffe_id = instance_spiffe_id(self._trust_domain, found.name, instance)
        return RevocationKind.INSTANCE, spiffe_id, spiffe_id

    async def _agent(self, name: str) -> Agent:
        found = await self._store.get_agent(check_agent_name(name))
        if found is None:
            raise AgentNotFound(f"no agent named {name!r}", details={"name": name})
        return found


def _reason(text: str | None) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_REASON:
        raise InvalidInput(
            f"a reason is at most {MAX_REASON} characters", details={"field": "reason"}
        )
    return text.strip() or None


def _current(claims: VerifiedClaims, now: float) -> bool:
    """Whether a token verified earlier is still within its time window at ``now``: before its
    expiry, and — should the clock have been set back since — not yet before its ``nbf`` or
    ``iat`` (beyond the leeway the first verification allowed). Else it is verified again."""
    if claims.exp is None or now > claims.exp:
        return False
    starts = [t for t in (claims.iat, claims.claims.get("nbf")) if isinstance(t, int | float)]
    return all(now + VERIFY_LEEWAY >= t for t in starts)
