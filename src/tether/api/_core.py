"""The identity, key and audit services of :class:`tether.api.services.Services`: the key
ring and the key-encryption key, this replica's audit log and id, client authentication and the
SVID issuer. Built once at start; kept apart so that the composition root stays about wiring.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

import structlog

from tether._internal.clock import Clock
from tether.audit.log import AuditLog
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.config import Settings
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing, KeyRingChange
from tether.identity.access import Actor
from tether.identity.client_auth import ClientAuthenticator
from tether.identity.directory import AgentDirectory
from tether.identity.revocations import RevocationList
from tether.identity.svid import SvidIssuer
from tether.monitor.events import Event, EventStream, change_event
from tether.store.interfaces import Store
from tether.store.witness import witnesses_from

__all__ = [
    "AUDIT_HMAC_PURPOSE",
    "audit_key_changes",
    "audit_log",
    "client_auth",
    "kek",
    "keyring",
    "svids",
]

log = structlog.get_logger("tether.maintenance")


async def keyring(settings: Settings, clock: Clock, store: Store, kek: KeyEncryptionKey) -> KeyRing:
    """The key ring, its first keys created or due keys rotated (audited by the caller, once
    the audit log, which signs with one of them, is open)."""
    return await KeyRing.open(
        persistence=store,
        kek=kek,
        now=clock.now(),
        trust_domain=settings.trust_domain,
        signing_key_max_age=timedelta(days=settings.signing_key_max_age_days),
        token_max_ttl=timedelta(seconds=settings.token_max_ttl_seconds),
    )


async def audit_log(
    settings: Settings,
    clock: Clock,
    store: Store,
    keyring: KeyRing,
    events: EventStream,
    *,
    depth: int,
) -> AuditLog:
    """This replica's audit log, signed with the key ring's audit key; its problems (the
    sink failing, a witness down, a log that does not verify) are logged and published."""

    def problem(kind: str, details: Mapping[str, object]) -> None:
        log.error(kind, **details)
        events.publish(Event(type=kind, time=clock.now().timestamp(), data=dict(details)))

    return await AuditLog(
        store=store,
        origin=settings.audit_origin(settings.replica_id or _replica_id(settings.data_dir)),
        key_name=settings.audit_key_name,
        signer=keyring.audit_signer,
        clock=clock,
        witnesses=witnesses_from(settings.audit_witnesses),
        checkpoint_every=settings.audit_checkpoint_records,
        checkpoint_seconds=settings.audit_checkpoint_seconds,
        on_problem=problem,
        on_change=lambda record: events.publish(change_event(record)),
        depth=depth,
    ).start()


def _replica_id(data_dir: Path) -> str:
    """The id kept in ``<data_dir>/replica-id``, made on first start."""
    path = data_dir / "replica-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        replica = f"r-{secrets.token_hex(4)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(replica + "\n")
            file.flush()
            os.fsync(file.fileno())
        return replica


def client_auth(
    settings: Settings, clock: Clock, store: Store, audit: AuditSink
) -> ClientAuthenticator:
    return ClientAuthenticator(
        store=store,
        audit=audit,
        clock=clock,
        trust_domain=settings.trust_domain,
        audiences=frozenset(
            {
                settings.token_endpoint,
                settings.issuer_url,
                f"{settings.issuer_url}/oauth2/bc-authorize",
            }
        ),
        max_lifetime=settings.assertion_max_lifetime_seconds,
        leeway=settings.clock_skew_seconds,
    )


def svids(  # noqa: PLR0917 - called once, by the composition root
    settings: Settings,
    clock: Clock,
    store: Store,
    audit: AuditSink,
    keyring: KeyRing,
    directory: AgentDirectory,
    revocations: RevocationList,
) -> SvidIssuer:
    return SvidIssuer(
        keyring=keyring,
        store=store,
        audit=audit,
        clock=clock,
        issuer=settings.issuer_url,
        trust_domain=settings.trust_domain,
        audiences=settings.audiences,
        jwt_ttl=settings.jwt_svid_ttl_seconds,
        x509_ttl=settings.x509_svid_ttl_seconds,
        revocations=revocations,
        directory=directory,
    )


async def audit_key_changes(
    audit: AuditSink, clock: Clock, changes: Sequence[KeyRingChange]
) -> None:
    for change in changes:
        await audit.append(
            AuditRecord.new(
                type=f"keyring.key_{change.kind}",
                actor=Actor.system().label,
                subject=f"key:{change.kid}",
                time=clock.now(),
                details={"purpose": str(change.purpose), "kid": change.kid},
            )
        )


#: The HKDF purpose of the audit HMAC key (derived from the key-encryption key).
AUDIT_HMAC_PURPOSE = b"tether audit hmac v1"


def kek(settings: Settings) -> KeyEncryptionKey:
    if settings.kek_b64:
        return KeyEncryptionKey.from_b64(settings.kek_b64)
    path = settings.data_dir / "kek"
    os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
    return KeyEncryptionKey.load_or_create(path)
