"""``/v1/users``: the people of the built-in OpenID provider, managed by security admins.

A user reads themselves (``GET /v1/users/{name}`` with their own access token) and changes
their own password; a password never comes back in any response. ``PUT /v1/users/{name}/role``
gives a person a console role or takes it away (``{"role": null}``); ``root`` and
``enforcement-point`` are refused (``400 invalid_input``, field ``role``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from tether.api.delegation_schemas import PasswordIn, RoleIn, UserIn, user_json
from tether.api.deps import OperatorDep, ServicesDep, caller

router = APIRouter(prefix="/v1/users", tags=["users"])
Json = dict[str, Any]


@router.post("", status_code=201, summary="Add a user to the built-in provider")
async def add(body: UserIn, actor: OperatorDep, services: ServicesDep) -> Json:
    user = await services.delegation.users.add(
        actor=actor,
        name=body.name,
        password=body.password,
        display_name=body.display_name,
        email=body.email,
        role=body.role,
    )
    return user_json(user)


@router.get("", summary="List users")
async def list_users(
    actor: OperatorDep,
    services: ServicesDep,
    *,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> Json:
    users = await services.delegation.users.list(actor=actor, limit=limit, after=after)
    return {"users": [user_json(u) for u in users]}


@router.get("/{name}", summary="Show a user")
async def show(name: str, request: Request, services: ServicesDep) -> Json:
    actor = await caller(request, services, users=True)
    return user_json(await services.delegation.users.get(name, actor=actor))


@router.post("/{name}/disable", summary="Disable a user and revoke every grant they gave")
async def disable(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    return user_json(await services.delegation.users.disable(name, actor=actor))


@router.post("/{name}/enable", summary="Enable a disabled user (their grants stay revoked)")
async def enable(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    return user_json(await services.delegation.users.enable(name, actor=actor))


@router.put("/{name}/password", summary="Set a user's password (admins, or the user)")
async def set_password(
    name: str, body: PasswordIn, request: Request, services: ServicesDep
) -> Json:
    actor = await caller(request, services, users=True)
    user = await services.delegation.users.set_password(
        name, body.password, actor=actor, current=body.current_password
    )
    return user_json(user)


@router.put("/{name}/role", summary="Give a person a console role, or take it away (null)")
async def set_role(name: str, body: RoleIn, actor: OperatorDep, services: ServicesDep) -> Json:
    return user_json(await services.delegation.users.set_role(name, body.role, actor=actor))
