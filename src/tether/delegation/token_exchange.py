"""OAuth 2.0 Token Exchange (RFC 8693): the request, and the rules a delegated token obeys.

Pure: values in, claims or an OAuth error out, no I/O — the service that verifies the tokens
and looks up the grant is :mod:`tether.delegation.exchange`. Authlib, the reference OAuth
library of the Python ecosystem, has no token-exchange server (its ``rfc8693`` module is an
empty stub), so this is ours.

The rules (RFC 8693 §2.1, §4.1, §4.4, and the issue that asked for them):

* a token is exchanged **for an actor**: an agent instance, never as the user. ``sub`` stays
  the user; ``act`` names the instance, with the earlier actors nested inside (§4.1: the
  outermost ``act`` is the current actor);
* the user must have an active **grant** for that agent, given in the same sign-in session
  when the grant is bound to one, for the same purpose as the token being exchanged;
* scopes only **narrow**: requested ⊆ grant ∩ subject token's scopes (``invalid_scope``
  otherwise); nothing requested means all of that intersection;
* one ``aud``; ``exp`` ≤ min(subject token's exp, grant's expiry, now + the configured
  maximum) — never later than its parent;
* ``may_act`` in the subject token (§4.4), when present, names who may act: anyone else is
  refused; the chain may not grow beyond ``max_depth`` actors.

Example::

    claims = delegated_claims(subject=subject, actor=actor, grant=grant, scope=None,
                              audience="https://api.example", now=now, max_ttl=600,
                              max_depth=4, issuer=ISSUER, jti="jti_…")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tether.delegation.grants import parse_scopes
from tether.delegation.models import Grant
from tether.errors import InvalidGrant, InvalidRequest, InvalidScope

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "GRANT_TYPE",
    "ID_TOKEN_TYPE",
    "JWT_TOKEN_TYPE",
    "ActingInstance",
    "ExchangeRequest",
    "SubjectToken",
    "act_chain",
    "delegated_claims",
    "delegation_facts",
    "parse_exchange_request",
]

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
#: What a subject token may be: a user's access token or a delegated token (both JWTs), or an
#: external provider's ID token for Tether (its ``aud`` is Tether's client id there).
SUBJECT_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, ID_TOKEN_TYPE})
#: An actor token is the acting instance's JWT-SVID.
ACTOR_TYPES = frozenset({JWT_TOKEN_TYPE})
MAX_TOKEN = 8192
#: The deepest ``act`` nesting read from a token at all (a chain deeper than any configured
#: maximum is refused before it is walked further).
MAX_READ_DEPTH = 16


@dataclass(frozen=True, kw_only=True)
class ExchangeRequest:
    """RFC 8693 §2.1's parameters, checked for shape (not yet for meaning)."""

    subject_token: str
    subject_token_type: str
    actor_token: str | None
    actor_token_type: str | None
    scope: frozenset[str] | None
    audience: tuple[str, ...]
    requested_token_type: str | None
    #: Tether's extensions: which grant (when the user gave the agent several), and the
    #: purpose the caller means to act for (must be the grant's).
    grant_id: str | None = None
    purpose_code: str | None = None


def parse_exchange_request(
    params: Mapping[str, str], multi: Mapping[str, list[str]]
) -> ExchangeRequest:
    """The request from the token endpoint's form; ``invalid_request`` for a missing or
    unsupported token type, an actor token without its type (or the reverse), or an
    oversized token. A parameter sent empty is one not sent (RFC 6749 §3.1)."""
    params = {key: value for key, value in params.items() if value != ""}
    subject = params.get("subject_token")
    subject_type = params.get("subject_token_type")
    if not subject or not subject_type:
        raise InvalidRequest("subject_token and subject_token_type are required")
    if subject_type not in SUBJECT_TYPES:
        raise InvalidRequest("unsupported subject_token_type")
    actor, actor_type = params.get("actor_token"), params.get("actor_token_type")
    if (actor is None) != (actor_type is None):
        raise InvalidRequest("actor_token and actor_token_type go together (RFC 8693 §2.1)")
    if actor_type is not None and actor_type not in ACTOR_TYPES:
        raise InvalidRequest("unsupported actor_token_type: an agent acts with its JWT-SVID")
    if len(subject) > MAX_TOKEN or len(actor or "") > MAX_TOKEN:
        raise InvalidRequest(f"a token is at most {MAX_TOKEN} characters")
    wanted = params.get("requested_token_type")
    if wanted is not None and wanted not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
        raise InvalidRequest("unsupported requested_token_type")
    scope = params.get("scope")
    return ExchangeRequest(
        subject_token=subject,
        subject_token_type=subject_type,
        actor_token=actor,
        actor_token_type=actor_type,
        scope=parse_scopes(scope) if scope is not None else None,
        audience=tuple(dict.fromkeys(multi.get("audience", []) + multi.get("resource", []))),
        requested_token_type=wanted,
        grant_id=params.get("grant_id"),
        purpose_code=params.get("purpose"),
    )


@dataclass(frozen=True, kw_only=True)
class SubjectToken:
    """A verified subject token, as exchange reads it: a user's token (``act`` None) or a
    delegated one. ``scopes`` None: the token limits no scope (an external provider's ID
    token, which carries none) — the grant alone bounds what the agent gets."""

    user: str
    scopes: frozenset[str] | None
    expires_at: int
    session: str | None
    act: Mapping[str, Any] | None = None
    grants: tuple[str, ...] = ()
    #: The ``jti`` of this token and of every token it was exchanged from (revoking any of
    #: them ends every token derived from it).
    lineage: tuple[str, ...] = ()
    purpose_code: str | None = None
    may_act: Mapping[str, Any] | None = None
    #: The application the person signed in through (the OAuth client their own token was
    #: issued to), carried along every hop so each decision names it.
    app: str | None = None


