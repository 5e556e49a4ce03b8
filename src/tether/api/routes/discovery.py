"""Discovery: RFC 8414 authorization-server metadata, OpenID Connect Discovery 1.0, the JWKS
(RFC 7517) and the SPIFFE trust bundle — everything a generic OAuth client or a SPIFFE library
needs, and nothing that is not implemented."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from tether.api.deps import ServicesDep
from tether.config import Settings
from tether.crypto.jwk import AGENT_KEY_ALGORITHMS
from tether.crypto.jwt import TOKEN_ALGORITHM
from tether.delegation.ciba import GRANT_TYPE as CIBA
from tether.delegation.token_exchange import GRANT_TYPE as TOKEN_EXCHANGE

router = APIRouter(tags=["discovery"])


def metadata(settings: Settings) -> dict[str, Any]:
    base = settings.issuer_url
    return {
        "issuer": base,
        "token_endpoint": settings.token_endpoint,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "userinfo_endpoint": f"{base}/oauth2/userinfo",
        "grant_types_supported": [
            "authorization_code",
            "client_credentials",
            TOKEN_EXCHANGE,
            CIBA,
        ],
        "backchannel_authentication_endpoint": f"{base}/oauth2/bc-authorize",
        "backchannel_token_delivery_modes_supported": ["poll", "ping"],
        "backchannel_user_code_parameter_supported": False,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "revocation_endpoint": f"{base}/oauth2/revoke",
        "revocation_endpoint_auth_methods_supported": ["none"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt", "tls_client_auth"],
        "token_endpoint_auth_signing_alg_values_supported": sorted(AGENT_KEY_ALGORITHMS),
        "tls_client_certificate_bound_access_tokens": True,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [TOKEN_ALGORITHM],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": ["sub", "preferred_username", "name", "email", "sid", "auth_time"],
        "spiffe_trust_domain": settings.trust_domain,
        "spiffe_bundle_endpoint": f"{base}/v1/svid/bundle",
        "service_documentation": f"{base}/docs",
    }


@router.get("/.well-known/oauth-authorization-server", summary="RFC 8414 metadata")
async def oauth_metadata(services: ServicesDep) -> dict[str, Any]:
    return metadata(services.settings)


@router.get("/.well-known/openid-configuration", summary="OpenID Connect Discovery")
async def openid_configuration(services: ServicesDep) -> dict[str, Any]:
    return metadata(services.settings)


@router.get("/.well-known/jwks.json", summary="Public keys that verify Tether's tokens")
async def jwks(services: ServicesDep) -> Response:
    return _json(services.keyring.jwks(now=services.clock.now()), max_age=300)


@router.get("/v1/svid/bundle", summary="SPIFFE trust bundle (JWT and X.509 authorities)")
async def spiffe_bundle(services: ServicesDep) -> Response:
    return _json(services.keyring.spiffe_bundle(now=services.clock.now()), max_age=300)


@router.get(
    "/v1/svid/bundle.pem",
    summary="The X.509 CA certificate, PEM",
    response_class=Response,
    responses={200: {"content": {"application/x-pem-file": {"schema": {"type": "string"}}}}},
)
async def bundle_pem(services: ServicesDep) -> Response:
    return Response(
        services.keyring.ca.bundle_pem(),
        media_type="application/x-pem-file",
        headers={"Cache-Control": "max-age=300"},
    )


def _json(body: dict[str, object], *, max_age: int) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        media_type="application/json",
        headers={"Cache-Control": f"max-age={max_age}"},
    )
