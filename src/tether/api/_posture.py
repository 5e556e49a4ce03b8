"""Gathering the posture's inputs: the store, the engines and the policy in force (the I/O
around the pure report of :mod:`tether.monitor.posture`).

Kept here, in the API layer, because the monitor sits below the credential and delegation
domains and may not call them: this module reads agents, people, live leases, grants in
force, alerts and observed use from the store; scans the managed databases for logins Tether
did not create (:meth:`~tether.credentials.engines.Engines.scan`); and asks the real Cedar
engine, for every active agent and every candidate pair (its declared tools, the MCP tools the
gateway pinned, the roles of every engine for ``use_credential``), whether the policy set in
force allows it. The agent is evaluated acting for itself — no user, grant or scope in the
context — so a permission that needs a user's grant is not counted as standing.

Secret sprawl (:func:`match_secrets`): the engines' secrets are unsealed here, only to hash
them; the digests are compared with the ones a scanner sent and never leave this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

import structlog

from tether.api.services import Services
from tether.checkpoint._entities import agent_context, agent_entity
from tether.credentials._requests import resource_of
from tether.credentials.models import LIVE_STATES, EngineConfig, LeaseMatch
from tether.credentials.vault import VAULT_KIND
from tether.delegation.models import GrantMatch, UserState
from tether.errors import Error
from tether.identity.access import Actor, Permission, require
from tether.identity.models import Agent, AgentState
from tether.monitor.least_privilege import Capability, uid
from tether.monitor.models import Alert
from tether.monitor.posture import (
    AgentAccess,
    GrantFacts,
    LeaseFacts,
    LoginFacts,
    PostureInputs,
    PostureReport,
    SecretSource,
    assess,
)
from tether.monitor.sprawl import ManagedSecret, SecretMatch, match_digests
from tether.policy._cedar import CedarEngine
from tether.policy.engine import CompiledPolicies
from tether.policy.models import DecisionRequest, Effect, Entity, EntityRef
from tether.store.interfaces import AlertMatch

__all__ = ["MAX_DIGESTS", "match_secrets", "posture"]

log = structlog.get_logger("tether.posture")

_T = TypeVar("_T")
_PAGE = 500
#: At most this many of any one kind of object is read for a report.
MAX_ITEMS = 100_000
#: Digests one scan may send.
MAX_DIGESTS = 10_000
#: Candidate pairs evaluated per agent.
MAX_CANDIDATES = 2_000
#: Engine settings that say where credentials live (never a secret).
_LOCATION = ("host", "port", "database", "databases", "admin_user", "role_prefix")


async def posture(services: Services, *, actor: Actor, days: int) -> PostureReport:
    """The posture now, unused permissions over the last ``days``."""
    require(actor, Permission.POSTURE_READ)
    store = services.store
    now = services.clock.now()
    agents = await _all(lambda after: store.list_agents(limit=_PAGE, after=after), _name)
    configs = await store.list_engines()
    logins, failures = await _logins(services, configs)
    # Use this replica has counted but not written yet (it writes every few seconds) is
    # written first, so a call made just before the report is not reported as unused. If
    # that write fails, the report is made from what is stored (the use is kept to write).
    try:
        await services.monitor.flush_usage()
    except Error as exc:
        log.warning("posture_usage_not_written", code=exc.code)
    usage = await store.list_usage()
    compiled = services.policies.current
    usable = services.policies.refused_version is None
    access = await _access(services, agents, configs, compiled, now) if usable else []
    inputs = PostureInputs(
        agents=agents,
        people=await _people(services),
        leases=await _leases(services, configs),
        grants=await _grants(services, now),
        grant_max_ttl=services.settings.grant_max_ttl_seconds,
        logins=logins,
        scan_failures=failures,
        alerts=await _alerts(services, now - timedelta(days=days)),
        access=access,
        usage=usage,
        sources=[_source(services, c) for c in configs],
        policy_version=compiled.version,
        policy_evaluated=usable,
    )
    return assess(inputs, now=now, days=days)


# -- reading everything, page by page ---------------------------------------------------------


async def _all(
    page: Callable[[str | None], Awaitable[list[_T]]], key: Callable[[_T], str]
) -> list[_T]:
    """Every item of a listing paged by ``after`` (at most :data:`MAX_ITEMS`)."""
    found: list[_T] = []
    after: str | None = None
    while len(found) < MAX_ITEMS:
        batch = await page(after)
        found += batch
        if len(batch) < _PAGE:
            break
        after = key(batch[-1])
    return found[:MAX_ITEMS]


def _name(item: Any) -> str:
    return str(item.name)


def _id(item: Any) -> str:
    return str(item.id)


async def _people(services: Services) -> dict[str, bool]:
    """Known people by name and e-mail: active or not."""
    store = services.store
    users = await _all(lambda after: store.list_users(limit=_PAGE, after=after), _name)
    people: dict[str, bool] = {}
    for user in users:
        active = user.state is UserState.ACTIVE
        for handle in (user.name, user.email):
            if handle:
                # Known as active under one account: active.
                people[handle] = people.get(handle, False) or active
    return people


async def _leases(services: Services, configs: Sequence[EngineConfig]) -> list[LeaseFacts]:
    store = services.store
    leases = await _all(
        lambda after: store.list_leases(LeaseMatch(), states=LIVE_STATES, limit=_PAGE, after=after),
        _id,
    )
    roles = {(c.name, r.name): r.max_ttl for c in configs for r in c.roles.values()}
    return [
        LeaseFacts(
            id=x.id,
            engine=x.engine,
            role=x.role,
            agent=x.agent,
            state=str(x.state),
            created_at=x.created_at,
            expires_at=x.expires_at,
            max_expires_at=x.max_expires_at,
            role_max_ttl=roles.get((x.engine, x.role)),
        )
        for x in leases
    ]


async def _grants(services: Services, now: datetime) -> list[GrantFacts]:
    store = services.store
    grants = await _all(
        lambda after: store.list_grants(GrantMatch(), in_force_at=now, limit=_PAGE, after=after),
        _id,
    )
    return [
        GrantFacts(
            id=g.id, user=g.user, agent=g.agent, created_at=g.created_at, expires_at=g.expires_at
        )
        for g in grants
    ]


async def _alerts(services: Services, since: datetime) -> list[Alert]:
    """The ``unknown_caller`` and ``impersonation`` alerts seen since ``since``."""
    found: list[Alert] = []
    for kind in ("unknown_caller", "impersonation"):
        found += await _all(_alert_pages(services, AlertMatch(kind=kind, since=since)), _id)
    return found


def _alert_pages(
    services: Services, match: AlertMatch
) -> Callable[[str | None], Awaitable[list[Alert]]]:
    async def page(after: str | None) -> list[Alert]:
        return await services.store.list_alerts(match, limit=_PAGE, after=after)

    return page


async def _logins(
    services: Services, configs: Sequence[EngineConfig]
) -> tuple[list[LoginFacts], list[tuple[str, str]]]:
    """Logins no lease made, scanned now; for an engine that cannot be scanned, what its
    open ``unmanaged_login`` alerts say was found before."""
    found, failed = await services.engines.scan()
    logins = [
        LoginFacts(engine=e, login=x.name, details=MappingProxyType(dict(x.details)))
        for e, x in found
    ]
    down = {engine for engine, _ in failed}
    if down:
        alerts = await _all(_alert_pages(services, AlertMatch(kind="unmanaged_login")), _id)
        for alert in alerts:
            engine, login = alert.details.get("engine"), alert.details.get("login")
            if alert.active and engine in down and isinstance(login, str):
                logins.append(LoginFacts(engine=str(engine), login=login, source="alert"))
    return logins, failed


# -- what the policy in force allows ---------------------------------------------------------


def _tool(server: str, name: str, definition: Mapping[str, Any]) -> Entity:
    """``Tool::"<server>/<name>"`` as the gateway describes it to policies: read-only when
    the server marks it so (``annotations.readOnlyHint``), else state-changing."""
    notes = definition.get("annotations")
    read_only = isinstance(notes, Mapping) and notes.get("readOnlyHint") is True
    attrs = {"name": name, "data_class": "internal", "state_changing": not read_only}
    return Entity(
        ref=EntityRef("Tool", f"{server}/{name}"),
        attrs=MappingProxyType(attrs),
        parents=(EntityRef("McpServer", server),),
    )


def _declared_tool(name: str) -> Entity:
    attrs = {"name": name, "data_class": "internal", "state_changing": True}
    return Entity(ref=EntityRef("Tool", name), attrs=MappingProxyType(attrs))


async def _known(services: Services, configs: Sequence[EngineConfig]) -> dict[Capability, Entity]:
    """Resources Tether knows, as candidate pairs: pinned MCP tools, engines' roles."""
    known: dict[Capability, Entity] = {}
    for upstream in await services.store.list_upstreams():
        for pin in await services.store.list_pins(upstream.name):
            entity = _tool(upstream.name, pin.tool, pin.definition)
            known[Capability("call_tool", uid("Tool", entity.ref.id))] = entity
    for config in configs:
        for role in config.roles.values():
            entity = resource_of(config.name, config, role)
            known[Capability("use_credential", uid(entity.ref.type, entity.ref.id))] = entity
    return known


