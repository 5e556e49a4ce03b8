"""The ``Store`` contract for users (``UserStore``).

Run against every implementation (memory, SQLite, PostgreSQL) by the ``store`` fixture
(``tests/conftest.py``). A user's name is the ``sub`` of their tokens, so it is never given to
anyone else; nor is an (issuer, subject) pair, which federated sign-in looks users up by.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from tether.delegation.models import User, UserState
from tether.errors import UserExists, UserNotFound, VersionConflict
from tether.identity.models import Role
from tether.store.interfaces import Store
from tether.store.sql import open_sql_store
from tether.store.sql.changes import user_topic

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TETHER = "https://tether.acme.org"
IDP = "https://login.acme.org"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_user(
    name: str = "alice",
    *,
    issuer: str = TETHER,
    subject: str | None = None,
    version: int = 1,
) -> User:
    return User(
        id=f"usr_{name}",
        name=name,
        display_name=f"{name.title()} Example",
        email=f"{name}@acme.org",
        state=UserState.ACTIVE,
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA" if issuer == TETHER else None,
        issuer=issuer,
        subject=name if subject is None else subject,
        created_at=T0,
        updated_at=at(version),
        version=version,
    )


def disabled(user: User, *, when: float = 60) -> User:
    """``user`` disabled at ``when``: the next version."""
    return replace(
        user,
        state=UserState.DISABLED,
        disabled_at=at(when),
        updated_at=at(when),
        version=user.version + 1,
    )


async def names(store: Store, *, limit: int = 100, after: str | None = None) -> list[str]:
    return [user.name for user in await store.list_users(limit=limit, after=after)]


# -- one user --------------------------------------------------------------------------------


async def test_created_user_reads_back_equal_in_utc(store: Store) -> None:
    east = timezone(timedelta(hours=2))
    user = disabled(make_user("alice"))
    await store.create_user(replace(user, created_at=T0.astimezone(east)))
    federated = replace(make_user("bob", issuer=IDP, subject="00u1bob"), display_name=None)
    await store.create_user(replace(federated, email=None))
    stored = await store.get_user("alice")
    assert stored == user
    assert stored is not None
    assert stored.created_at.utcoffset() == timedelta(0)
    assert stored.state is UserState.DISABLED
    assert await store.get_user("bob") == replace(federated, email=None)
    assert await store.get_user("carol") is None


async def test_a_user_is_found_by_what_their_provider_calls_them(store: Store) -> None:
    bob = make_user("bob", issuer=IDP, subject="00u1bob")
    await store.create_user(make_user("alice"))
    await store.create_user(bob)
    assert await store.get_user_by_subject(IDP, "00u1bob") == bob
    assert await store.get_user_by_subject(TETHER, "alice") == make_user("alice")
    assert await store.get_user_by_subject(TETHER, "00u1bob") is None
    assert await store.get_user_by_subject(IDP, "alice") is None


async def test_a_user_name_is_never_given_twice(store: Store) -> None:
    alice = make_user("alice")
    await store.create_user(alice)
    other = replace(make_user("alice", issuer=IDP, subject="00u1x"), id="usr_other")
    with pytest.raises(UserExists, match="alice"):
        await store.create_user(other)
    await store.update_user(disabled(alice), expected_version=1)  # disabled, never freed
    with pytest.raises(UserExists):
        await store.create_user(other)
    assert await store.get_user("alice") == disabled(alice)
    assert await store.get_user_by_subject(IDP, "00u1x") is None


async def test_an_issuer_and_subject_belong_to_one_user(store: Store) -> None:
    await store.create_user(make_user("bob", issuer=IDP, subject="00u1bob"))
    with pytest.raises(UserExists):
        await store.create_user(make_user("robert", issuer=IDP, subject="00u1bob"))
    assert await store.get_user("robert") is None
    # The same subject at another provider is someone else.
    await store.create_user(make_user("robert", issuer=TETHER, subject="00u1bob"))
    assert await names(store) == ["bob", "robert"]


async def test_a_taken_user_id_is_user_exists(store: Store) -> None:
    await store.create_user(make_user("alice"))
    with pytest.raises(UserExists):
        await store.create_user(replace(make_user("bob"), id="usr_alice"))
    assert await store.get_user("bob") is None


async def test_a_users_console_role_reads_back_and_changes(store: Store) -> None:
    alice = replace(make_user("alice"), role=Role.SECURITY_ADMIN)
    bob = make_user("bob", issuer=IDP, subject="00u1bob")
    await store.create_user(alice)
    await store.create_user(bob)
    stored = await store.get_user("alice")
    assert stored == alice
    assert stored is not None
    assert stored.role is Role.SECURITY_ADMIN
    assert await store.get_user_by_subject(IDP, "00u1bob") == bob
    assert bob.role is None  # an end user
    developer = replace(alice, role=Role.DEVELOPER, updated_at=at(10), version=2)
    await store.update_user(developer, expected_version=1)
    assert await store.get_user("alice") == developer
    end_user = replace(developer, role=None, updated_at=at(20), version=3)
    await store.update_user(end_user, expected_version=2)
    assert await store.list_users() == [end_user, bob]
    with pytest.raises(VersionConflict):  # a stale role change writes nothing
        await store.update_user(replace(developer, role=Role.AUDITOR), expected_version=2)
    assert await store.get_user_by_subject(TETHER, "alice") == end_user


# -- updates ---------------------------------------------------------------------------------


async def test_update_user_is_compare_and_set_on_version(store: Store) -> None:
    alice = make_user("alice")
    await store.create_user(alice)
    off = disabled(alice)
    await store.update_user(off, expected_version=1)
    assert await store.get_user("alice") == off
    back = replace(off, state=UserState.ACTIVE, disabled_at=None, version=3)
    await store.update_user(back, expected_version=2)
    assert await store.get_user("alice") == back


async def test_stale_version_writes_nothing(store: Store) -> None:
    alice = make_user("alice")
    await store.create_user(alice)
    await store.update_user(disabled(alice), expected_version=1)
    stale = replace(alice, email="new@acme.org", version=2)
    with pytest.raises(VersionConflict, match="version 1"):
        await store.update_user(stale, expected_version=1)
    assert await store.get_user("alice") == disabled(alice)


async def test_update_of_an_unknown_user_is_user_not_found(store: Store) -> None:
    with pytest.raises(UserNotFound, match="alice"):
        await store.update_user(disabled(make_user("alice")), expected_version=1)
    assert await store.get_user("alice") is None


async def test_update_onto_another_users_name_or_subject_is_user_exists(store: Store) -> None:
    alice, bob = make_user("alice"), make_user("bob", issuer=IDP, subject="00u1bob")
    await store.create_user(alice)
    await store.create_user(bob)
    with pytest.raises(UserExists):
        await store.update_user(replace(alice, name="bob", version=2), expected_version=1)
    taken_subject = replace(alice, issuer=IDP, subject="00u1bob", version=2)
    with pytest.raises(UserExists):
        await store.update_user(taken_subject, expected_version=1)
    assert await store.list_users() == [alice, bob]


async def test_naive_datetimes_are_value_error_and_write_nothing(store: Store) -> None:
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValueError, match="naive datetime"):
        await store.create_user(replace(make_user("alice"), created_at=naive))
    assert await store.get_user("alice") is None
    await store.create_user(make_user("alice"))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.update_user(
            replace(disabled(make_user("alice")), disabled_at=naive), expected_version=1
        )
    assert await store.get_user("alice") == make_user("alice")


# -- listing ---------------------------------------------------------------------------------


async def test_list_users_pages_by_name_byte_by_byte(store: Store) -> None:
    for name in ("dave", "Zoe", "alice", "carol", "bob", "émile", "Adam"):
        await store.create_user(make_user(name))
    pages: list[list[str]] = []
    after: str | None = None
    while page := await names(store, limit=3, after=after):
        pages.append(page)
        after = page[-1]
    assert pages == [["Adam", "Zoe", "alice"], ["bob", "carol", "dave"], ["émile"]]
    assert await names(store, limit=0) == []


async def test_a_page_of_users_holds_at_most_500(store: Store) -> None:
    for n in range(501):
        await store.create_user(make_user(f"user{n:03d}"))
    assert len(await store.list_users(limit=10_000)) == 500


# -- change notes (PostgreSQL) ---------------------------------------------------------------


@pytest.mark.postgres
async def test_user_writes_note_the_users_name(pg_url: str) -> None:
    raw_url = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    async with (
        await open_sql_store(pg_url) as store,
        await psycopg.AsyncConnection.connect(raw_url, autocommit=True) as listener,
    ):
        await listener.execute("LISTEN tether_changes")
        alice = make_user("alice")
        await store.create_user(alice)
        with pytest.raises(UserExists):  # refused: no note
            await store.create_user(alice)
        await store.update_user(disabled(alice), expected_version=1)
        got = [n.payload async for n in listener.notifies(timeout=1, stop_after=3)]
    assert got == [user_topic("alice"), user_topic("alice")] == ["user:alice"] * 2
