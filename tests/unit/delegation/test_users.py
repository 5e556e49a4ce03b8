"""Users of the built-in provider (tether.delegation.users): who may manage them, sign-in, and
an audit trail that never holds a password."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tether._internal.canonical import canonical_json
from tether._internal.clock import FixedClock
from tether.audit.log import AuditLog
from tether.audit.records import AuditRecord, Outcome
from tether.crypto.passwords import PasswordCost, PasswordHasher
from tether.delegation.models import UserState
from tether.delegation.tokens import issued_since_change
from tether.delegation.users import CONSOLE_ROLES, Users, check_console_role
from tether.errors import (
    Forbidden,
    InvalidInput,
    InvalidName,
    Unauthenticated,
    UserExists,
    UserNotFound,
)
from tether.identity.access import Actor
from tether.identity.models import Role
from tether.store.memory import MemoryStore

ISSUER = "https://tether.test"
PASSWORD = "correct horse battery staple"
SAM = Actor.operator(token_id="opt_sam", name="sam", role=Role.SECURITY_ADMIN)


def operator(role: Role, name: str = "op") -> Actor:
    return Actor.operator(token_id=f"opt_{name}", name=name, role=role)


@pytest.fixture
def disabled_names() -> list[tuple[str, Actor]]:
    return []


@pytest.fixture
def users(
    store: MemoryStore,
    audit: AuditLog,
    clock: FixedClock,
    disabled_names: list[tuple[str, Actor]],
) -> Users:
    async def on_disable(name: str, actor: Actor) -> None:
        disabled_names.append((name, actor))

    return Users(
        store=store,
        audit=audit,
        clock=clock,
        hasher=PasswordHasher.fast_for_tests(),
        issuer=ISSUER,
        on_disable=on_disable,
    )


async def records(store: MemoryStore, type_prefix: str | None = None) -> list[AuditRecord]:
    return [r for _, r in await store.list_audit(limit=10_000, type_prefix=type_prefix)]


# -- adding users --------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.SECURITY_ADMIN, Role.ROOT])
async def test_security_admin_and_root_may_add_a_user(
    users: Users, store: MemoryStore, role: Role
) -> None:
    alice = await users.add(
        actor=operator(role), name="alice", password=PASSWORD, email="alice@example.org"
    )
    assert alice.state is UserState.ACTIVE
    assert (alice.issuer, alice.subject) == (ISSUER, "alice")
    assert alice.password_hash is not None
    assert alice.password_hash.startswith("$argon2id$")
    assert await store.get_user("alice") == alice
    (created,) = await records(store, "user.created")
    assert created.actor == "operator:op"
    assert created.subject == "user:alice"
    assert created.details["password_set"] is True


@pytest.mark.parametrize(
    "role", [Role.DEVELOPER, Role.AUDITOR, Role.PLATFORM_ADMIN, Role.ENFORCEMENT_POINT]
)
async def test_other_roles_may_not_add_a_user(users: Users, store: MemoryStore, role: Role) -> None:
    with pytest.raises(Forbidden, match=r"user\.manage"):
        await users.add(actor=operator(role), name="alice", password=PASSWORD)
    assert await store.get_user("alice") is None
    assert await records(store, "user.") == []


async def test_a_user_may_not_add_users(users: Users) -> None:
    with pytest.raises(Forbidden):
        await users.add(actor=Actor.user(name="mallory"), name="mallory2", password=PASSWORD)


@pytest.mark.parametrize(
    "name",
    ["", "Alice", "-alice", "alice-", ".alice", "al ice", "al/ice", "a" * 129, "ålice", "al\nice"],
)
async def test_a_user_name_outside_the_rule_is_refused(users: Users, name: str) -> None:
    with pytest.raises(InvalidName, match="a user name is"):
        await users.add(actor=SAM, name=name, password=PASSWORD)


@pytest.mark.parametrize("name", ["a", "7", "alice", "alice@example.org", "a.b_c-d", "a" * 128])
async def test_a_user_name_inside_the_rule_is_accepted(users: Users, name: str) -> None:
    assert (await users.add(actor=SAM, name=name, password=None)).name == name


async def test_a_short_password_is_refused_when_adding(users: Users, store: MemoryStore) -> None:
    with pytest.raises(InvalidInput, match="password"):
        await users.add(actor=SAM, name="alice", password="short")
    assert await store.get_user("alice") is None


async def test_a_duplicate_name_is_refused_and_the_failure_recorded(
    users: Users, store: MemoryStore
) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    with pytest.raises(UserExists):
        await users.add(actor=SAM, name="alice", password=PASSWORD + "2")
    created = await records(store, "user.created")
    assert [r.outcome for r in created] == [Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE]
    assert created[2].correlation_id == created[1].id
    assert created[2].details == {"error": "user_exists"}


# -- signing in ----------------------------------------------------------------------------


async def test_the_right_password_signs_the_user_in(users: Users, store: MemoryStore) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    user = await users.authenticate(name="alice", password=PASSWORD)
    assert user.name == "alice"
    (signed_in,) = await records(store, "user.signed_in")
    assert signed_in.actor == "user:alice"
    assert signed_in.details == {"method": "password"}
    assert await records(store, "user.sign_in_failed") == []


async def _disabled(users: Users) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    await users.disable("alice", actor=SAM)


@pytest.mark.parametrize(
    ("setup_disabled", "name", "password", "reason"),
    [
        (False, "alice", PASSWORD + "!", "wrong_password"),
        (False, "bob", PASSWORD, "unknown"),
        (False, "Not A Valid Name", PASSWORD, "unknown"),
        (True, "alice", PASSWORD, "disabled"),
        (True, "alice", PASSWORD + "!", "wrong_password"),
    ],
    ids=["wrong-password", "unknown-user", "invalid-name", "disabled", "disabled-wrong-password"],
)
async def test_every_failed_sign_in_has_one_message_and_a_record_saying_why(
    users: Users,
    store: MemoryStore,
    setup_disabled: bool,
    name: str,
    password: str,
    reason: str,
) -> None:
    if setup_disabled:
        await _disabled(users)
    else:
        await users.add(actor=SAM, name="alice", password=PASSWORD)
    with pytest.raises(Unauthenticated) as caught:
        await users.authenticate(name=name, password=password)
    assert str(caught.value) == "wrong name or password"
    (failed,) = await records(store, "user.sign_in_failed")
    assert failed.outcome is Outcome.FAILURE
    assert failed.details == {"name": name, "reason": reason}
    assert failed.subject == f"user:{name}"
    assert await records(store, "user.signed_in") == []


async def test_a_user_without_a_password_cannot_sign_in(users: Users, store: MemoryStore) -> None:
    await users.add(actor=SAM, name="alice", password=None)
    with pytest.raises(Unauthenticated, match="wrong name or password"):
        await users.authenticate(name="alice", password=PASSWORD)
    (failed,) = await records(store, "user.sign_in_failed")
    assert failed.details["reason"] == "wrong_password"


async def test_an_enabled_user_signs_in_again(users: Users) -> None:
    await _disabled(users)
    await users.enable("alice", actor=SAM)
    assert (await users.authenticate(name="alice", password=PASSWORD)).active


async def test_no_audit_record_holds_the_password_or_its_hash(
    users: Users, store: MemoryStore
) -> None:
    new_password = "a brand new passphrase"
    alice = await users.add(actor=SAM, name="alice", password=PASSWORD)
    await users.authenticate(name="alice", password=PASSWORD)
    with pytest.raises(Unauthenticated):
        await users.authenticate(name="alice", password=PASSWORD + "!")
    changed = await users.set_password(
        "alice", new_password, actor=Actor.user(name="alice"), current=PASSWORD
    )
    await users.authenticate(name="alice", password=new_password)
    await users.disable("alice", actor=SAM)
    with pytest.raises(Unauthenticated):
        await users.authenticate(name="alice", password=new_password)
    with pytest.raises(UserExists):
        await users.add(actor=SAM, name="alice", password=PASSWORD)

    assert alice.password_hash is not None
    assert changed.password_hash is not None
    secrets = [PASSWORD, PASSWORD + "!", new_password, alice.password_hash, changed.password_hash]
    # The salt and digest parts of each hash, on their own, must not leak either.
    for stored in (alice.password_hash, changed.password_hash):
        secrets += stored.split("$")[-2:]
    all_records = await records(store)
    assert {r.type for r in all_records} >= {
        "user.created",
        "user.updated",
        "user.signed_in",
        "user.sign_in_failed",
    }
    for record in all_records:
        text = canonical_json(record.to_dict()).decode()
        for secret in secrets:
            assert secret not in text, (record.type, secret)


# -- disabling, reading, listing -----------------------------------------------------------


async def test_disabling_a_user_calls_the_on_disable_hook(
    users: Users, store: MemoryStore, disabled_names: list[tuple[str, Actor]]
) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    user = await users.disable("alice", actor=SAM, reason="left the company")
    assert user.state is UserState.DISABLED
    assert user.disabled_at is not None
    assert disabled_names == [("alice", SAM)]
    assert await users.active("alice") is None
    (updated,) = await records(store, "user.updated")
    assert updated.details == {"state": "disabled", "reason": "left the company"}


async def test_disabling_twice_changes_nothing_more(users: Users, store: MemoryStore) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    first = await users.disable("alice", actor=SAM)
    again = await users.disable("alice", actor=SAM)
    assert again == first
    assert len(await records(store, "user.updated")) == 1


async def test_a_developer_may_not_disable_a_user(
    users: Users, disabled_names: list[tuple[str, Actor]]
) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    with pytest.raises(Forbidden):
        await users.disable("alice", actor=operator(Role.DEVELOPER))
    assert disabled_names == []


async def test_disabling_an_unknown_user_is_not_found(users: Users) -> None:
    with pytest.raises(UserNotFound):
        await users.disable("nobody", actor=SAM)


async def test_a_user_may_read_themselves(users: Users) -> None:
    alice = await users.add(actor=SAM, name="alice", password=PASSWORD)
    assert await users.get("alice", actor=Actor.user(name="alice")) == alice


async def test_a_user_may_not_read_another_user(users: Users) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    await users.add(actor=SAM, name="bob", password=PASSWORD)
    with pytest.raises(Forbidden):
        await users.get("bob", actor=Actor.user(name="alice"))


async def test_a_user_may_not_list_users(users: Users) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    with pytest.raises(Forbidden, match=r"user\.read"):
        await users.list(actor=Actor.user(name="alice"))


@pytest.mark.parametrize("role", [Role.SECURITY_ADMIN, Role.ROOT, Role.AUDITOR])
async def test_security_admins_and_auditors_list_users_by_name(users: Users, role: Role) -> None:
    for name in ("carol", "alice", "bob"):
        await users.add(actor=SAM, name=name, password=None)
    listed = await users.list(actor=operator(role))
    assert [u.name for u in listed] == ["alice", "bob", "carol"]
    assert [u.name for u in await users.list(actor=operator(role), after="alice", limit=1)] == [
        "bob"
    ]


async def test_a_developer_may_not_list_users(users: Users) -> None:
    with pytest.raises(Forbidden):
        await users.list(actor=operator(Role.DEVELOPER))


async def test_a_user_may_change_their_own_password_but_not_anothers(users: Users) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    await users.add(actor=SAM, name="bob", password=PASSWORD)
    alice = Actor.user(name="alice")
    await users.set_password("alice", "alice's new passphrase", actor=alice, current=PASSWORD)
    await users.authenticate(name="alice", password="alice's new passphrase")
    with pytest.raises(Forbidden):
        await users.set_password("bob", "bob's stolen passphrase", actor=Actor.user(name="alice"))
    await users.authenticate(name="bob", password=PASSWORD)


async def test_a_stolen_session_cannot_change_the_password_without_the_current_one(
    users: Users,
) -> None:
    await users.add(actor=SAM, name="alice", password=PASSWORD)
    alice = Actor.user(name="alice")
    with pytest.raises(Unauthenticated):
        await users.set_password("alice", "mallory's passphrase!", actor=alice)
    with pytest.raises(Unauthenticated):
        await users.set_password("alice", "mallory's passphrase!", actor=alice, current="guess")
    await users.authenticate(name="alice", password=PASSWORD)


async def test_a_federated_user_gets_no_local_password_and_cannot_sign_in_here(
    users: Users, store: MemoryStore
) -> None:
    await users.add(actor=SAM, name="carol@corp", password=None)
    carol = await store.get_user("carol@corp")
    assert carol is not None
    federated = replace(carol, issuer="https://idp.corp.example", version=carol.version + 1)
    await store.update_user(federated, expected_version=carol.version)
    with pytest.raises(InvalidInput, match="signs in at"):
        await users.set_password("carol@corp", "a local passphrase!", actor=SAM)
    with pytest.raises(Unauthenticated):
        await users.authenticate(name="carol@corp", password="a local passphrase!")


async def test_a_stored_hash_follows_a_raised_cost_at_sign_in_without_ending_sessions(
    store: MemoryStore, audit: AuditLog, clock: FixedClock
) -> None:
    cheap = Users(store=store, audit=audit, clock=clock, hasher=PasswordHasher.fast_for_tests(),
                  issuer=ISSUER)  # fmt: skip
    await cheap.add(actor=SAM, name="alice", password=PASSWORD)
    before = await store.get_user("alice")
    assert before is not None
    dearer = PasswordHasher(PasswordCost(time_cost=2, memory_kib=64, parallelism=1))
    users = Users(store=store, audit=audit, clock=clock, hasher=dearer, issuer=ISSUER)
    await users.authenticate(name="alice", password=PASSWORD)
    after = await store.get_user("alice")
    assert after is not None
    assert after.password_hash != before.password_hash
    assert not dearer.needs_rehash(after.password_hash or "")
    assert after.updated_at == before.updated_at  # not a change of hers: sessions stay
    await users.authenticate(name="alice", password=PASSWORD)


# -- console roles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role", [Role.SECURITY_ADMIN, Role.PLATFORM_ADMIN, Role.DEVELOPER, Role.AUDITOR]
)
async def test_a_security_admin_gives_a_person_a_console_role(
    users: Users, store: MemoryStore, clock: FixedClock, role: Role
) -> None:
    alice = await users.add(actor=SAM, name="alice", password=PASSWORD)
    assert alice.role is None  # an end user until given a role
    clock.advance(5)
    given = await users.set_role("alice", role, actor=SAM)
    assert given.role is role
    assert (given.version, given.updated_at) == (alice.version + 1, clock.now())
    assert await store.get_user("alice") == given
    assert (await users.set_role("alice", None, actor=SAM)).role is None
    assert (await store.get_user("alice") or alice).role is None


async def test_a_person_is_added_with_a_console_role(users: Users, store: MemoryStore) -> None:
    alice = await users.add(actor=SAM, name="alice", password=None, role=Role.AUDITOR)
    assert alice.role is Role.AUDITOR
    assert await store.get_user("alice") == alice
    (created,) = await records(store, "user.created")
    assert created.details["role"] == "auditor"
    await users.add(actor=SAM, name="bob", password=None)
    assert (await records(store, "user.created"))[1].details["role"] is None


@pytest.mark.parametrize("role", [Role.ROOT, Role.ENFORCEMENT_POINT])
async def test_a_person_cannot_be_given_the_root_role(
    users: Users, store: MemoryStore, role: Role
) -> None:
    """Nor an enforcement point's: refused before anything is written or recorded, on adding
    and on a change alike."""
    with pytest.raises(InvalidInput, match="console role is one of") as caught:
        await users.add(actor=SAM, name="mallory", password=None, role=role)
    assert (caught.value.code, caught.value.details["field"]) == ("invalid_input", "role")
    assert await store.get_user("mallory") is None
    alice = await users.add(actor=SAM, name="alice", password=None)
    with pytest.raises(InvalidInput, match="console role is one of"):
        await users.set_role("alice", role, actor=SAM)
    assert await store.get_user("alice") == alice
    assert await records(store, "user.role_changed") == []


@pytest.mark.parametrize(
    ("given", "role"),
    [
        (None, None),
        ("developer", Role.DEVELOPER),
        (Role.SECURITY_ADMIN, Role.SECURITY_ADMIN),
        ("platform-admin", Role.PLATFORM_ADMIN),
        ("auditor", Role.AUDITOR),
        ("root", InvalidInput),
        ("enforcement-point", InvalidInput),
        ("wizard", InvalidInput),
        ("Developer", InvalidInput),
        ("", InvalidInput),
    ],
)
def test_a_console_role_is_an_operator_role_but_root_and_enforcement_point(
    given: Role | str | None, role: Role | type[InvalidInput] | None
) -> None:
    assert frozenset(Role) - CONSOLE_ROLES == {Role.ROOT, Role.ENFORCEMENT_POINT}
    if role is InvalidInput:
        with pytest.raises(InvalidInput, match="console role is one of auditor, developer"):
            check_console_role(given)
    else:
        assert check_console_role(given) is role


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.AUDITOR, Role.PLATFORM_ADMIN])
async def test_a_developer_cannot_change_roles(
    users: Users, store: MemoryStore, role: Role
) -> None:
    """Only security admins (and root) hand out console roles: not another operator, not the
    person themselves."""
    alice = await users.add(actor=SAM, name="alice", password=PASSWORD)
    for actor in (operator(role), Actor.user(name="alice")):
        with pytest.raises(Forbidden, match=r"user\.manage"):
            await users.set_role("alice", Role.SECURITY_ADMIN, actor=actor)
        with pytest.raises(Forbidden):
            await users.add(actor=actor, name="bob", password=None, role=Role.DEVELOPER)
    assert await store.get_user("alice") == alice
    assert await records(store, "user.role_changed") == []


async def test_a_role_change_is_an_audit_record(users: Users, store: MemoryStore) -> None:
    await users.add(actor=SAM, name="alice", password=None)
    await users.set_role("alice", Role.DEVELOPER, actor=SAM)
    await users.set_role("alice", Role.AUDITOR, actor=operator(Role.ROOT, "root"))
    await users.set_role("alice", None, actor=SAM)
    changes = await records(store, "user.role_changed")
    assert [(r.actor, r.subject, r.outcome) for r in changes] == [
        ("operator:sam", "user:alice", Outcome.SUCCESS),
        ("operator:root", "user:alice", Outcome.SUCCESS),
        ("operator:sam", "user:alice", Outcome.SUCCESS),
    ]
    assert [dict(r.details) for r in changes] == [
        {"role": "developer", "previous": None},
        {"role": "auditor", "previous": "developer"},
        {"role": None, "previous": "auditor"},
    ]
    assert await records(store, "user.updated") == []


async def test_giving_the_role_a_person_holds_changes_nothing(
    users: Users, store: MemoryStore
) -> None:
    await users.add(actor=SAM, name="alice", password=None, role=Role.DEVELOPER)
    before = await store.get_user("alice")
    assert await users.set_role("alice", Role.DEVELOPER, actor=SAM) == before
    assert await records(store, "user.role_changed") == []


async def test_a_role_change_ends_the_persons_earlier_sessions(
    users: Users, clock: FixedClock
) -> None:
    """No token or sign-in session outlives the role it was issued under."""
    alice = await users.add(actor=SAM, name="alice", password=PASSWORD, role=Role.SECURITY_ADMIN)
    signed_in = int(clock.now().timestamp())
    assert issued_since_change(alice, signed_in)
    clock.advance(60)
    demoted = await users.set_role("alice", Role.AUDITOR, actor=SAM)
    assert not issued_since_change(demoted, signed_in)


async def test_the_role_of_an_unknown_user_is_not_found(users: Users) -> None:
    with pytest.raises(UserNotFound):
        await users.set_role("nobody", Role.DEVELOPER, actor=SAM)
