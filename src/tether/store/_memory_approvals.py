"""``MemoryStore``'s CIBA approval requests: the reference for the SQL store's.

A mixin over the store's one ``asyncio.Lock``, which makes each call atomic. Values come back
as the SQL store returns them: datetimes in UTC (a naive one is a ``ValueError`` before
anything is written), the state as an enum, the scope as a ``frozenset``, the approved
positions as a tuple and each item of ``details`` as it reads after a JSON round trip,
read-only. Requests are kept by id with an index by ``auth_req_key``, the SQL store's unique
constraint.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from tether.delegation.models import Approval, ApprovalMatch, ApprovalState
from tether.errors import ApprovalNotFound, Conflict, VersionConflict
from tether.store._memory_credentials import _json_copy
from tether.store._memory_values import as_utc, in_utc

__all__ = ["MemoryApprovals"]

#: The most requests one page lists, as in the SQL store.
_MAX_PAGE = 500


def _stored_approval(approval: Approval) -> Approval:
    """``approval`` as the SQL store reads it back."""
    return replace(
        in_utc(approval),
        scope=frozenset(approval.scope),
        details=tuple(MappingProxyType(_json_copy(item)) for item in approval.details),
        state=ApprovalState(approval.state),
        approved=tuple(approval.approved),
    )


def _matches(match: ApprovalMatch, approval: Approval) -> bool:
    return (
        (match.user is None or approval.user == match.user)
        and (match.agent is None or approval.agent == match.agent)
        and (match.state is None or approval.state == match.state)
    )


def _key_taken(approval: Approval) -> Conflict:
    return Conflict(f"approval {approval.id!r}: its id or its auth_req_key is taken")


class MemoryApprovals:
    """Approval requests in dictionaries, under the store's ``_lock``.

    Cooperative: its ``__init__`` calls the next one's, so the store lists it before
    :class:`~tether.store._memory_credentials.MemoryCredentials` and both are set up.
    """

    _lock: asyncio.Lock

    def __init__(self) -> None:
        super().__init__()
        self._approvals: dict[str, Approval] = {}
        self._approval_ids_by_key: dict[str, str] = {}

    def _check_key_free(self, approval: Approval) -> None:
        """``Conflict`` if another request holds ``approval.auth_req_key``; call with the lock
        held."""
        holder = self._approval_ids_by_key.get(approval.auth_req_key)
        if holder is not None and holder != approval.id:
            raise _key_taken(approval)

    def _put_approval(self, approval: Approval) -> None:
        """Store a checked request; call with the lock held."""
        old = self._approvals.get(approval.id)
        if old is not None:
            del self._approval_ids_by_key[old.auth_req_key]
        self._approvals[approval.id] = approval
        self._approval_ids_by_key[approval.auth_req_key] = approval.id

    async def create_approval(self, approval: Approval) -> None:
        stored = _stored_approval(approval)
        async with self._lock:
            if stored.id in self._approvals:
                raise _key_taken(stored)
            self._check_key_free(stored)
            self._put_approval(stored)

    async def get_approval(self, approval_id: str) -> Approval | None:
        async with self._lock:
            return self._approvals.get(approval_id)

    async def find_approval(self, auth_req_key: str) -> Approval | None:
        async with self._lock:
            approval_id = self._approval_ids_by_key.get(auth_req_key)
            return None if approval_id is None else self._approvals[approval_id]

    async def update_approval(self, approval: Approval, *, expected_version: int) -> None:
        stored = _stored_approval(approval)
        async with self._lock:
            current = self._approvals.get(approval.id)
            if current is None:
                raise ApprovalNotFound(f"no approval with id {approval.id!r}")
            if current.version != expected_version:
                raise VersionConflict(
                    f"approval {approval.id!r} changed since version {expected_version}"
                )
            self._check_key_free(stored)
            self._put_approval(stored)

    async def list_approvals(
        self, match: ApprovalMatch, *, limit: int = 100, after: str | None = None
    ) -> list[Approval]:
        async with self._lock:
            found = [
                approval
                for approval in self._approvals.values()
                if _matches(match, approval) and (after is None or approval.id > after)
            ]
        found.sort(key=lambda approval: approval.id)
        return found[: max(0, min(limit, _MAX_PAGE))]

    async def count_approvals(self, *, user: str, since: datetime) -> int:
        moment = as_utc(since)
        async with self._lock:
            return sum(
                1
                for approval in self._approvals.values()
                if approval.user == user and approval.created_at >= moment
            )
