"""Token exchange at ``/oauth2/token`` (RFC 8693): a user's (or a delegated) token in, a
delegated token for one agent instance out.

The service does the I/O around the pure rules of :mod:`tether.delegation.token_exchange`:

1. **the actor**: the acting instance's JWT-SVID (``actor_token``), or the instance that
   authenticated the request (``private_key_jwt`` / mTLS); both, only if they agree. Without
   one there is no exchange: an agent never acts *as* the user;
2. **the subject token**: a user's token for Tether, or a delegated token meant for Tether or
   for this actor's agent, still good (user active, grants in force, not revoked);
3. **the audience**: one, from the allow-list, Tether itself, or another registered agent
   (then the actor must have declared that it calls agents);
4. **the grant**: named by ``grant_id``, or the one grant in force of this user for this
   agent (and purpose, when given);
5. **policy**: ``act_for`` on the user, decided by the policy set in force (shipped: allowed
   under a grant; operators may forbid);
6. **mint** the claims (:func:`~tether.delegation.token_exchange.delegated_claims`) and make
   ``token.exchanged`` durable before the token is returned. A refusal is recorded as
   ``token.exchange_refused`` with its OAuth error code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tether._internal.clock import Clock
from tether._internal.ids import new_id
from tether.audit.records import AuditRecord, Outcome
from tether.audit.sink import AuditSink
from tether.delegation.grants import Grants
from tether.delegation.models import Grant, GrantMatch
from tether.delegation.token_exchange import (
    ACCESS_TOKEN_TYPE,
    ID_TOKEN_TYPE,
    ActingInstance,
    ExchangeRequest,
    SubjectToken,
    act_chain,
    delegated_claims,
)
from tether.delegation.tokens import AccessTokens
from tether.errors import (
    Error,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
)
from tether.identity.client_auth import AuthenticatedClient
from tether.identity.directory import AgentDirectory
from tether.identity.models import Agent
from tether.identity.names import agent_spiffe_id, is_gateway_resource, parse_agent_spiffe_id
from tether.identity.svid import AgentCaller, SvidIssuer
from tether.policy.models import Decision

__all__ = ["ActForPolicy", "ExchangedToken", "TokenExchanger"]

#: Decides ``act_for``: may this agent act for this user, in this context? (The checkpoint
#: provides it, so the policy set in force and its engine decide, as for every other action.)
ActForPolicy = Callable[[Agent, str, Mapping[str, Any]], Decision]


@dataclass(frozen=True, kw_only=True)
class ExchangedToken:
    access_token: str
    expires_in: int
    scope: str
    jti: str
    issued_token_type: str = ACCESS_TOKEN_TYPE
    token_type: str = "Bearer"


@dataclass(frozen=True, kw_only=True)
class _Actor:
    """The authenticated acting instance and its agent."""

    agent: Agent
    instance_id: str
    spiffe_id: str
    cnf: Mapping[str, Any] | None


class TokenExchanger:
    """The token endpoint's ``token-exchange`` grant (see the module for the steps)."""

    def __init__(
        self,
        *,
        tokens: AccessTokens,
        svids: SvidIssuer,
        grants: Grants,
        directory: AgentDirectory,
        act_for: ActForPolicy,
        audit: AuditSink,
        clock: Clock,
        issuer: str,
        trust_domain: str,
        audiences: frozenset[str],
        max_ttl: int,
        max_depth: int,
    ) -> None:
        self._tokens = tokens
        self._svids = svids
        self._grants = grants
        self._directory = directory
        self._act_for = act_for
        self._audit = audit
        self._clock = clock
        self._issuer = issuer
        self._trust_domain = trust_domain
        self._audiences = audiences
        self._max_ttl = max_ttl
        self._max_depth = max_depth

    async def exchange(
        self,
        request: ExchangeRequest,
        *,
        client: AuthenticatedClient | None,
        certificate_thumbprint: str | None,
        correlation_id: str | None = None,
    ) -> ExchangedToken:
        actor: _Actor | None = None
        try:
            actor = await self._actor(request, client, certificate_thumbprint)
            return await self._exchange(request, actor, correlation_id)
        except Error as exc:
            await self._refused(exc, actor, correlation_id)
            raise

    async def _exchange(
        self, request: ExchangeRequest, caller: _Actor, correlation_id: str | None
    ) -> ExchangedToken:
        agent = caller.agent
        actor = ActingInstance(
            spiffe_id=caller.spiffe_id,
            agent=agent.name,
            agent_spiffe_id=agent.spiffe_id,
            cnf=caller.cnf,
        )
        if request.subject_token_type == ID_TOKEN_TYPE and not self._tokens.is_external(
            request.subject_token
        ):
            raise InvalidRequest("only a trusted external provider's ID token is a subject token")
        subject = await self._tokens.subject(
            request.subject_token,
            audiences=(self._issuer, agent.spiffe_id, caller.spiffe_id),
        )
        audience = await self._audience(request.audience, agent)
        grant = await self._grant(request, subject, agent)
        now = self._clock.timestamp()
        claims = delegated_claims(
            subject=subject, actor=actor, grant=grant, scope=request.scope, audience=audience,
            now=now, max_ttl=self._max_ttl, max_depth=self._max_depth, issuer=self._issuer,
            jti=new_id("jti"), purpose_code=request.purpose_code,
        )  # fmt: skip
        decision = self._act_for(agent, subject.user, _context(claims, grant, caller, now))
        if not decision.allowed:
            raise InvalidGrant(f"policy refuses: {'; '.join(decision.reasons)[:300]}")
        token = self._tokens.sign_delegated(claims)
        await self._audit.append(
            AuditRecord.new(
                type="token.exchanged",
                actor=caller.spiffe_id,
                subject=f"user:{subject.user}",
                time=self._clock.now(),
                correlation_id=correlation_id,
                details=_exchanged(claims, decision),
            )
        )
        return ExchangedToken(
            access_token=token, expires_in=claims["exp"] - now, scope=claims["scope"],
            jti=claims["jti"],
            issued_token_type=request.requested_token_type or ACCESS_TOKEN_TYPE,
        )  # fmt: skip

    async def _actor(
        self,
        request: ExchangeRequest,
        client: AuthenticatedClient | None,
        certificate_thumbprint: str | None,
    ) -> _Actor:
        """The acting instance: from its JWT-SVID, or from client authentication."""
        found: _Actor | None = None
        if request.actor_token is not None:
            try:
                caller = await self._svids.verify_agent_token(
                    request.actor_token, certificate_thumbprint=certificate_thumbprint
                )
            except Error as exc:
                raise InvalidRequest(f"invalid actor_token: {exc.message}") from exc
            found = _Actor(
                agent=caller.agent,
                instance_id=caller.instance_id,
                spiffe_id=caller.spiffe_id,
                cnf=_cnf(caller),
            )
        if client is not None:
            if found is not None and found.spiffe_id != client.instance.spiffe_id:
                raise InvalidRequest("the actor_token and the authenticated client differ")
            thumbprint = client.certificate_thumbprint
            found = found or _Actor(
                agent=client.agent,
                instance_id=client.instance.instance_id,
                spiffe_id=client.instance.spiffe_id,
                cnf={"x5t#S256": thumbprint} if thumbprint else None,
            )
        if found is None:
            raise InvalidRequest(
                "an actor is required (actor_token, or client authentication): an agent acts "
                "for a user, never as the user"
            )
        return found

    async def _audience(self, requested: tuple[str, ...], agent: Agent) -> str:
        if len(requested) > 1:
            raise InvalidTarget("a delegated token has exactly one audience")
        audience = requested[0] if requested else self._issuer
        if (
            audience == self._issuer
            or audience in self._audiences
            or is_gateway_resource(self._issuer, audience)
        ):
            return audience
        try:
            target = parse_agent_spiffe_id(audience, trust_domain=self._trust_domain)
        except Error as exc:
            raise InvalidTarget("the audience is not allowed") from exc
        callee = await self._directory.get(target.name)
        if target.instance_id is not None or callee is None or not callee.can_authenticate:
            raise InvalidTarget("the audience is not an active agent of this server")
        if not agent.declarations.may_call_agents:
            raise InvalidTarget("this agent did not declare that it calls other agents")
        return agent_spiffe_id(self._trust_domain, callee.name)

    async def _grant(self, request: ExchangeRequest, subject: SubjectToken, agent: Agent) -> Grant:
        if request.grant_id is not None:
            grant = await self._grants.get_in_force(request.grant_id)
            if grant is None:
                raise InvalidGrant("no such grant")
            return grant
        found = await self._grants.in_force(GrantMatch(user=subject.user, agent=agent.name))
        code = request.purpose_code or subject.purpose_code
        fitting = [
            g
            for g in found
            if (code is None or g.purpose_code == code)
            and (g.session is None or g.session == subject.session)
        ]
        if not fitting:
            raise InvalidGrant("the user has given this agent no grant in force")
        if len(fitting) > 1:
            raise InvalidRequest("the user gave this agent several grants: name one (grant_id)")
        return fitting[0]

    async def _refused(self, exc: Error, actor: _Actor | None, correlation_id: str | None) -> None:
        await self._audit.append(
            AuditRecord.new(
                type="token.exchange_refused",
                actor=actor.spiffe_id if actor else "unauthenticated",
                subject=None,
                time=self._clock.now(),
                outcome=Outcome.FAILURE,
                correlation_id=correlation_id,
                details={"error": exc.code, "reason": exc.message[:300]},
            )
        )