def _allowed(
    engine: CedarEngine,
    compiled: CompiledPolicies,
    agent: Agent,
    candidates: Mapping[Capability, Entity],
    now: datetime,
) -> AgentAccess:
    principal = agent_entity(agent)
    context = agent_context(now=int(now.timestamp()), instance="posture", scopes=set())
    allowed = []
    for capability, resource in list(candidates.items())[:MAX_CANDIDATES]:
        request = DecisionRequest(
            principal=principal, action=capability.action, resource=resource, context=context
        )
        effect = engine.decide(compiled, request).effect
        if effect in (Effect.ALLOW, Effect.APPROVAL_REQUIRED):
            allowed.append(capability)
    return AgentAccess(agent=agent.name, allowed=tuple(sorted(allowed)))


async def _access(
    services: Services,
    agents: Sequence[Agent],
    configs: Sequence[EngineConfig],
    compiled: CompiledPolicies,
    now: datetime,
) -> list[AgentAccess]:
    """For every active agent, the candidate pairs the policy in force allows (evaluated in
    a worker thread, with an engine of its own: a large fleet does not stall the server)."""
    known = await _known(services, configs)

    def evaluate() -> list[AgentAccess]:
        engine = CedarEngine()
        found = []
        for agent in agents:
            if agent.state is not AgentState.ACTIVE:
                continue
            candidates = dict(known)
            for tool in agent.declarations.tools:
                if "*" not in tool:
                    candidates.setdefault(
                        Capability("call_tool", uid("Tool", tool)), _declared_tool(tool)
                    )
            found.append(_allowed(engine, compiled, agent, candidates, now))
        return found

    return await asyncio.to_thread(evaluate)


