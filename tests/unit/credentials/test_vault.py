"""The secrets vault engine (tether.credentials.vault) and its secrets' management
(``Engines.put_secret``/``delete_secret``/``secret_names``), over the in-memory store and a
real audit log: values are sealed, handed out only as the role says, never recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.audit import ORIGIN, open_log
from tether._internal.clock import FixedClock
from tether.audit.log import AuditLog
from tether.credentials import lifecycle
from tether.credentials.engines import EngineKind, Engines
from tether.credentials.models import EndKind, EngineConfig, Lease, RoleTemplate
from tether.credentials.vault import (
    MAX_MAP_BYTES,
    MAX_SECRETS,
    MAX_VALUE_BYTES,
    VaultEngine,
    dump_secrets,
    open_vault_engine,
    parse_secrets,
    validate_vault_settings,
    with_secret,
    without_secret,
)
from tether.crypto.kek import KeyEncryptionKey
from tether.errors import Forbidden, InvalidInput, NotFound, VersionConflict
from tether.identity.access import Actor
from tether.identity.models import Role
from tether.store.memory import MemoryStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOLDER = "spiffe://acme.org/agent/faq-bot/i/i-1"
CRM_KEY = "crm-key-5f1d2c9a7e4b"
REFRESH = "refresh-token-0a9b8c7d6e"
ADMIN = Actor.operator(token_id="tok_admin", name="pat", role=Role.PLATFORM_ADMIN)
DEVELOPER = Actor.operator(token_id="tok_dev", name="dan", role=Role.DEVELOPER)


def _role(name: str = "crm", hands_out: str = "crm-api-key", **options: object) -> RoleTemplate:
    return RoleTemplate(name=name, options={"secret": hands_out, **options})


def _config(*roles: RoleTemplate, settings: dict[str, object] | None = None) -> EngineConfig:
    templates = roles or (_role(),)
    return EngineConfig(
        name="vault-main",
        kind="vault",
        settings=settings or {},
        roles={r.name: r for r in templates},
        created_at=NOW,
        created_by="root",
        updated_at=NOW,
    )


def _lease(*, role: str = "crm", engine: str = "vault-main", ttl: int = 60) -> Lease:
    lease = lifecycle.new_lease(
        id="lea_1",
        engine=engine,
        role=role,
        credential="lea_1",
        agent="faq-bot",
        instance="i-1",
        now=NOW,
        ttl=ttl,
        max_ttl=600,
    )
    return lifecycle.activated(lease, now=NOW)


# -- the map ------------------------------------------------------------------------------


def test_vault_map_round_trips_sorted() -> None:
    secrets = with_secret(with_secret({}, "zeta", "z"), "alpha", "a")
    text = dump_secrets(secrets)
    assert text == '{"alpha":"a","zeta":"z"}'
    assert parse_secrets(text) == secrets
    assert parse_secrets(None) == {}


@pytest.mark.parametrize(
    "text",
    [
        f"not json {CRM_KEY}",
        json.dumps([CRM_KEY]),
        json.dumps({"crm-api-key": 5}),
        json.dumps({CRM_KEY.upper(): "value"}),
        json.dumps({"crm-api-key": ""}),
        '{"crm-api-key": "' + CRM_KEY + '", "crm-api-key": "' + CRM_KEY + '"}',
    ],
)
def test_vault_map_refusal_never_quotes_the_text(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_secrets(text)
    assert CRM_KEY not in refused.value.message
    assert CRM_KEY.upper() not in refused.value.message
    assert CRM_KEY not in json.dumps(dict(refused.value.details))


def test_vault_value_past_16_kib_is_refused_naming_the_secret_only() -> None:
    value = "v" * (MAX_VALUE_BYTES + 1)
    with pytest.raises(InvalidInput, match="'big'") as refused:
        with_secret({}, "big", value)
    assert value not in refused.value.message
    assert with_secret({}, "big", "é" * (MAX_VALUE_BYTES // 2))  # bytes, not characters


def test_vault_value_limit_counts_bytes_not_characters() -> None:
    with pytest.raises(InvalidInput, match="bytes"):
        with_secret({}, "wide", "é" * (MAX_VALUE_BYTES // 2 + 1))


def test_vault_holds_at_most_1000_secrets() -> None:
    full = {f"s-{i}": "v" for i in range(MAX_SECRETS)}
    with pytest.raises(InvalidInput, match=f"at most {MAX_SECRETS} secrets"):
        with_secret(full, "one-more", "v")
    assert len(with_secret(full, "s-0", "replaced")) == MAX_SECRETS


@pytest.mark.parametrize("name", ["", "A", "a", "-a", "a_b", "x" * 64, "a/b"])
def test_vault_secret_names_follow_the_engine_name_rule(name: str) -> None:
    with pytest.raises(InvalidInput, match="secret name"):
        with_secret({}, name, "v")


def test_vault_deleting_a_missing_secret_is_not_found() -> None:
    with pytest.raises(NotFound, match="'gone'"):
        without_secret({"kept": "v"}, "gone")
    assert without_secret({"kept": "v", "gone": "w"}, "gone") == {"kept": "v"}


# -- opening ------------------------------------------------------------------------------


def test_vault_takes_no_settings() -> None:
    assert validate_vault_settings({}) == {}
    with pytest.raises(InvalidInput, match="unknown vault settings: path"):
        validate_vault_settings({"path": "/x"})


@pytest.mark.parametrize(
    ("role", "match"),
    [
        (_role(hands_out="missing"), "does not hold"),
        (RoleTemplate(name="crm"), "names no secret"),
        (_role(handout="email"), "handout is one of inject, lease"),
        (_role(audience="x"), "unknown options audience"),
        (replace(_role(), group="readers"), "takes no group"),
    ],
)
async def test_vault_open_refuses_a_role_it_cannot_serve(role: RoleTemplate, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        await open_vault_engine(_config(role), json.dumps({"crm-api-key": CRM_KEY}))


async def test_vault_open_refuses_a_secret_that_is_not_a_map() -> None:
    with pytest.raises(InvalidInput, match="JSON object"):
        await open_vault_engine(_config(), CRM_KEY)


# -- the engine ---------------------------------------------------------------------------


async def _engine(*roles: RoleTemplate) -> VaultEngine:
    secrets = {"crm-api-key": CRM_KEY, "gh-refresh": REFRESH}
    return await open_vault_engine(_config(*roles), json.dumps(secrets))


async def test_vault_inject_lease_hands_out_no_value() -> None:
    engine = await _engine(_role())
    expires = NOW + timedelta(seconds=60)
    issued = await engine.create(
        credential="lea_1", role=_role(), expires_at=expires, holder=HOLDER
    )
    assert issued.secret is None
    assert dict(issued.details) == {"secret_name": "crm-api-key", "handout": "inject"}
    assert CRM_KEY not in repr(engine)


async def test_vault_lease_handout_returns_the_value() -> None:
    role = _role(handout="lease")
    engine = await _engine(role)
    expires = NOW + timedelta(seconds=60)
    issued = await engine.create(credential="lea_1", role=role, expires_at=expires, holder=HOLDER)
    assert issued.secret == CRM_KEY
    assert dict(issued.details) == {"secret_name": "crm-api-key", "handout": "lease"}


async def test_vault_reveal_only_for_a_lease_in_force_on_that_role() -> None:
    role, other = _role(), _role("gh", "gh-refresh")
    engine = await _engine(role, other)
    lease = _lease()
    assert engine.reveal(lease=lease, role=role, now=NOW) == CRM_KEY
    with pytest.raises(Forbidden, match="not in force"):
        engine.reveal(lease=lease, role=role, now=lease.expires_at)
    with pytest.raises(Forbidden, match="not one of"):
        engine.reveal(lease=lease, role=other, now=NOW)
    with pytest.raises(Forbidden, match="not one of"):
        engine.reveal(lease=_lease(engine="vault-other"), role=role, now=NOW)
    ending = lifecycle.begin_end(lease, now=NOW, kind=EndKind.REVOKED, reason="r", claim_until=NOW)
    with pytest.raises(Forbidden, match="not in force"):
        engine.reveal(lease=ending, role=role, now=NOW)


async def test_vault_revoke_recalls_nothing_and_manages_nothing() -> None:
    engine = await _engine(_role())
    await engine.revoke(credential="lea_1", role=_role())
    await engine.extend(credential="lea_1", role=_role(), expires_at=NOW)
    assert await engine.managed() == set()
    assert await engine.unmanaged_logins() == []
    assert engine.credential_name("lea_1") == "lea_1"


# -- managing the secrets -----------------------------------------------------------------


@dataclass
class World:
    store: MemoryStore
    engines: Engines
    audit: AuditLog
    kek: KeyEncryptionKey

    async def entries(self) -> bytes:
        end = await self.store.audit_log_end(ORIGIN)
        size = 0 if end is None else end.index + 1
        found = await self.store.audit_entries(ORIGIN, start=0, stop=size)
        return b"\n".join(e.entry for e in found)

    async def records(self, kind: str) -> list[dict[str, Any]]:
        page = await self.store.list_audit(limit=1000)
        return [dict(r.details) for _, r in page if r.type == kind]


class RacingStore(MemoryStore):
    """A store another writer changes between a read of an engine and the write after it."""

    race: Callable[[], Awaitable[object]] | None = None

    async def get_engine(self, name: str) -> EngineConfig | None:
        config = await super().get_engine(name)
        race, self.race = self.race, None
        if race is not None:
            await race()
        return config


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = FixedClock(NOW)
    store = RacingStore(clock=clock)
    audit = await open_log(store, clock)
    kek = KeyEncryptionKey.generate()
    vault = EngineKind(
        open=open_vault_engine, validate=validate_vault_settings, max_secret=MAX_MAP_BYTES
    )
    kinds = {"vault": vault}
    engines = Engines(store=store, audit=audit, clock=clock, kek=kek, kinds=kinds)
    await engines.configure(
        actor=ADMIN,
        name="vault-main",
        kind="vault",
        settings={},
        roles=[_role()],
        secret=json.dumps({"crm-api-key": CRM_KEY}),
    )
    try:
        yield World(store=store, engines=engines, audit=audit, kek=kek)
    finally:
        await engines.close()
        await audit.close()


async def test_vault_put_secret_keeps_the_others_and_reopens(world: World) -> None:
    changed = await world.engines.put_secret("vault-main", "gh-refresh", REFRESH, actor=ADMIN)
    assert changed.version == 2
    names = await world.engines.secret_names("vault-main", actor=ADMIN)
    assert names == ["crm-api-key", "gh-refresh"]
    config, engine = await world.engines.open("vault-main")
    assert config.version == 2
    assert isinstance(engine, VaultEngine)
    assert engine.reveal(lease=_lease(), role=_role(), now=NOW) == CRM_KEY


async def test_vault_secret_changes_are_audited_by_name_never_by_value(world: World) -> None:
    await world.engines.put_secret("vault-main", "gh-refresh", REFRESH, actor=ADMIN)
    await world.engines.put_secret("vault-main", "gh-refresh", REFRESH + "-2", actor=ADMIN)
    await world.engines.delete_secret("vault-main", "gh-refresh", actor=ADMIN)
    set_ = await world.records("engine.secret_set")
    assert [(r["secret"], r["replaced"], r["version"]) for r in set_] == [
        ("gh-refresh", False, 2),
        ("gh-refresh", True, 3),
    ]
    deleted = await world.records("engine.secret_deleted")
    assert [(r["secret"], r["version"]) for r in deleted] == [("gh-refresh", 4)]
    logged = await world.entries()
    assert b"gh-refresh" in logged
    for value in (CRM_KEY, REFRESH):
        assert value.encode() not in logged


async def test_vault_secret_values_are_sealed_in_the_stored_engine(world: World) -> None:
    await world.engines.put_secret("vault-main", "gh-refresh", REFRESH, actor=ADMIN)
    stored = await world.store.get_engine("vault-main")
    assert stored is not None
    assert stored.sealed_secret is not None
    assert REFRESH.encode() not in stored.sealed_secret
    assert CRM_KEY.encode() not in stored.sealed_secret
    assert REFRESH not in repr(stored)
    aad = b"tether engine secret v1:vault-main"
    opened = json.loads(world.kek.open(stored.sealed_secret, aad=aad))
    assert opened == {"crm-api-key": CRM_KEY, "gh-refresh": REFRESH}


async def test_vault_secret_a_role_hands_out_cannot_be_deleted(world: World) -> None:
    with pytest.raises(InvalidInput, match="does not hold"):
        await world.engines.delete_secret("vault-main", "crm-api-key", actor=ADMIN)
    assert await world.engines.secret_names("vault-main", actor=ADMIN) == ["crm-api-key"]
    assert await world.records("engine.secret_deleted") == []


async def test_vault_role_naming_a_missing_secret_is_refused(world: World) -> None:
    with pytest.raises(InvalidInput, match="'gh-refresh', which engine 'vault-main' does not"):
        await world.engines.configure(
            actor=ADMIN,
            name="vault-main",
            kind="vault",
            settings={},
            roles=[_role(), _role("gh", "gh-refresh")],
            secret=None,
        )
    await world.engines.put_secret("vault-main", "gh-refresh", REFRESH, actor=ADMIN)
    config = await world.engines.configure(
        actor=ADMIN,
        name="vault-main",
        kind="vault",
        settings={},
        roles=[_role(), _role("gh", "gh-refresh")],
        secret=None,
    )
    assert sorted(config.roles) == ["crm", "gh"]


async def test_vault_developer_cannot_manage_or_list_secrets(world: World) -> None:
    with pytest.raises(Forbidden):
        await world.engines.put_secret("vault-main", "gh-refresh", REFRESH, actor=DEVELOPER)
    with pytest.raises(Forbidden):
        await world.engines.delete_secret("vault-main", "crm-api-key", actor=DEVELOPER)
    with pytest.raises(Forbidden):
        await world.engines.secret_names("vault-main", actor=DEVELOPER)
    assert await world.records("engine.secret_set") == []


async def test_vault_put_secret_after_a_concurrent_change_is_refused_not_lost(
    world: World,
) -> None:
    store = world.store
    assert isinstance(store, RacingStore)
    store.race = lambda: world.engines.put_secret("vault-main", "first", "1", actor=ADMIN)
    with pytest.raises(VersionConflict):
        await world.engines.put_secret("vault-main", "second", "2", actor=ADMIN)
    names = await world.engines.secret_names("vault-main", actor=ADMIN)
    assert names == ["crm-api-key", "first"]
    records = [r for _, r in await store.list_audit(limit=100) if r.type == "engine.secret_set"]
    first, second, failed = records
    assert (first.details["secret"], str(first.outcome)) == ("first", "success")
    assert (second.details["secret"], str(second.outcome)) == ("second", "success")
    assert str(failed.outcome) == "failure"
    assert failed.correlation_id == second.id
    assert failed.details["error"] == "version_conflict"


async def test_vault_secrets_only_on_a_vault_engine(world: World) -> None:
    await world.store.create_engine(replace(_config(), name="pg-main", kind="postgres"))
    with pytest.raises(InvalidInput, match="only vault engines hold secrets"):
        await world.engines.put_secret("pg-main", "x-key", "v", actor=ADMIN)
    with pytest.raises(InvalidInput, match="only vault engines hold secrets"):
        await world.engines.secret_names("pg-main", actor=ADMIN)


async def test_vault_map_may_exceed_the_4096_characters_of_other_secrets(world: World) -> None:
    big = "b" * MAX_VALUE_BYTES
    await world.engines.put_secret("vault-main", "big", big, actor=ADMIN)
    config = await world.engines.configure(
        actor=ADMIN,
        name="vault-main",
        kind="vault",
        settings={},
        roles=[_role()],
        secret=json.dumps({"crm-api-key": CRM_KEY, "big": big}),
    )
    assert config.version == 3
