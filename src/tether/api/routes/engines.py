"""``/v1/engines``: credential engines, configured by platform admins.

The admin secret goes in (``secret``) and never comes out: responses say only ``secret_set``.
The secrets of a vault engine go in one at a time (``PUT /v1/engines/{name}/secrets/{secret}``)
and never come out either: only their names are listed.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tether.api.credential_schemas import EngineIn, SecretIn, engine_json
from tether.api.deps import OperatorDep, ServicesDep

router = APIRouter(prefix="/v1/engines", tags=["engines"])
Json = dict[str, Any]


@router.put("/{name}", summary="Configure an engine (create it, or replace its configuration)")
async def configure(name: str, body: EngineIn, actor: OperatorDep, services: ServicesDep) -> Json:
    engine = await services.engines.configure(
        actor=actor,
        name=name,
        kind=body.kind,
        settings=body.settings,
        roles=[role.to_domain() for role in body.roles],
        secret=body.secret,
    )
    return engine_json(engine)


@router.get("", summary="List engines")
async def list_engines(actor: OperatorDep, services: ServicesDep) -> Json:
    return {"engines": [engine_json(e) for e in await services.engines.list(actor=actor)]}


@router.get("/{name}", summary="Show an engine")
async def show(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    return engine_json(await services.engines.get(name, actor=actor))


@router.delete("/{name}", summary="Remove an engine no live lease uses")
async def remove(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    await services.engines.remove(name, actor=actor)
    return {"removed": name}


@router.get("/{name}/unmanaged-logins", summary="Logins in the engine Tether did not create")
async def unmanaged(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    logins = await services.engines.unmanaged_logins(name, actor=actor)
    return {"engine": name, "logins": [{"name": n.name, **dict(n.details)} for n in logins]}


@router.get("/{name}/secrets", summary="Names of a vault engine's secrets (never a value)")
async def secret_names(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    return {"engine": name, "secrets": await services.engines.secret_names(name, actor=actor)}


@router.put("/{name}/secrets/{secret}", summary="Set one secret of a vault engine")
async def put_secret(
    name: str, secret: str, body: SecretIn, actor: OperatorDep, services: ServicesDep
) -> Json:
    engine = await services.engines.put_secret(name, secret, body.value, actor=actor)
    return {"engine": name, "secret": secret, "version": engine.version}


@router.delete("/{name}/secrets/{secret}", summary="Remove one secret of a vault engine")
async def delete_secret(name: str, secret: str, actor: OperatorDep, services: ServicesDep) -> Json:
    engine = await services.engines.delete_secret(name, secret, actor=actor)
    return {"engine": name, "deleted": secret, "version": engine.version}
