"""``/v1/mcp/servers``: the MCP gateway's upstream servers and their tool pins, and the
RFC 9728 metadata of the gateway's resources.

A ``platform-admin`` adds a server (its tools listed and the clean ones approved at once),
reviews and approves tools that wait (``POST …/tools/{tool}/approve`` with the ``digest`` they
reviewed), and removes servers. Agents reach a server at ``/mcp/<name>``; MCP clients find
how to get a token for it at ``/.well-known/oauth-protected-resource/mcp/<name>``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field

from tether.api.deps import OperatorDep, ServicesDep
from tether.api.schemas import Strict
from tether.enforcement.mcp.asgi import resource_metadata
from tether.enforcement.mcp.models import Injection, ToolPin, Upstream
from tether.errors import McpServerNotFound

router = APIRouter(tags=["mcp"])
Json = dict[str, Any]


class InjectionIn(Strict):
    engine: str = Field(max_length=63)
    role: str = Field(max_length=63)
    header: str | None = Field(default="Authorization", max_length=64)
    prefix: str = Field(default="Bearer ", max_length=64)
    env: str | None = Field(default=None, max_length=128)


class ServerIn(Strict):
    name: str = Field(max_length=63)
    url: str | None = Field(default=None, max_length=2048)
    command: list[str] | None = Field(default=None, max_length=64)
    credential: InjectionIn | None = None
    allowed_tools: list[str] | None = Field(default=None, max_length=1024)


class ApproveIn(Strict):
    #: The definition digest the reviewer looked at (``seen_digest``); omitted: the last seen.
    digest: str | None = Field(default=None, max_length=80)


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def server_json(upstream: Upstream) -> Json:
    credential = upstream.credential
    return {
        "name": upstream.name,
        "transport": str(upstream.transport),
        "url": upstream.url,
        "command": list(upstream.command) or None,
        "credential": None if credential is None else {
            "engine": credential.engine, "role": credential.role, "header": credential.header,
            "prefix": credential.prefix, "env": credential.env,
        },
        "allowed_tools": None if upstream.allowed_tools is None else sorted(upstream.allowed_tools),
        "created_at": _iso(upstream.created_at),
        "created_by": upstream.created_by,
        "version": upstream.version,
    }  # fmt: skip


def pin_json(pin: ToolPin) -> Json:
    return {
        "tool": pin.tool,
        "state": str(pin.state),
        "usable": pin.usable,
        "reason": pin.reason,
        "digest": pin.digest,
        "seen_digest": pin.seen_digest,
        "definition": dict(pin.definition),
        "first_seen_at": _iso(pin.first_seen_at),
        "approved_by": pin.approved_by,
        "approved_at": _iso(pin.approved_at),
    }


@router.post("/v1/mcp/servers", status_code=201, summary="Add an upstream MCP server")
async def add(body: ServerIn, actor: OperatorDep, services: ServicesDep) -> Json:
    credential = Injection(**body.credential.model_dump()) if body.credential else None
    upstream, pins = await services.mcp.registry.add(
        actor=actor, name=body.name, url=body.url, command=body.command,
        credential=credential, allowed_tools=body.allowed_tools,
    )  # fmt: skip
    return server_json(upstream) | {"tools": [pin_json(p) for p in pins]}


@router.get("/v1/mcp/servers", summary="List the upstream MCP servers")
async def list_servers(actor: OperatorDep, services: ServicesDep) -> Json:
    servers = await services.mcp.registry.servers(actor=actor)
    return {"servers": [server_json(s) for s in servers]}


@router.get("/v1/mcp/servers/{name}", summary="Show a server and its tools' pins")
async def show(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    upstream, pins = await services.mcp.registry.get(name, actor=actor)
    return server_json(upstream) | {"tools": [pin_json(p) for p in pins]}


@router.delete("/v1/mcp/servers/{name}", summary="Remove a server (its pins go with it)")
async def remove(name: str, actor: OperatorDep, services: ServicesDep) -> Json:
    await services.mcp.registry.remove(name, actor=actor)
    await services.mcp.forget(name)
    return {"removed": name}


@router.post(
    "/v1/mcp/servers/{name}/tools/{tool:path}/approve",
    summary="Approve (pin) a tool's definition as last seen",
)
async def approve_tool(
    name: str, tool: str, body: ApproveIn, actor: OperatorDep, services: ServicesDep
) -> Json:
    pin = await services.mcp.registry.approve_tool(name, tool, actor=actor, digest=body.digest)
    services.mcp.gateway.forget(name)
    return pin_json(pin)


@router.get(
    "/.well-known/oauth-protected-resource/mcp/{name}",
    summary="RFC 9728 metadata of an MCP server behind the gateway",
)
async def protected_resource(name: str, services: ServicesDep) -> JSONResponse:
    if await services.mcp.registry.upstream(name) is None:
        raise McpServerNotFound(f"no MCP server {name!r}")
    body = resource_metadata(services.settings.issuer_url, name)
    return JSONResponse(body, headers={"cache-control": "public, max-age=300"})