def _cnf(caller: AgentCaller) -> Mapping[str, Any] | None:
    cnf = caller.claims.claims.get("cnf")
    return cnf if isinstance(cnf, Mapping) else None


def _context(claims: Mapping[str, Any], grant: Grant, caller: _Actor, now: int) -> dict[str, Any]:
    """What ``act_for`` is decided on: the delegation the new token would carry."""
    chain = act_chain(claims["act"])
    context: dict[str, Any] = {
        "now": now,
        "instance": caller.instance_id,
        "grant_id": grant.id,
        "grant_expires_at": int(grant.expires_at.timestamp()),
        "scopes": set(claims["scope"].split()),
        "purpose": grant.purpose,
        "purpose_code": grant.purpose_code,
        "act_chain": set(chain),
        "act_depth": len(chain),
    }
    if "sid" in claims:
        context["session"] = claims["sid"]
    return context


def _exchanged(claims: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    return {
        "jti": claims["jti"],
        "user": claims["sub"],
        "act": list(act_chain(claims["act"])),
        "grant_id": claims["grant_id"],
        "prior_grants": claims.get("prior_grants", []),
        "scope": claims["scope"],
        "purpose": claims["purpose"],
        "sid": claims.get("sid"),
        "aud": claims["aud"],
        "exp": claims["exp"],
        "policy_ids": list(decision.policy_ids),
    }
