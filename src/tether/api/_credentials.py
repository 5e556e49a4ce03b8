"""Wiring of the credential services: the engine kinds, the lease service, the revoker.

Built once by :class:`tether.api.services.Services` from the settings; kept apart so that the
composition root stays one screen per concern.
"""

from __future__ import annotations

from tether._internal.clock import Clock
from tether.audit.sink import AuditSink
from tether.checkpoint import Checkpoint
from tether.config import Settings
from tether.credentials._postgres import open_postgres_engine, validate_postgres_settings
from tether.credentials.engines import EngineKind, Engines
from tether.credentials.leases import Leases
from tether.credentials.lifecycle import RetryPolicy
from tether.credentials.models import EngineConfig
from tether.credentials.revocation import Revoker
from tether.credentials.tokens import (
    TOKEN_KIND,
    DownstreamTokenEngine,
    open_token_engine,
    validate_token_settings,
)
from tether.credentials.vault import (
    MAX_MAP_BYTES,
    VAULT_KIND,
    open_vault_engine,
    validate_vault_settings,
)
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing
from tether.monitor.events import EventStream
from tether.store.interfaces import Store

__all__ = ["credential_services", "engine_kinds"]


def engine_kinds(settings: Settings, clock: Clock, keyring: KeyRing) -> dict[str, EngineKind]:
    """The kinds of engine a platform admin may configure."""

    async def open_tokens(config: EngineConfig, secret: str | None) -> DownstreamTokenEngine:
        # Never an audience Tether's own tokens are for; no longer than a retired signing
        # key stays published.
        return await open_token_engine(
            config,
            secret,
            keyring=keyring,
            clock=clock,
            issuer=settings.issuer_url,
            reserved_audiences=settings.audiences | {settings.token_endpoint},
            max_ttl=settings.jwt_svid_ttl_seconds,
        )

    return {
        "postgres": EngineKind(
            open=open_postgres_engine, validate=validate_postgres_settings, needs_group=True
        ),
        VAULT_KIND: EngineKind(
            open=open_vault_engine,
            validate=validate_vault_settings,
            needs_group=False,
            max_secret=MAX_MAP_BYTES,
        ),
        TOKEN_KIND: EngineKind(
            open=open_tokens, validate=validate_token_settings, needs_group=False
        ),
    }


def credential_services(  # noqa: PLR0917 - called once, by Services
    settings: Settings,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    kek: KeyEncryptionKey,
    events: EventStream,
    checkpoint: Checkpoint,
    keyring: KeyRing,
) -> tuple[Engines, Revoker, Leases]:
    engines = Engines(
        store=store,
        audit=audit,
        clock=clock,
        kek=kek,
        kinds=engine_kinds(settings, clock, keyring),
        ttl_ceiling=settings.lease_ttl_ceiling_seconds,
    )
    revoker = Revoker(
        store=store,
        engines=engines,
        audit=audit,
        clock=clock,
        events=events,
        retry=RetryPolicy(max_attempts=settings.lease_revoke_max_attempts),
        claim_seconds=settings.lease_claim_seconds,
        issuing_grace_seconds=settings.lease_issuing_grace_seconds,
    )
    leases = Leases(
        store=store,
        agents=store,
        engines=engines,
        checkpoint=checkpoint,
        audit=audit,
        clock=clock,
        revoker=revoker,
    )
    return engines, revoker, leases
