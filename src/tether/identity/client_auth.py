"""Client authentication of agent instances at the token endpoint.

Two ways in, both without shared secrets:

* ``private_key_jwt`` — RFC 7523 §2.2 and §3 (as profiled by OpenID Connect Core §9): a JWT
  signed with a key the agent registered, ``iss`` = ``sub`` = the client id (the agent's SPIFFE
  ID), ``aud`` = the token endpoint (or the issuer, per RFC 7523bis), a short ``exp`` and a
  ``jti`` that is accepted once — enforced by an atomic insert in the store, so a replay fails
  even when both copies arrive at the same moment on different replicas.
* ``tls_client_auth`` — RFC 8705 §2.1.2 with an X.509-SVID from Tether's own CA: the verified
  certificate's SPIFFE ID names the instance.

Every failure answers ``invalid_client`` with a generic description (RFC 6749 §5.2) so the
caller learns nothing about agents it cannot prove it is; the precise reason goes to the audit
log. Authlib's server-side RFC 7523 support is tied to its Flask/Django integrations, and none
of it knows agent instances or SPIFFE IDs, so this small verifier is ours; the JWT work itself
is done by :mod:`tether.crypto.jwt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, Protocol

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord, Outcome
from tether.audit.sink import AuditSink
from tether.crypto.ca import VerifiedClientCertificate
from tether.crypto.jwk import PublicJwk
from tether.crypto.jwt import UnverifiedToken, verify_jwt
from tether.errors import Error, InvalidClient, ReplayDetected, TokenInvalid
from tether.identity.models import Agent, AgentKey, Instance
from tether.identity.names import (
    check_instance_id,
    instance_spiffe_id,
    parse_agent_spiffe_id,
)
from tether.store.interfaces import AgentStore, ReplayStore

__all__ = ["ASSERTION_TYPE", "AuthenticatedClient", "ClientAuthenticator"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_GENERIC = "client authentication failed"
MAX_JTI_LENGTH = 256


class ClientAuthStore(AgentStore, ReplayStore, Protocol):
    pass


@dataclass(frozen=True, kw_only=True)
class AuthenticatedClient:
    agent: Agent
    instance: Instance
    method: str
    kid: str | None = None
    certificate_thumbprint: str | None = None


class _Refused(Exception):
    """Internal: why authentication failed (goes to the audit log, not to the caller)."""

    def __init__(self, reason: str, *, subject: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subject = subject


class ClientAuthenticator:
    def __init__(
        self,
        *,
        store: ClientAuthStore,
        audit: AuditSink,
        clock: Clock,
        trust_domain: str,
        audiences: frozenset[str],
        max_lifetime: int = 300,
        leeway: int = 30,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._trust_domain = trust_domain
        self._audiences = audiences
        self._max_lifetime = max_lifetime
        self._leeway = leeway
        self._parsed_keys: dict[tuple[str, str], PublicJwk] = {}

    async def private_key_jwt(
        self,
        *,
        client_id: str | None,
        assertion_type: str | None,
        assertion: str | None,
        instance_id: str | None,
        correlation_id: str | None = None,
    ) -> AuthenticatedClient:
        try:
            agent, key, jti, exp = await self._check_assertion(
                client_id=client_id, assertion_type=assertion_type, assertion=assertion
            )
            checked_instance = _instance_or_refuse(instance_id, subject=agent.spiffe_id)
            return await self._accept(
                agent, checked_instance, method="private_key_jwt", kid=key.kid, jti=(jti, exp)
            )
        except _Refused as refused:
            await self._refuse(refused, client_id, "private_key_jwt", correlation_id)

    async def tls_client(
        self,
        *,
        certificate: VerifiedClientCertificate,
        client_id: str | None,
        instance_id: str | None,
        correlation_id: str | None = None,
    ) -> AuthenticatedClient:
        try:
            agent, checked_instance = await self._certificate_owner(
                certificate, client_id=client_id, instance_id=instance_id
            )
            return await self._accept(
                agent, checked_instance, method="tls_client_auth", thumbprint=certificate.thumbprint
            )
        except _Refused as refused:
            await self._refuse(refused, client_id, "tls_client_auth", correlation_id)

    async def _certificate_owner(
        self,
        certificate: VerifiedClientCertificate,
        *,
        client_id: str | None,
        instance_id: str | None,
    ) -> tuple[Agent, str]:
        try:
            ref = parse_agent_spiffe_id(certificate.spiffe_id, trust_domain=self._trust_domain)
        except Error as exc:
            raise _Refused("certificate_spiffe_id_invalid") from exc
        if ref.instance_id is None:
            raise _Refused("certificate_names_no_instance", subject=certificate.spiffe_id)
        if instance_id not in (None, ref.instance_id):
            raise _Refused("instance_id_mismatch", subject=certificate.spiffe_id)
        agent, _keys = await self._active_agent(ref.name)
        if client_id not in (None, agent.spiffe_id):
            raise _Refused("client_id_mismatch", subject=agent.spiffe_id)
        return agent, ref.instance_id

    # -- the assertion -------------------------------------------------------------------

    async def _check_assertion(
        self, *, client_id: str | None, assertion_type: str | None, assertion: str | None
    ) -> tuple[Agent, PublicJwk, str, int]:
        if assertion_type != ASSERTION_TYPE or not assertion:
            raise _Refused("missing_or_unsupported_assertion_type")
        try:
            unverified = UnverifiedToken.parse(assertion)
        except TokenInvalid as exc:
            raise _Refused("malformed_assertion") from exc
        iss, sub = unverified.claims.get("iss"), unverified.claims.get("sub")
        if not isinstance(iss, str) or iss != sub:
            raise _Refused("iss_and_sub_must_equal_the_client_id")
        if client_id not in (None, iss):
            raise _Refused("client_id_mismatch", subject=iss)
        try:
            ref = parse_agent_spiffe_id(iss, trust_domain=self._trust_domain)
        except Error as exc:
            raise _Refused("unknown_client", subject=iss[:200]) from exc
        if ref.instance_id is not None:
            raise _Refused("client_id_is_not_an_agent", subject=iss)
        agent, keys = await self._active_agent(ref.name)
        key = self._key_for(agent, keys, unverified)
        try:
            claims = verify_jwt(
                unverified,
                key=key,
                algorithms=(key.alg,),
                now=self._clock.timestamp(),
                audience=self._audiences,
                leeway=self._leeway,
                max_lifetime=self._max_lifetime,
                require=("exp", "jti", "iss", "sub", "aud"),
            )
        except TokenInvalid as exc:
            raise _Refused(str(exc.details.get("reason", "invalid")), subject=iss) from exc
        if claims.jti is None or claims.exp is None:  # required above; kept for -O runs
            raise _Refused("malformed_assertion", subject=iss)
        if len(claims.jti) > MAX_JTI_LENGTH:
            raise _Refused("jti_too_long", subject=iss)
        return agent, key, claims.jti, claims.exp

    async def _active_agent(self, name: str) -> tuple[Agent, list[AgentKey]]:
        found = await self._store.get_agent_with_keys(name)
        if found is None:
            raise _Refused("unknown_client")
        agent, keys = found
        if not agent.can_authenticate:
            raise _Refused(f"agent_{agent.state}", subject=agent.spiffe_id)
        return agent, keys

    def _key_for(self, agent: Agent, keys: list[AgentKey], token: UnverifiedToken) -> PublicJwk:
        kid = token.header.get("kid")
        if kid is not None:
            keys = [k for k in keys if k.kid == kid]
        else:
            keys = [k for k in keys if k.alg == token.header.get("alg")][:1]
        if not keys:
            raise _Refused("no_matching_key", subject=agent.spiffe_id)
        return self._parse_key(keys[0])

    def _parse_key(self, key: AgentKey) -> PublicJwk:
        cache_key = (key.agent_id, key.kid)
        parsed = self._parsed_keys.get(cache_key)
        if parsed is None:
            if len(self._parsed_keys) > 10_000:
                self._parsed_keys.clear()
            parsed = self._parsed_keys[cache_key] = PublicJwk.parse(key.jwk)
        return parsed

    async def refusal(
        self,
        reason: str,
        *,
        method: str,
        client_id: str | None,
        message: str = _GENERIC,
        correlation_id: str | None = None,
    ) -> InvalidClient:
        """Audit a failed authentication found before this class is reached (a shared secret,
        no credentials, a client certificate that does not verify); the caller raises the
        ``invalid_client`` error returned. ``message`` must say nothing about any agent."""
        try:
            await self._refuse(_Refused(reason), client_id, method, correlation_id, message=message)
        except InvalidClient as error:
            return error

    # -- outcomes ------------------------------------------------------------------------

    async def _accept(
        self,
        agent: Agent,
        instance_id: str,
        *,
        method: str,
        kid: str | None = None,
        thumbprint: str | None = None,
        jti: tuple[str, int] | None = None,
    ) -> AuthenticatedClient:
        """Record the authentication; an assertion's ``jti`` is consumed in the same write, so
        a replay — even one racing on another replica — fails here and writes nothing."""
        now = self._clock.now()
        replay_key = replay_expires = None
        if jti is not None:
            replay_key = f"assertion:{agent.id}:{jti[0]}"
            # Remember the jti while the assertion could be accepted: up to exp + leeway, which
            # is checked in whole seconds, so one second more.
            replay_expires = datetime.fromtimestamp(jti[1] + self._leeway + 1, tz=UTC)
        try:
            instance = await self._store.record_authentication(
                replay_key=replay_key,
                replay_expires_at=replay_expires,
                agent_id=agent.id,
                instance_id=instance_id,
                spiffe_id=instance_spiffe_id(self._trust_domain, agent.name, instance_id),
                kid=kid or (f"x5t#S256:{thumbprint}" if thumbprint else None),
                auth_method=method,
                at=now,
            )
        except ReplayDetected as exc:
            raise _Refused("assertion_replayed", subject=agent.spiffe_id) from exc
        return AuthenticatedClient(
            agent=agent,
            instance=instance,
            method=method,
            kid=kid,
            certificate_thumbprint=thumbprint,
        )

    async def _refuse(
        self,
        refused: _Refused,
        client_id: str | None,
        method: str,
        correlation_id: str | None,
        *,
        message: str = _GENERIC,
    ) -> NoReturn:
        # The caller proved nothing: the record names it "unauthenticated" and keeps what it
        # claimed to be as a detail, so no one can write records in another's name.
        details: dict[str, object] = {"method": method, "reason": refused.reason}
        if client_id:
            details["claimed_client_id"] = client_id[:200]
        await self._audit.append(
            AuditRecord.new(
                type="client.authentication_failed",
                actor="unauthenticated",
                subject=refused.subject,
                time=self._clock.now(),
                outcome=Outcome.FAILURE,
                correlation_id=correlation_id,
                details=details,
            )
        )
        raise InvalidClient(message)


def _instance_or_refuse(instance_id: str | None, *, subject: str) -> str:
    if not instance_id:
        raise _Refused("missing_instance_id", subject=subject)
    try:
        return check_instance_id(instance_id)
    except Error as exc:
        raise _Refused("invalid_instance_id", subject=subject) from exc
