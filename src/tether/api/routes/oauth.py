"""``POST /oauth2/token``: RFC 6749 §4.4 client credentials for agent instances.

Client authentication is ``private_key_jwt`` (RFC 7523) or ``tls_client_auth`` (RFC 8705);
the requested audiences come from RFC 8707 ``resource`` or ``audience`` parameters; the answer is
a JWT-SVID. Parameters may not repeat (RFC 6749 §3.2), except ``resource`` and ``audience``.
Token exchange and CIBA grants join this endpoint in later work.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tether.api.deps import ServicesDep, client_certificate
from tether.errors import (
    CertificateInvalid,
    InvalidRequest,
    InvalidScope,
    UnsupportedGrantType,
)
from tether.identity.client_auth import AuthenticatedClient

router = APIRouter(tags=["oauth"])
_REPEATABLE = frozenset({"resource", "audience"})
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _form(request: Request) -> tuple[dict[str, str], dict[str, list[str]]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("the token endpoint takes application/x-www-form-urlencoded")
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


@router.post("/oauth2/token", summary="Issue a JWT-SVID to an authenticated agent instance")
async def token(request: Request, services: ServicesDep) -> JSONResponse:
    params, multi = await _form(request)
    grant_type = params.get("grant_type")
    if not grant_type:
        raise InvalidRequest("grant_type is required")
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
    client = await _authenticate(request, services, params)
    issued = await services.svids.issue_jwt_svid(client, audience=audience)
    return JSONResponse(
        {
            "access_token": issued.token,
            "token_type": issued.token_type,
            "expires_in": issued.expires_in,
        },
        headers=_NO_STORE,
    )


async def _authenticate(
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
