"""``SqlStore``'s leases and credential engines (:class:`~tether.store.interfaces.LeaseStore`,
:class:`~tether.store.interfaces.EngineStore`), as a mixin over the store's unit runner.

Each method builds its unit of work in :mod:`._credentials` and hands it to ``_run``: reads and
single writes as one statement (autocommit on PostgreSQL), the bulk changes and the engine
deletion in one transaction that holds SQLite's write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from tether.credentials.models import EngineConfig, Lease, LeaseMatch, LeaseState
from tether.store.sql import _credentials as units
from tether.store.sql._point_reads import NOT_NOW, PointQuery
from tether.store.sql._runner import Runner, rows
from tether.store.sql.tables import leases

__all__ = ["CredentialMethods"]

#: A lease by id, read on the event loop's thread where the store can (a revocation's first
#: read: see :mod:`._point_reads`).
_LEASE_NOW = PointQuery(units.LEASE_BY_ID)


class CredentialMethods:
    """The lease and engine half of ``SqlStore``; see :mod:`._credentials`."""

    # -- leases --------------------------------------------------------------------------

    async def create_lease(self: Runner, lease: Lease) -> None:
        await self._run(units.create_lease_unit(lease), write=True)

    async def get_lease(self: Runner, lease_id: str) -> Lease | None:
        now = self._read_now(_LEASE_NOW, {"id": lease_id})
        if now is not NOT_NOW:
            return None if now is None else units.lease_from_row(now)
        found = await self._run(
            rows(units.LEASE_BY_ID, units.lease_from_row, id=lease_id),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def save_lease(self: Runner, lease: Lease, *, expected_version: int) -> None:
        unit = units.save_lease_unit(lease, expected_version=expected_version)
        await self._run(unit, write=True, one_statement=True)

    async def list_leases(
        self: Runner,
        match: LeaseMatch,
        *,
        states: Collection[LeaseState] | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Lease]:
        page = min(limit, units.MAX_LEASE_PAGE)
        query = units.leases_query(match, states=states, limit=page, after=after)
        return await self._run(rows(query, units.lease_from_row), write=False, one_statement=True)

    async def change_leases(
        self: Runner,
        match: LeaseMatch,
        *,
        states: Collection[LeaseState],
        change: Callable[[Lease], Lease],
        limit: int,
    ) -> list[Lease]:
        if not states or limit <= 0:
            return []
        query = units.leases_query(match, states=states, limit=limit)
        return await self._run(units.change_unit(query, change), write=True)

    async def change_due_leases(
        self: Runner,
        *,
        now: datetime,
        stale_before: datetime,
        change: Callable[[Lease], Lease],
        limit: int,
    ) -> list[Lease]:
        query = units.due_leases_query(now=now, stale_before=stale_before, limit=limit)
        if limit <= 0:
            return []
        # Most rounds find nothing due: a read first, so that the reaper does not take the
        # database's write lock (SQLite's BEGIN IMMEDIATE) every second for nothing, against
        # the audit log's commits. A lease falling due meanwhile is taken the next round.
        probe = query.with_only_columns(leases.c.id).limit(1)
        if not await self._run(rows(probe, lambda row: row["id"]), write=False, one_statement=True):
            return []
        return await self._run(units.change_unit(query, change), write=True)

    async def live_credentials(self: Runner, engine: str) -> set[str]:
        query = units.live_credentials_query(engine)
        found = await self._run(
            rows(query, lambda row: str(row["credential"])), write=False, one_statement=True
        )
        return set(found)

    async def next_lease_expiry(self: Runner) -> datetime | None:
        query = units.next_expiry_query()
        found: list[datetime] = await self._run(
            rows(query, lambda row: row["expires_at"]), write=False, one_statement=True
        )
        return found[0] if found else None

    # -- engines -------------------------------------------------------------------------

    async def create_engine(self: Runner, engine: EngineConfig) -> None:
        await self._run(units.create_engine_unit(engine), write=True, one_statement=True)

    async def get_engine(self: Runner, name: str) -> EngineConfig | None:
        found = await self._run(
            rows(units.ENGINE_BY_NAME, units.engine_from_row, name=name),
            write=False,
            one_statement=True,
        )
        return found[0] if found else None

    async def list_engines(self: Runner) -> list[EngineConfig]:
        return await self._run(
            rows(units.ENGINES, units.engine_from_row), write=False, one_statement=True
        )

    async def update_engine(self: Runner, engine: EngineConfig, *, expected_version: int) -> None:
        unit = units.update_engine_unit(engine, expected_version=expected_version)
        await self._run(unit, write=True, one_statement=True)

    async def delete_engine(self: Runner, name: str) -> None:
        await self._run(units.delete_engine_unit(name), write=True)
