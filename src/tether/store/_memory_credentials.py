"""``MemoryStore``'s leases and credential engines: the reference for the SQL store's.

A mixin over the store's one ``asyncio.Lock``, which makes each call atomic: a bulk change
computes every new value before it writes any, so a ``change`` that raises writes nothing, and
two concurrent calls never take the same lease. Values come back as the SQL store returns them:
datetimes in UTC (a naive one is a ``ValueError`` before anything is written), an engine's
settings and role options as they read after a JSON round trip, mappings read-only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from tether.credentials.models import (
    LIVE_STATES,
    EndKind,
    EngineConfig,
    Lease,
    LeaseMatch,
    LeaseState,
    RoleTemplate,
)
from tether.errors import Conflict, EngineExists, EngineNotFound, LeaseNotFound, VersionConflict
from tether.store._memory_values import as_utc, in_utc

__all__ = ["MemoryCredentials"]

#: The most leases one page lists, as in the SQL store.
_MAX_LEASE_PAGE = 500
_RETRIED = frozenset({LeaseState.REVOKING, LeaseState.IRREVOCABLE})


def _stored_lease(lease: Lease) -> Lease:
    """``lease`` as the SQL store reads it back: times in UTC, enums as enums."""
    ending = None if lease.ending is None else EndKind(lease.ending)
    return replace(in_utc(lease), state=LeaseState(lease.state), ending=ending)


def _json_copy(value: Mapping[str, object]) -> dict[str, Any]:
    """``value`` after the SQL store's JSON column: keys as strings, tuples as lists, …"""
    copied: dict[str, Any] = json.loads(
        json.dumps(dict(value), sort_keys=True, separators=(",", ":"), default=str)
    )
    return copied


def _stored_engine(engine: EngineConfig) -> EngineConfig:
    roles = {
        name: RoleTemplate.from_dict(_json_copy(role.to_dict()))
        for name, role in engine.roles.items()
    }
    return replace(
        engine,
        settings=MappingProxyType(_json_copy(engine.settings)),
        roles=MappingProxyType(roles),
        created_at=as_utc(engine.created_at),
        updated_at=as_utc(engine.updated_at),
        sealed_secret=None if engine.sealed_secret is None else bytes(engine.sealed_secret),
    )


def _due_at(lease: Lease, *, now: datetime, stale_before: datetime) -> datetime | None:
    """When the reaper was due to act on ``lease``, or ``None`` if it need not act yet."""
    if lease.state is LeaseState.ACTIVE:
        return lease.expires_at if lease.expires_at <= now else None
    if lease.state is LeaseState.ISSUING:
        return lease.created_at if lease.created_at < stale_before else None
    if lease.state in _RETRIED and lease.next_attempt_at is not None:
        free = lease.claimed_until is None or lease.claimed_until <= now
        return lease.next_attempt_at if free and lease.next_attempt_at <= now else None
    return None


