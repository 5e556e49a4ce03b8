"""``/v1/clients``: the OAuth clients of the built-in provider (applications people sign in
to), registered by administrators with their exact redirect URIs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from tether.api.deps import OperatorDep, ServicesDep
from tether.api.schemas import Strict
from tether.delegation.clients import MAX_REDIRECTS
from tether.delegation.models import OAuthClient

router = APIRouter(prefix="/v1/clients", tags=["clients"])
Json = dict[str, Any]


class ClientIn(Strict):
    client_id: str = Field(max_length=63)
    name: str = Field(default="", max_length=200)
    redirect_uris: list[str] = Field(max_length=MAX_REDIRECTS)
    agent: str | None = Field(default=None, max_length=63)


def client_json(client: OAuthClient) -> Json:
    return {
        "client_id": client.id,
        "name": client.name,
        "redirect_uris": list(client.redirect_uris),
        "agent": client.agent,
        "token_endpoint_auth_method": "none",
        "created_at": client.created_at.isoformat(),
        "created_by": client.created_by,
    }


@router.post("", status_code=201, summary="Register an OAuth client (public, PKCE)")
async def add(body: ClientIn, actor: OperatorDep, services: ServicesDep) -> Json:
    client = await services.delegation.clients.add(
        actor=actor,
        client_id=body.client_id,
        name=body.name,
        redirect_uris=body.redirect_uris,
        agent=body.agent,
    )
    return client_json(client)


@router.get("", summary="List OAuth clients")
async def list_clients(actor: OperatorDep, services: ServicesDep) -> Json:
    return {
        "clients": [client_json(c) for c in await services.delegation.clients.list(actor=actor)]
    }


@router.delete("/{client_id}", summary="Remove an OAuth client")
async def remove(client_id: str, actor: OperatorDep, services: ServicesDep) -> Json:
    await services.delegation.clients.remove(client_id, actor=actor)
    return {"removed": client_id}
