"""Wiring of the delegation services: users, grants, access tokens, token exchange and
approvals (CIBA).

Built once by :class:`tether.api.services.Services`; kept apart so the composition root stays
one screen per concern. The order matters: the access tokens come first (the checkpoint
verifies delegated tokens with them), the exchanger last (it asks the checkpoint's policy set
whether an agent may act for a user).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from tether._internal.clock import Clock
from tether._internal.readthrough import ReadThrough
from tether.api._notify import notifier, ping_agent, sinks_from
from tether.audit.sink import AuditSink
from tether.checkpoint import Checkpoint
from tether.config import Settings
from tether.credentials.leases import Leases
from tether.credentials.models import LeaseMatch
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing
from tether.crypto.passwords import PasswordCost, PasswordHasher
from tether.crypto.sealed import Sealer
from tether.delegation.approvals import Approvals
from tether.delegation.clients import Clients
from tether.delegation.exchange import TokenExchanger
from tether.delegation.federated_login import FederatedSignIn
from tether.delegation.federation import ExternalProvider, Federation
from tether.delegation.grants import Grants
from tether.delegation.models import Grant, User
from tether.delegation.provider import Provider
from tether.delegation.tokens import AccessTokens
from tether.delegation.users import Users
from tether.errors import Unauthenticated
from tether.identity.access import Actor
from tether.identity.directory import AgentDirectory
from tether.identity.revocations import RevocationList
from tether.identity.svid import SvidIssuer
from tether.store.interfaces import Store

__all__ = ["Delegation", "access_tokens", "delegation_services"]


#: What the sealed values of the built-in provider (requests, codes, sessions) are keyed with.
SEALING_PURPOSE = b"tether sealed values v1"

log = structlog.get_logger("tether.approvals")


@dataclass(frozen=True, kw_only=True)
class Delegation:
    users: Users
    grants: Grants
    tokens: AccessTokens
    exchanger: TokenExchanger
    clients: Clients
    provider: Provider
    approvals: Approvals
    #: Seals the values handed to browsers (one purpose each): codes, sessions, forms.
    sealer: Sealer
    #: Signing in through an external provider (None when none is configured).
    federated: FederatedSignIn | None = None


def access_tokens(
    settings: Settings,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    *,
    keyring: KeyRing,
    revocations: RevocationList,
) -> tuple[AccessTokens, Grants]:
    """The access tokens (with the grants whose cache they read)."""
    grants = Grants(
        store=store,
        users=store,
        agents=store,
        audit=audit,
        clock=clock,
        max_ttl_seconds=settings.grant_max_ttl_seconds,
        cache_seconds=settings.agent_cache_seconds,
    )
    users: ReadThrough[str, User] = ReadThrough(store.get_user, ttl=settings.agent_cache_seconds)
    providers = [
        ExternalProvider(name=name, issuer=issuer, audience=audience)
        for name, issuer, audience in settings.external_providers
    ]
    federation = (
        Federation(providers=providers, fetch=fetch_json, users=store, audit=audit, clock=clock)
        if providers
        else None
    )
    tokens = AccessTokens(
        keyring=keyring,
        clock=clock,
        audit=audit,
        issuer=settings.issuer_url,
        users=users,
        grants=grants.cache,
        revocations=revocations,
        user_token_ttl=settings.user_token_ttl_seconds,
        federation=federation,
    )
    return tokens, grants


#: The most an external provider's discovery document or key set may weigh.
MAX_FETCHED = 256 * 1024


async def fetch_json(url: str) -> Mapping[str, Any]:
    """GET an external provider's document (the federation checked the address with
    :func:`tether.delegation.federation.reachable`): no redirects, 5 s in all, at most
    256 KiB, a JSON object — else ``Unauthenticated`` (the token is refused)."""
    try:
        async with (
            asyncio.timeout(5.0),
            httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_FETCHED:
                    raise Unauthenticated("the provider's document is too large")
        document = json.loads(body) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, TimeoutError) as exc:
        raise Unauthenticated("the external provider cannot be read") from exc
    if not isinstance(document, dict):
        raise Unauthenticated("the external provider answered no JSON object")
    return document


async def post_form(url: str, form: Mapping[str, str]) -> tuple[int, Mapping[str, Any]]:
    """POST a form to an external provider's token endpoint (Tether redeeming the code of a
    federated sign-in): the same limits as :func:`fetch_json`."""
    try:
        async with asyncio.timeout(5.0), httpx.AsyncClient(timeout=5.0) as client:
            response = await client.post(url, data=dict(form), follow_redirects=False)
            if len(response.content) > MAX_FETCHED:
                raise Unauthenticated("the provider's answer is too large")
            body = response.json()
    except (httpx.HTTPError, ValueError, TimeoutError) as exc:
        raise Unauthenticated("the external provider cannot be reached") from exc
    return response.status_code, body if isinstance(body, dict) else {}


def delegation_services(
    settings: Settings,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    *,
    tokens: AccessTokens,
    grants: Grants,
    svids: SvidIssuer,
    directory: AgentDirectory,
    checkpoint: Checkpoint,
    leases: Leases,
    kek: KeyEncryptionKey,
) -> Delegation:
    hasher = PasswordHasher(
        PasswordCost(time_cost=settings.password_time_cost, memory_kib=settings.password_memory_kib)
    )

    async def end_leases(grant: Grant, actor: Actor, reason: str | None) -> None:
        await leases.revoke_all(LeaseMatch(grant_id=grant.id), actor=Actor.system(), reason=reason)

    async def revoke_grants(user: str, actor: Actor) -> None:
        await grants.revoke_user(user, actor)
        tokens.forget_user(user)

    grants.on_revoke(end_leases)
    users = Users(
        store=store, audit=audit, clock=clock, hasher=hasher, issuer=settings.issuer_url,
        on_disable=revoke_grants, on_change=tokens.forget_user,
    )  # fmt: skip
    exchanger = TokenExchanger(
        tokens=tokens,
        svids=svids,
        grants=grants,
        directory=directory,
        act_for=checkpoint.act_for,
        audit=audit,
        clock=clock,
        issuer=settings.issuer_url,
        trust_domain=settings.trust_domain,
        audiences=frozenset(settings.allowed_audiences),
        max_ttl=settings.delegated_token_max_ttl_seconds,
        max_depth=settings.max_delegation_depth,
    )
    clients = Clients(
        store=store, agents=store, audit=audit, clock=clock, issuer=settings.issuer_url
    )
    sealer = Sealer(kek.derive(SEALING_PURPOSE))
    provider = Provider(
        clients=clients, users=users, grants=grants, tokens=tokens, directory=directory,
        replay=store, sealer=sealer, audit=audit, clock=clock,
        issuer=settings.issuer_url, session_ttl=settings.user_session_ttl_seconds,
    )  # fmt: skip
    federated = _federated(settings, clock, audit, tokens=tokens, provider=provider, sealer=sealer)
    approvals = _approvals(settings, clock, store, audit, tokens=tokens, sealer=sealer)
    return Delegation(
        users=users, grants=grants, tokens=tokens, exchanger=exchanger, clients=clients,
        provider=provider, approvals=approvals, sealer=sealer, federated=federated,
    )  # fmt: skip


def _approvals(
    settings: Settings,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    *,
    tokens: AccessTokens,
    sealer: Sealer,
) -> Approvals:
    """Approvals (CIBA): the people told by the configured sinks, agents in ping mode by
    HTTP, problems logged."""
    return Approvals(
        store=store, users=store, grants=store, tokens=tokens, audit=audit, clock=clock,
        issuer=settings.issuer_url, max_expiry=settings.approval_max_expiry_seconds,
        default_expiry=min(300, settings.approval_max_expiry_seconds),
        per_user_per_minute=settings.approval_requests_per_minute,
        notify=notifier(sinks_from(settings, clock=clock)), on_problem=_problem,
        sealer=sealer, ping=functools.partial(ping_agent, private_ok=settings.dev),
    )  # fmt: skip


def _problem(kind: str, details: Mapping[str, object]) -> None:
    """A problem the approvals report (``approval.notify_failed``: nobody was told of a
    request, which waits in the inbox; ``approval.ping_failed``: an agent in ping mode was
    not told of the answer, which it may still poll for), logged as the audit log's
    problems are."""
    log.error(kind, **details)


def _federated(
    settings: Settings,
    clock: Clock,
    audit: AuditSink,
    *,
    tokens: AccessTokens,
    provider: Provider,
    sealer: Sealer,
) -> FederatedSignIn | None:
    """Signing in through the external providers, when some are configured."""
    if tokens.federation is None:
        return None
    return FederatedSignIn(
        federation=tokens.federation, provider=provider, sealer=sealer, post_form=post_form,
        audit=audit, clock=clock, issuer=settings.issuer_url,
    )  # fmt: skip
