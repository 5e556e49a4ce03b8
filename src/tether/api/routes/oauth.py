"""``POST /oauth2/token`` and its companions.

* ``client_credentials`` (RFC 6749 §4.4) for agent instances: client authentication is
  ``private_key_jwt`` (RFC 7523) or ``tls_client_auth`` (RFC 8705); audiences come from RFC 8707
  ``resource`` or ``audience``; the answer is a JWT-SVID.
* ``authorization_code`` (RFC 6749 §4.1.3, PKCE): the built-in provider's code for a user's
  access token and ID token (:mod:`tether.delegation.provider`).
* ``urn:ietf:params:oauth:grant-type:token-exchange`` (RFC 8693): a user's or delegated token
  for a delegated token, for the instance named by ``actor_token`` or by client
  authentication (:mod:`tether.delegation.exchange`).
* ``urn:openid:params:grant-type:ciba`` (OpenID CIBA Core §10.1 and §10.2, poll and ping
  modes): an approved request's ``auth_req_id`` for its approval token
  (:mod:`tether.api.routes.approvals`).
* ``POST /oauth2/introspect`` (RFC 7662) for resource servers, ``POST /oauth2/revoke``
  (RFC 7009) for whoever holds a user's or delegated token.

Parameters may not repeat (RFC 6749 §3.2), except ``resource`` and ``audience``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from tether.api.deps import ServicesDep, caller, client_certificate
from tether.delegation.ciba import GRANT_TYPE as CIBA
from tether.delegation.token_exchange import GRANT_TYPE as TOKEN_EXCHANGE
from tether.delegation.token_exchange import parse_exchange_request
from tether.errors import (
    CertificateInvalid,
    InvalidRequest,
    InvalidScope,
    UnsupportedGrantType,
    UnsupportedTokenType,
)
from tether.identity.access import Actor, Permission, require
from tether.identity.client_auth import AuthenticatedClient
from tether.identity.names import agent_spiffe_id, parse_agent_spiffe_id, parse_spiffe_id

router = APIRouter(tags=["oauth"])
_REPEATABLE = frozenset({"resource", "audience"})
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def read_form(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("this endpoint takes application/x-www-form-urlencoded")
    form = await request.form()
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidRequest("file uploads are not accepted")
        if key in _REPEATABLE:
            multi.setdefault(key, []).append(value)
        elif key in single:
            raise InvalidRequest(f"parameter {key!r} appears more than once")
        else:
            single[key] = value
    return single, multi


@router.post(
    "/oauth2/token",
    summary="Issue a JWT-SVID (client credentials) or a delegated token (token exchange)",
)
async def token(request: Request, services: ServicesDep) -> JSONResponse:
    await services.ensure_current()  # revocations, agents, grants: never from stale state
    params, multi = await read_form(request)
    grant_type = params.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required")
    if grant_type == TOKEN_EXCHANGE:
        return await _exchange(request, services, params, multi)
    if grant_type == CIBA:
        return await _approval(request, services, params)
    if grant_type == "authorization_code":
        # A public client (RFC 6749 §2.1): PKCE, not a secret, ties the code to it.
        body = await services.delegation.provider.redeem(params)
        return JSONResponse(body, headers=NO_STORE)
    if grant_type != "client_credentials":
        raise UnsupportedGrantType(f"grant type {grant_type[:80]!r} is not supported")
    if params.get("scope", "").strip():
        raise InvalidScope("no scopes are defined for client credentials")
    if request.headers.get("authorization", "").lower().startswith("basic "):
        raise await services.client_auth.refusal(
            "client_secret_refused",
            method="client_secret_basic",
            client_id=params.get("client_id"),
            message="shared secrets are not accepted: use private_key_jwt or mTLS",
        )
    audience = services.svids.check_audience(multi.get("resource", []) + multi.get("audience", []))
    client = await authenticate_client(request, services, params)
    issued = await services.svids.issue_jwt_svid(client, audience=audience)
    return JSONResponse(
        {
            "access_token": issued.token,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
        },
        headers=NO_STORE,
    )


async def _exchange(
    request: Request,
    services: ServicesDep,
    params: dict[str, str],
    multi: dict[str, list[str]],
) -> JSONResponse:
    exchange = parse_exchange_request(params, multi)
    cert = client_certificate(request, services)
    thumbprint = cert.thumbprint if cert is not None else None
    client = None
    if "client_assertion" in params or "client_assertion_type" in params or cert is not None:
        # The actor authenticates the request itself: private_key_jwt, or its X.509-SVID.
        client = await authenticate_client(request, services, params)
    issued = await services.delegation.exchanger.exchange(
        exchange, client=client, certificate_thumbprint=thumbprint
    )
    return JSONResponse(
        {
            "access_token": issued.access_token,
            "issued_token_type": issued.issued_token_type,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        },
        headers=NO_STORE,
    )


async def _approval(
    request: Request, services: ServicesDep, params: dict[str, str]
) -> JSONResponse:
    """CIBA Core §10.1 (poll mode): the asking instance redeems its approved request."""
    client = await authenticate_client(request, services, params)
    issued = await services.delegation.approvals.redeem(
        params.get("auth_req_id", ""), client=client
    )
    return JSONResponse(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "id_token": issued.id_token,
            # RFC 9396 §7: what was granted — with a partial approval, less than was asked.
            "authorization_details": [dict(d) for d in issued.approval.approved_details],
        },
        headers=NO_STORE,
    )


async def authenticate_client(
    request: Request, services: ServicesDep, params: dict[str, str]
) -> AuthenticatedClient:
    if "client_assertion" in params or "client_assertion_type" in params:
        return await services.client_auth.private_key_jwt(
            client_id=params.get("client_id"),
            assertion_type=params.get("client_assertion_type"),
            assertion=params.get("client_assertion"),
            instance_id=params.get("instance_id"),
        )
    try:
        cert = client_certificate(request, services)
    except CertificateInvalid as exc:
        raise await services.client_auth.refusal(
            f"certificate_{exc.details.get('reason', 'invalid')}",
            method="tls_client_auth",
            client_id=params.get("client_id"),
        ) from exc
    if cert is not None:
        return await services.client_auth.tls_client(
            certificate=cert,
            client_id=params.get("client_id"),
            instance_id=params.get("instance_id"),
        )
    raise await services.client_auth.refusal(
        "no_credentials",
        method="none",
        client_id=params.get("client_id"),
        message="authenticate with private_key_jwt or an X.509-SVID client certificate",
    )


#: The claims an introspection answer repeats from an active token (RFC 7662 §2.2, plus the
#: delegation: ``act``, ``grant_id``, ``purpose``, ``sid``).
_INTROSPECTED = (
    "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id", "act", "grant_id",
    "prior_grants", "purpose", "sid", "token_use",
)  # fmt: skip


@router.post("/oauth2/introspect", summary="RFC 7662: is this access token active, and what is it")
async def introspect(request: Request, services: ServicesDep) -> JSONResponse:
    """For resource servers: an operator token allowed to evaluate decisions (an enforcement
    point: any token), or an agent's JWT-SVID (tokens meant for that agent). An inactive,
    unknown, malformed or not-yours token is ``{"active": false}`` and nothing more (§2.2)."""
    actor = await caller(request, services)
    if actor.kind == "operator":
        require(actor, Permission.DECISION_EVALUATE)
    params, _ = await read_form(request)
    await services.ensure_current()
    claims = await services.delegation.tokens.introspect(params.get("token") or "")
    if claims is None or not _may_see(actor, claims.aud):
        return JSONResponse({"active": False}, headers=NO_STORE)
    body: dict[str, object] = {"active": True, "token_type": "Bearer"}
    body |= {k: claims.claims[k] for k in _INTROSPECTED if k in claims.claims}
    return JSONResponse(body, headers=NO_STORE)


def _may_see(actor: Actor, audiences: tuple[str, ...]) -> bool:
    """An enforcement point may introspect any token; an agent only one meant for it (its
    SPIFFE ID or its instance's) — RFC 7662 §4: no scanning of others' tokens."""
    if actor.kind != "agent":
        return True
    domain = parse_spiffe_id(actor.id).trust_domain
    agent = agent_spiffe_id(domain, parse_agent_spiffe_id(actor.id, trust_domain=domain).name)
    return actor.id in audiences or agent in audiences


@router.post("/oauth2/revoke", summary="RFC 7009: revoke a user's or a delegated token")
async def revoke(request: Request, services: ServicesDep) -> Response:
    """Holding the token is the authority to end it (revoking only ever takes access away).
    The answer is 200 whether or not the token was valid (§2.2)."""
    params, _ = await read_form(request)
    token = params.get("token")
    if not token:
        raise InvalidRequest("token is required")
    hint = params.get("token_type_hint")
    if hint is not None and hint not in ("access_token", "refresh_token"):
        raise UnsupportedTokenType("token_type_hint must be access_token")
    await services.delegation.tokens.revoke(token, actor=Actor.system("oauth2-revoke"))
    return Response(status_code=200, headers=NO_STORE)
