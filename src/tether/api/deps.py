"""Request dependencies: the services, the calling operator, the calling agent, the client
certificate (from the TLS connection or, when configured, a trusted proxy's header)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Request

from tether.api.services import Services
from tether.crypto.ca import VerifiedClientCertificate
from tether.crypto.jwt import declared_type
from tether.errors import Unauthenticated
from tether.identity.access import Actor
from tether.identity.operators import TOKEN_PREFIX
from tether.identity.svid import AgentCaller

__all__ = [
    "AgentDep",
    "OperatorDep",
    "ServicesDep",
    "bearer_token",
    "caller",
    "client_certificate",
]


async def get_services(request: Request) -> Services:
    # async: a plain function dependency would cost a worker-thread hop on every request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send a bearer token: Authorization: Bearer <token>")
    return token.strip()


async def current_operator(request: Request, services: ServicesDep) -> Actor:
    return await services.operators.authenticate(bearer_token(request))


OperatorDep = Annotated[Actor, Depends(current_operator)]


def client_certificate(request: Request, services: Services) -> VerifiedClientCertificate | None:
    """The caller's verified X.509-SVID, or None when it presented none."""
    raw: bytes | None = None
    tls = request.scope.get("extensions", {}).get("tls", {})
    chain = tls.get("client_cert_chain") or []
    if chain:
        raw = chain[0].encode() if isinstance(chain[0], str) else chain[0]
    settings = services.settings
    header = settings.forwarded_client_cert_header
    peer = request.client.host if request.client else None
    if raw is None and header and request.headers.get(header) and settings.is_trusted_proxy(peer):
        raw = unquote(request.headers[header]).encode()
    if raw is None:
        return None
    return services.keyring.ca.verify_client_certificate(raw, now=services.clock.now())


async def current_agent(request: Request, services: ServicesDep) -> AgentCaller:
    cert = client_certificate(request, services)
    return await services.svids.verify_agent_token(
        bearer_token(request), certificate_thumbprint=cert.thumbprint if cert else None
    )


AgentDep = Annotated[AgentCaller, Depends(current_agent)]


async def caller(request: Request, services: Services, *, users: bool = False) -> Actor:
    """Whoever presents the bearer token: an operator (operator token), an agent instance
    (its JWT-SVID), or — where ``users`` — a person with a token of their own account
    (:meth:`~tether.delegation.tokens.AccessTokens.user_of`)."""
    token = bearer_token(request)
    if token.startswith(TOKEN_PREFIX):
        return await services.operators.authenticate(token)
    if users and declared_type(token) == "AT+JWT":
        return Actor.user(name=await services.delegation.tokens.user_of(token))
    cert = client_certificate(request, services)
    agent = await services.svids.verify_agent_token(
        token, certificate_thumbprint=cert.thumbprint if cert else None
    )
    return Actor.agent(spiffe_id=agent.spiffe_id)
