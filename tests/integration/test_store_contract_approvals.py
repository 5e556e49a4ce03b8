"""The ``Store`` contract for CIBA approval requests (``ApprovalStore``).

Run against every implementation (memory, SQLite, SQLite with its audit writer, PostgreSQL)
by the ``store`` fixture (``tests/conftest.py``). Updates are compare-and-set on ``version``
as grants' are: the caller passes the new value with its new version, and the version it read
as ``expected_version``; the store writes what it is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
import sqlalchemy as sa

from tether.delegation.models import Approval, ApprovalMatch, ApprovalState
from tether.errors import ApprovalNotFound, Conflict, VersionConflict
from tether.store.interfaces import Store
from tether.store.sql import SqlStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
EAST = timezone(timedelta(hours=2))

#: Items as RFC 9396 writes them: nested objects, lists, unicode, numbers, booleans, null.
DETAILS: tuple[dict[str, Any], ...] = (
    {
        "type": "payment_initiation",
        "call_digest": "sha256:" + "a" * 64,
        "instructedAmount": {"currency": "EUR", "amount": "123.50"},
        "creditorName": "Zoë Ångström — 日本語 ✓",
        "creditorAccount": {"iban": "DE02100100109307118603", "tags": ["rent", "€"]},
    },
    {
        "type": "orders",
        "call_digest": "sha256:" + "b" * 64,
        "actions": ["read", "cancel"],
        "limits": {"count": 3, "ratio": 0.5, "strict": True, "note": None},
    },
    {"type": "calendar", "call_digest": "sha256:" + "c" * 64, "locations": []},
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def key(n: int) -> str:
    """The ``auth_req_key`` of request ``n``: the SHA-256 of its ``auth_req_id``."""
    return hashlib.sha256(f"auth-req-{n}".encode()).hexdigest()


def make_approval(
    n: int,
    *,
    user: str = "alice",
    agent: str = "faq-bot",
    created: float = 0,
    state: ApprovalState = ApprovalState.PENDING,
) -> Approval:
    """Request ``n`` in poll mode, every optional field left unset."""
    return Approval(
        id=f"apr_{n:03d}",
        auth_req_key=key(n),
        client=f"spiffe://example.org/agent/{agent}/i-1",
        agent=agent,
        user=user,
        scope=frozenset({"orders:write", "calendar:read", "openid"}),
        binding_message=None,
        details=DETAILS[:1],
        created_at=at(created),
        expires_at=at(created + 300),
        interval=5,
        state=state,
    )


def decided(approval: Approval) -> Approval:
    """``approval`` in ping mode, under a grant, answered in part, polled and redeemed: every
    optional field set, the version moved on by one."""
    return replace(
        approval,
        binding_message="Pay Zoë 123,50 € — code 7F3K",
        details=DETAILS,
        grant_id="grt_001",
        notification_endpoint="https://agent.example/ciba/notify",
        notification_token="nt-8a1f",
        state=ApprovalState.REDEEMED,
        approved=(0, 2),
        decided_at=at(60),
        decided_by=f"user:{approval.user}",
        last_polled_at=at(65),
        redeemed_at=at(66),
        version=approval.version + 1,
    )


async def put(store: Store, *approvals: Approval) -> None:
    for approval in approvals:
        await store.create_approval(approval)


async def ids(approvals: Awaitable[list[Approval]]) -> list[str]:
    return [approval.id for approval in await approvals]


# -- one request -----------------------------------------------------------------------------


async def test_an_approval_reads_back_as_written(store: Store) -> None:
    approval = make_approval(1)
    await store.create_approval(replace(approval, created_at=T0.astimezone(EAST)))
    stored = await store.get_approval(approval.id)
    assert stored == approval
    assert stored is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    assert isinstance(stored.scope, frozenset)
    assert stored.state is ApprovalState.PENDING
    assert stored.approved == ()
    assert isinstance(stored.details, tuple)
    assert all(isinstance(item, MappingProxyType) for item in stored.details)
    assert await store.get_approval("apr_999") is None


async def test_an_approval_is_found_by_its_auth_req_key(store: Store) -> None:
    await put(store, make_approval(1), make_approval(2))
    assert await store.find_approval(key(2)) == make_approval(2)
    assert await store.find_approval(key(3)) is None
    assert await store.find_approval("apr_001") is None  # the id is not the key


async def test_partial_approvals_nested_unicode_details_and_nullables_round_trip(
    store: Store,
) -> None:
    pending = make_approval(1)
    await store.create_approval(pending)
    answered = decided(pending)
    await store.update_approval(
        replace(answered, decided_at=at(60).astimezone(EAST)), expected_version=1
    )
    stored = await store.get_approval(pending.id)
    assert stored == answered
    assert stored is not None
    assert stored.details == DETAILS
    assert stored.approved == (0, 2)
    assert stored.approved_details == (DETAILS[0], DETAILS[2])
    assert stored.decided_at is not None
    assert stored.decided_at.utcoffset() == timedelta(0)
    assert stored.details[0]["creditorName"] == "Zoë Ångström — 日本語 ✓"
    assert stored.details[1]["limits"] == {"count": 3, "ratio": 0.5, "strict": True, "note": None}
    with pytest.raises(TypeError):
        stored.details[0]["type"] = "changed"  # type: ignore[index]
    # And back: every optional field unset again reads back unset.
    await store.update_approval(replace(pending, version=3), expected_version=2)
    assert await store.get_approval(pending.id) == replace(pending, version=3)


async def test_a_taken_auth_req_key_is_a_conflict(store: Store) -> None:
    first = make_approval(1)
    await store.create_approval(first)
    with pytest.raises(Conflict, match="apr_002"):
        await store.create_approval(replace(make_approval(2), auth_req_key=key(1)))
    assert await store.get_approval("apr_002") is None
    assert await store.find_approval(key(1)) == first


async def test_a_taken_approval_id_is_a_conflict_and_writes_nothing(store: Store) -> None:
    first = make_approval(1)
    await store.create_approval(first)
    with pytest.raises(Conflict, match="apr_001"):
        await store.create_approval(replace(make_approval(1, user="bob"), auth_req_key=key(9)))
    assert await store.get_approval(first.id) == first
    assert await store.find_approval(key(9)) is None


async def test_scope_details_and_approved_are_stored_as_json_lists(store: Store) -> None:
    if not isinstance(store, SqlStore):
        pytest.skip("the memory store has no columns")
    await store.create_approval(replace(make_approval(1), approved=(1, 0)))
    row = await store.run_sync(
        lambda conn: conn.execute(sa.text("SELECT scope, approved FROM approvals")).one()
    )
    assert tuple(row) == ('["calendar:read","openid","orders:write"]', "[1,0]")


# -- updates ---------------------------------------------------------------------------------


async def test_update_approval_writes_the_version_it_is_given(store: Store) -> None:
    approval = make_approval(1)
    await store.create_approval(approval)
    polled = replace(approval, last_polled_at=at(10), version=2)
    await store.update_approval(polled, expected_version=1)
    assert await store.get_approval(approval.id) == polled
    skipped = replace(polled, last_polled_at=at(20), version=7)  # the store does not bump
    await store.update_approval(skipped, expected_version=2)
    assert await store.get_approval(approval.id) == skipped


async def test_an_update_on_a_moved_version_writes_nothing(store: Store) -> None:
    approval = make_approval(1)
    await store.create_approval(approval)
    await store.update_approval(decided(approval), expected_version=1)
    stale = replace(approval, state=ApprovalState.DENIED, version=2)
    with pytest.raises(VersionConflict, match="version 1"):
        await store.update_approval(stale, expected_version=1)
    assert await store.get_approval(approval.id) == decided(approval)


async def test_updating_a_missing_approval_is_approval_not_found(store: Store) -> None:
    with pytest.raises(ApprovalNotFound, match="apr_001"):
        await store.update_approval(decided(make_approval(1)), expected_version=1)
    assert await store.get_approval("apr_001") is None
    assert await store.find_approval(key(1)) is None


async def test_an_update_moves_the_auth_req_key_unless_another_request_holds_it(
    store: Store,
) -> None:
    await put(store, make_approval(1), make_approval(2))
    taken = replace(make_approval(1), auth_req_key=key(2), version=2)
    with pytest.raises(Conflict, match="apr_001"):
        await store.update_approval(taken, expected_version=1)
    assert await store.get_approval("apr_001") == make_approval(1)
    moved = replace(make_approval(1), auth_req_key=key(3), version=2)
    await store.update_approval(moved, expected_version=1)
    assert await store.find_approval(key(3)) == moved
    assert await store.find_approval(key(1)) is None
    assert await store.find_approval(key(2)) == make_approval(2)


async def test_naive_datetimes_are_value_error_and_write_nothing(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_approval(replace(make_approval(1), expires_at=naive))
    assert await store.get_approval("apr_001") is None
    await store.create_approval(make_approval(1))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.update_approval(
            replace(decided(make_approval(1)), decided_at=naive), expected_version=1
        )
    with pytest.raises(ValueError, match="naive datetime"):
        await store.count_approvals(user="alice", since=naive)
    assert await store.get_approval("apr_001") == make_approval(1)


# -- listing and counting --------------------------------------------------------------------

PENDING, APPROVED, DENIED = ApprovalState.PENDING, ApprovalState.APPROVED, ApprovalState.DENIED
LISTED = [
    make_approval(1, user="u1", agent="a1"),
    make_approval(2, user="u2", agent="a1", state=APPROVED),
    make_approval(3, user="u1", agent="a2", state=DENIED),
    make_approval(4, user="u1", agent="a1", state=APPROVED),
    make_approval(5, user="u1", agent="a1"),
]


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        (ApprovalMatch(), ["apr_001", "apr_002", "apr_003", "apr_004", "apr_005"]),
        (ApprovalMatch(user="u1"), ["apr_001", "apr_003", "apr_004", "apr_005"]),
        (ApprovalMatch(agent="a1"), ["apr_001", "apr_002", "apr_004", "apr_005"]),
        (ApprovalMatch(state=PENDING), ["apr_001", "apr_005"]),
        (ApprovalMatch(user="u1", state=APPROVED), ["apr_004"]),
        (ApprovalMatch(user="u1", agent="a1", state=PENDING), ["apr_001", "apr_005"]),
        (ApprovalMatch(user="u2", state=DENIED), []),
    ],
    ids=["all", "user", "agent", "state", "user+state", "all-three", "none"],
)
async def test_approvals_list_by_user_and_state_in_id_order_and_page(
    store: Store, match: ApprovalMatch, expected: list[str]
) -> None:
    await put(store, *reversed(LISTED))
    assert await ids(store.list_approvals(match)) == expected
    pages: list[list[str]] = []
    after: str | None = None
    while page := await ids(store.list_approvals(match, limit=2, after=after)):
        pages.append(page)
        after = page[-1]
    assert pages == [expected[i : i + 2] for i in range(0, len(expected), 2)]
    assert await store.list_approvals(match, limit=0) == []


async def test_a_page_of_approvals_holds_at_most_500(store: Store) -> None:
    await put(store, *(make_approval(n) for n in range(501)))
    assert len(await store.list_approvals(ApprovalMatch(), limit=10_000)) == 500


async def test_count_approvals_counts_a_users_requests_since_a_time(store: Store) -> None:
    await put(
        store,
        make_approval(1, created=-1),  # just before: not counted
        make_approval(2, created=0),  # at ``since`` exactly: counted
        decided(make_approval(3, created=30)),  # answered ones count too
        make_approval(4, created=90),
        make_approval(5, user="bob", created=10),
    )
    assert await store.count_approvals(user="alice", since=T0) == 3
    assert await store.count_approvals(user="alice", since=T0.astimezone(EAST)) == 3
    assert await store.count_approvals(user="alice", since=at(31)) == 1
    assert await store.count_approvals(user="alice", since=at(-60)) == 4
    assert await store.count_approvals(user="bob", since=T0) == 1
    assert await store.count_approvals(user="carol", since=T0) == 0