@dataclass(frozen=True, kw_only=True)
class ActingInstance:
    """The authenticated agent instance the new token is for."""

    spiffe_id: str
    agent: str
    agent_spiffe_id: str
    #: RFC 8705 §3 confirmation of the actor's certificate, carried into the new token.
    cnf: Mapping[str, Any] | None = None


def act_chain(act: object) -> tuple[str, ...]:
    """The actors of an ``act`` claim, current first (RFC 8693 §4.1); ``invalid_request`` for a
    malformed one or one nested deeper than anything Tether issues."""
    chain: list[str] = []
    while act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str):
            raise InvalidRequest("a malformed act claim")
        if len(chain) >= MAX_READ_DEPTH:
            raise InvalidRequest("the act claim is nested too deep")
        chain.append(act["sub"])
        act = act.get("act")
    return tuple(chain)


#: The token claims a decision record carries when a token has them.
_RECORDED_CLAIMS = {
    "app": "app",
    "grant_id": "grant_id",
    "purpose": "purpose",
    "session": "sid",
    "approval_id": "approval_id",
    "approver": "approver",
    "lease_id": "lease_id",
}


def delegation_facts(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Who a token's bearer acts for and on what authority, for a decision record: the
    fields of ``_RECORDED_CLAIMS``, the user and the actor chain (all null and empty for a
    token that carries no delegation, as an agent's own JWT-SVID). Lenient: a malformed
    ``act`` ends the chain where it breaks (the token was verified before)."""
    found: dict[str, Any] = {
        field: value if isinstance(value := claims.get(claim), str) else None
        for field, claim in _RECORDED_CLAIMS.items()
    }
    act, chain = claims.get("act"), list[str]()
    while isinstance(act, Mapping) and isinstance(act.get("sub"), str) and len(chain) < 16:
        chain.append(act["sub"])  # RFC 8693 §4.1: the current actor first, then who it acts for
        act = act.get("act")
    # RFC 8693: in a delegated token ``sub`` is the user and ``act`` the agent acting for them.
    user = claims.get("sub") if chain and isinstance(claims.get("sub"), str) else None
    return found | {"user": user, "act": chain}


def delegated_claims(
    *,
    subject: SubjectToken,
    actor: ActingInstance,
    grant: Grant,
    scope: frozenset[str] | None,
    audience: str,
    now: int,
    max_ttl: int,
    max_depth: int,
    issuer: str,
    jti: str,
    purpose_code: str | None = None,
) -> dict[str, Any]:
    """The claims of the delegated token, or the OAuth error that refuses it."""
    _check_grant(subject, actor, grant, now, purpose_code)
    _check_actor(subject, actor, max_depth)
    allowed = grant.scopes if subject.scopes is None else grant.scopes & subject.scopes
    granted = allowed if scope is None else scope
    if not granted <= allowed:
        raise InvalidScope("the requested scope is wider than the grant and the subject token")
    if not granted:
        raise InvalidScope("no scope is left for this agent: the grant and the token share none")
    expires = min(subject.expires_at, int(grant.expires_at.timestamp()), now + max_ttl)
    if expires <= now:
        raise InvalidGrant("the subject token or the grant has expired")
    act: dict[str, Any] = {"sub": actor.spiffe_id}
    if subject.act is not None:
        act["act"] = dict(subject.act)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject.user,
        "aud": audience,
        "act": act,
        "client_id": actor.agent_spiffe_id,
        "scope": " ".join(sorted(granted)),
        "purpose": grant.purpose_code,
        "grant_id": grant.id,
        "token_use": "delegated",
        "iat": now,
        "nbf": now,
        "exp": expires,
        "jti": jti,
    }
    if subject.session is not None:
        claims["sid"] = subject.session
    if subject.app is not None:
        claims["app"] = subject.app
    if subject.grants:
        claims["prior_grants"] = list(subject.grants)
    if subject.lineage:
        claims["prior_jtis"] = list(subject.lineage)
    if actor.cnf is not None:
        claims["cnf"] = dict(actor.cnf)
    return claims


def _check_grant(
    subject: SubjectToken,
    actor: ActingInstance,
    grant: Grant,
    now: int,
    purpose_code: str | None,
) -> None:
    if grant.user != subject.user or grant.agent != actor.agent:
        raise InvalidGrant("no grant of this user for this agent")
    if not grant.in_force(datetime.fromtimestamp(now, tz=UTC)):
        raise InvalidGrant("the grant is revoked or expired")
    if grant.session is not None and grant.session != subject.session:
        raise InvalidGrant("the grant belongs to another sign-in session")
    for code in (subject.purpose_code, purpose_code):
        if code is not None and code != grant.purpose_code:
            raise InvalidGrant("the purpose differs from the grant's")


def _check_actor(subject: SubjectToken, actor: ActingInstance, max_depth: int) -> None:
    chain = act_chain(subject.act)
    if len(chain) + 1 > max_depth:
        raise InvalidRequest(f"the delegation chain would be deeper than {max_depth}")
    may_act = subject.may_act
    if may_act is not None:
        named = may_act.get("sub") if isinstance(may_act, Mapping) else None
        if named not in (actor.spiffe_id, actor.agent_spiffe_id):
            raise InvalidRequest("the subject token's may_act does not name this actor")