class MemoryCredentials:
    """Leases and engines in dictionaries, under the store's ``_lock``."""

    _lock: asyncio.Lock

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}
        self._lease_ids_by_credential: dict[str, str] = {}
        self._engines: dict[str, EngineConfig] = {}

    # -- leases --------------------------------------------------------------------------

    def _check_credential_free(self, lease: Lease) -> None:
        """``Conflict`` if another lease holds ``lease.credential``; call with the lock held."""
        holder = self._lease_ids_by_credential.get(lease.credential)
        if holder is not None and holder != lease.id:
            raise Conflict(f"lease {lease.id!r}: its id or its credential is taken")

    def _put_lease(self, lease: Lease) -> None:
        """Store a checked lease; call with the lock held."""
        old = self._leases.get(lease.id)
        if old is not None:
            del self._lease_ids_by_credential[old.credential]
        self._leases[lease.id] = lease
        self._lease_ids_by_credential[lease.credential] = lease.id

    async def create_lease(self, lease: Lease) -> None:
        stored = _stored_lease(lease)
        async with self._lock:
            if stored.id in self._leases:
                raise Conflict(f"lease {lease.id!r}: its id or its credential is taken")
            self._check_credential_free(stored)
            self._put_lease(stored)

    async def get_lease(self, lease_id: str) -> Lease | None:
        async with self._lock:
            return self._leases.get(lease_id)

    async def save_lease(self, lease: Lease, *, expected_version: int) -> None:
        stored = _stored_lease(lease)
        async with self._lock:
            current = self._leases.get(lease.id)
            if current is None:
                raise LeaseNotFound(f"no lease with id {lease.id!r}")
            if current.version != expected_version:
                raise VersionConflict(
                    f"lease {lease.id!r} changed since version {expected_version}"
                )
            self._check_credential_free(stored)
            self._put_lease(stored)

    def _matching(
        self, match: LeaseMatch, states: Collection[LeaseState] | None
    ) -> Iterable[Lease]:
        """Leases matching ``match`` and in ``states``, unordered; call with the lock held."""
        wanted = None if states is None else {LeaseState(s) for s in states}
        return (
            lease
            for lease in self._leases.values()
            if match.matches(lease) and (wanted is None or lease.state in wanted)
        )

    async def list_leases(
        self,
        match: LeaseMatch,
        *,
        states: Collection[LeaseState] | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Lease]:
        async with self._lock:
            found = [
                lease
                for lease in self._matching(match, states)
                if after is None or lease.id > after
            ]
        found.sort(key=lambda lease: lease.id)
        return found[: max(0, min(limit, _MAX_LEASE_PAGE))]

    def _change(self, chosen: list[Lease], change: Callable[[Lease], Lease]) -> list[Lease]:
        """Every new value first (anything ``change`` raises writes nothing), then all of
        them; call with the lock held."""
        changed = []
        for old in chosen:
            new = _stored_lease(change(old))
            if new.id != old.id:
                raise ValueError(f"a change of lease {old.id!r} must keep its id")
            changed.append(new)
        credentials = dict(self._lease_ids_by_credential)
        for old in chosen:
            del credentials[old.credential]
        for new in changed:  # unique after the change, as SQL's constraint checks
            if credentials.setdefault(new.credential, new.id) != new.id:
                raise Conflict(f"lease {new.id!r}: its id or its credential is taken")
        for new in changed:
            self._put_lease(new)
        return changed

    async def change_leases(
        self,
        match: LeaseMatch,
        *,
        states: Collection[LeaseState],
        change: Callable[[Lease], Lease],
        limit: int,
    ) -> list[Lease]:
        async with self._lock:
            chosen = sorted(self._matching(match, states), key=lambda lease: lease.id)
            return self._change(chosen[: max(0, limit)], change)

    async def change_due_leases(
        self,
        *,
        now: datetime,
        stale_before: datetime,
        change: Callable[[Lease], Lease],
        limit: int,
    ) -> list[Lease]:
        now, stale_before = as_utc(now), as_utc(stale_before)
        async with self._lock:
            due = [
                (at, lease.id, lease)
                for lease in self._leases.values()
                if (at := _due_at(lease, now=now, stale_before=stale_before)) is not None
            ]
            due.sort(key=lambda item: (item[0], item[1]))
            return self._change([lease for _, _, lease in due[: max(0, limit)]], change)

    async def live_credentials(self, engine: str) -> set[str]:
        async with self._lock:
            return {
                lease.credential
                for lease in self._leases.values()
                if lease.engine == engine and lease.state in LIVE_STATES
            }

    async def next_lease_expiry(self) -> datetime | None:
        async with self._lock:
            return min(
                (
                    lease.expires_at
                    for lease in self._leases.values()
                    if lease.state is LeaseState.ACTIVE
                ),
                default=None,
            )

    # -- engines -------------------------------------------------------------------------

    async def create_engine(self, engine: EngineConfig) -> None:
        stored = _stored_engine(engine)
        async with self._lock:
            if engine.name in self._engines:
                raise EngineExists(f"an engine named {engine.name!r} already exists")
            self._engines[engine.name] = stored

    async def get_engine(self, name: str) -> EngineConfig | None:
        async with self._lock:
            return self._engines.get(name)

    async def list_engines(self) -> list[EngineConfig]:
        async with self._lock:
            return [self._engines[name] for name in sorted(self._engines)]

    async def update_engine(self, engine: EngineConfig, *, expected_version: int) -> None:
        stored = _stored_engine(engine)
        async with self._lock:
            current = self._engines.get(engine.name)
            if current is None:
                raise EngineNotFound(f"no engine named {engine.name!r}")
            if current.version != expected_version:
                raise VersionConflict(
                    f"engine {engine.name!r} changed since version {expected_version}"
                )
            self._engines[engine.name] = stored

    async def delete_engine(self, name: str) -> None:
        async with self._lock:
            if name not in self._engines:
                raise EngineNotFound(f"no engine named {name!r}")
            if any(lease.engine == name and lease.live for lease in self._leases.values()):
                raise Conflict(
                    f"engine {name!r} still has live leases: revoke them first",
                    details={"engine": name},
                )
            del self._engines[name]