# -- where secrets are kept, and which secrets found elsewhere are these ------------------------


def _source(services: Services, config: EngineConfig) -> SecretSource:
    location: dict[str, Any] = {k: config.settings[k] for k in _LOCATION if k in config.settings}
    audiences = sorted(
        {str(r.options["audience"]) for r in config.roles.values() if "audience" in r.options}
    )
    if audiences:
        location["audiences"] = audiences
    count = None
    if config.kind == VAULT_KIND:
        count = len(services.engines.held_digests(config))
    return SecretSource(
        engine=config.name,
        kind=config.kind,
        location=MappingProxyType(location),
        roles=tuple(sorted(config.roles)),
        secret_set=config.sealed_secret is not None,
        secrets=count,
    )


def _managed(services: Services, config: EngineConfig) -> list[ManagedSecret]:
    """The digests of what ``config`` holds: each vault secret, or the admin secret."""
    held = services.engines.held_digests(config)
    return [ManagedSecret(engine=config.name, kind=config.kind, name=name, sha256=sha)
            for name, sha in held.items()]  # fmt: skip


async def match_secrets(
    services: Services, *, actor: Actor, digests: Sequence[str]
) -> list[SecretMatch]:
    """Which of ``digests`` (SHA-256 of secrets found outside Tether) are the digest of a
    secret an engine holds. Security admins only: it answers whether a guess is right."""
    require(actor, Permission.POSTURE_SECRETS)
    managed = [m for c in await services.store.list_engines() for m in _managed(services, c)]
    return match_digests(digests, managed)
