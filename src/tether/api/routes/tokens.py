"""``/v1/tokens``: operator tokens for people and enforcement points (minted with the root
token; ``role`` is any role but ``root``, e.g. ``enforcement-point`` for a gateway that asks
for decisions on agents' behalf)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tether.api.deps import OperatorDep, ServicesDep
from tether.api.schemas import TokenCreate, token_json

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.post("", status_code=201, summary="Mint an operator token (root only); shown once")
async def create(body: TokenCreate, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    token, secret = await services.operators.create(
        actor=actor, role=body.role, display_name=body.display_name, ttl_seconds=body.ttl_seconds
    )
    return token_json(token) | {"token": secret}


@router.get("", summary="List operator tokens (never their secrets)")
async def list_tokens(actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    return {"tokens": [token_json(t) for t in await services.operators.list(actor=actor)]}


@router.delete("/{token_id}", summary="Revoke an operator token at once")
async def revoke(token_id: str, actor: OperatorDep, services: ServicesDep) -> dict[str, Any]:
    return token_json(await services.operators.revoke(token_id, actor=actor))


@router.get("/self", summary="Who am I: the calling token's role and name")
async def lookup_self(actor: OperatorDep) -> dict[str, Any]:
    return {"id": actor.id, "display_name": actor.name, "role": str(actor.role)}
