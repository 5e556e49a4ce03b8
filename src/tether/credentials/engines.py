"""Configured credential engines: what a ``platform-admin`` sets up, sealed and audited.

An engine configuration names a kind (``postgres``, …), its settings (host, databases, the
admin user — never a secret) and its role templates. The admin secret is sealed with the
key-encryption key (AES-GCM, the engine's name as associated data, so a sealed secret moved to
another engine does not open) and is never returned, logged or audited: records say only
whether one is set.

Each kind brings a *factory* (opens the engine from a configuration and its secret) and a
*validator* (checks and normalises its settings); both are given at construction, so this
module does no I/O of its own. Opened engines are kept and reopened when their configuration
changes (its version moves).

A vault engine's secret is its map of named secrets (:mod:`tether.credentials.vault`):
:meth:`Engines.put_secret` and :meth:`Engines.delete_secret` change one entry without the
others being sent again — read, change, check by opening, then write compare-and-set on the
version — and are audited (``engine.secret_set``, ``engine.secret_deleted``) by name, never by
value.

Example::

    engines = Engines(store=store, audit=audit, clock=clock, kek=kek,
                      kinds={"postgres": EngineKind(open=open_postgres_engine,
                                                    validate=validate_postgres_settings)})
    await engines.configure(actor=admin, name="pg-main", kind="postgres",
                            settings={...}, roles=[RoleTemplate(name="ro", group="app_ro")],
                            secret="admin password")
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink
from tether.credentials import vault
from tether.credentials.engine import CredentialEngine, EngineFactory, UnmanagedLogin
from tether.credentials.models import EngineConfig, RoleTemplate
from tether.crypto.kek import KeyEncryptionKey
from tether.errors import Conflict, EngineNotFound, Error, InvalidInput, NotFound
from tether.identity.access import Actor, Permission, require
from tether.monitor.sprawl import digest
from tether.store.interfaces import EngineStore, LeaseStore

__all__ = ["MAX_ROLES", "EngineKind", "Engines", "check_role_template", "role_of"]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
NAME_RULE = "2 to 63 characters: lowercase letters, digits and '-', starting with a letter"
#: Role templates one engine may have.
MAX_ROLES = 100
_AUTH = frozenset({"password", "none"})
#: Settings that may change while credentials are live (they do not say where they are).
_TUNABLE = frozenset({"connect_timeout", "pool_size", "known_logins"})
_DATA_CLASSES = frozenset({"public", "internal", "confidential", "restricted"})


@dataclass(frozen=True, kw_only=True)
class EngineKind:
    open: EngineFactory
    #: Checks a configuration's settings (``InvalidInput``) and returns them normalised.
    validate: Callable[[Mapping[str, object]], dict[str, object]]
    #: Whether every role template of this kind must name a group role.
    needs_group: bool = False
    #: The longest admin secret, in characters (a vault engine's is its map of secrets).
    max_secret: int = 4096


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(f"invalid {what} name {name!r}", details={"rule": NAME_RULE})
    return name


def check_role_template(role: RoleTemplate, *, ttl_ceiling: int, needs_group: bool) -> RoleTemplate:
    """``role`` if its TTLs, authentication and group make sense, else ``InvalidInput``."""
    _check_name(role.name, "role")
    if not 1 <= role.default_ttl <= role.max_ttl <= ttl_ceiling:
        raise InvalidInput(
            f"role {role.name!r}: need 1 <= default_ttl <= max_ttl <= {ttl_ceiling} seconds",
            details={"rule": f"1 <= default_ttl <= max_ttl <= {ttl_ceiling}"},
        )
    if role.auth not in _AUTH:
        raise InvalidInput(
            f"role {role.name!r}: auth is 'password' or 'none'", details={"rule": "auth"}
        )
    if not 1 <= role.scram_iterations <= 1_000_000:
        raise InvalidInput(
            f"role {role.name!r}: scram_iterations is between 1 and 1,000,000",
            details={"rule": "1 <= scram_iterations <= 1000000"},
        )
    if needs_group and not role.group:
        raise InvalidInput(
            f"role {role.name!r} needs a group: the role that holds the privileges",
            details={"rule": "group role required"},
        )
    if role.data_class not in _DATA_CLASSES:
        raise InvalidInput(
            f"role {role.name!r}: data_class is one of {', '.join(sorted(_DATA_CLASSES))}",
            details={"rule": "data_class"},
        )
    return role


class _Store(EngineStore, LeaseStore, Protocol):
    """Engines, and which of their credentials are live (a change must not strand them)."""


class Engines:
    def __init__(
        self,
        *,
        store: _Store,
        audit: AuditSink,
        clock: Clock,
        kek: KeyEncryptionKey,
        kinds: Mapping[str, EngineKind],
        ttl_ceiling: int = 86_400,
        config_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._kek = kek
        self._kinds = MappingProxyType(dict(kinds))
        self._ttl_ceiling = ttl_ceiling
        #: Opened engines by name, with the configuration version they were opened for.
        self._open: dict[str, tuple[int, EngineConfig, CredentialEngine]] = {}
        #: Configurations as last read, and when: trusted for ``config_seconds`` (a change made
        #: here is seen at once; one made by another replica within that long).
        self._configs: dict[str, tuple[datetime, EngineConfig]] = {}
        self._config_ttl = timedelta(seconds=config_seconds)
        self._opening = asyncio.Lock()

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._kinds)

    # -- configuration -------------------------------------------------------------------

    async def configure(
        self,
        *,
        actor: Actor,
        name: str,
        kind: str,
        settings: Mapping[str, object],
        roles: Sequence[RoleTemplate],
        secret: str | None,
    ) -> EngineConfig:
        """Create the engine, or replace the configuration of an engine of the same kind
        (``secret`` None keeps the sealed one). Checked by opening it: a configuration the
        engine cannot work with (wrong password, missing group role) is refused."""
        require(actor, Permission.ENGINE_MANAGE)
        _check_name(name, "engine")
        spec = self._kind(kind)
        normal = spec.validate(settings)
        templates = self._templates(roles, spec)
        existing = await self._store.get_engine(name)
        if existing is not None and existing.kind != kind:
            raise InvalidInput(
                f"engine {name!r} is a {existing.kind} engine; remove it to change its kind",
                details={"rule": "kind is fixed"},
            )
        if existing is not None:
            await self._refuse_moving_live_credentials(existing, normal, templates)
        now = self._clock.now()
        sealed = self._seal(name, secret, spec.max_secret) if secret is not None else None
        config = EngineConfig(
            name=name,
            kind=kind,
            settings=MappingProxyType(normal),
            roles=MappingProxyType(templates),
            created_at=existing.created_at if existing else now,
            created_by=existing.created_by if existing else actor.label,
            updated_at=now,
            version=existing.version + 1 if existing else 1,
            sealed_secret=sealed
            if existing is None or secret is not None
            else existing.sealed_secret,
        )
        await self._check_opens(config)
        record = self._record("engine.configured", actor, config, _facts(config))
        await self._audit.append(record)
        try:
            if existing is None:
                await self._store.create_engine(config)
            else:
                await self._store.update_engine(config, expected_version=existing.version)
        except Error as exc:
            await self._audit.append(record.failure(exc.code, time=self._clock.now()))
            raise
        finally:
            self._configs.pop(name, None)
        return config

    async def _refuse_moving_live_credentials(
        self,
        existing: EngineConfig,
        settings: Mapping[str, object],
        templates: Mapping[str, RoleTemplate],
    ) -> None:
        """While credentials of the engine are live, its connection, prefix and roles stay:
        revoking them through a changed configuration would miss them (another server, another
        prefix) and mark their leases ended while they still work."""
        moved = sorted(
            key
            for key in set(existing.settings) | set(settings)
            if key not in _TUNABLE and existing.settings.get(key) != settings.get(key)
        )
        dropped = sorted(set(existing.roles) - set(templates))
        if not (moved or dropped) or not await self._store.live_credentials(existing.name):
            return
        raise Conflict(
            f"engine {existing.name!r} has live leases: revoke them before changing "
            + ", ".join([*moved, *(f"role {r}" for r in dropped)]),
            details={"settings": moved, "roles": dropped},
        )

    async def remove(self, name: str, *, actor: Actor) -> None:
        """Remove an engine no live lease uses (``Conflict`` otherwise)."""
        require(actor, Permission.ENGINE_MANAGE)
        config = await self._load(name)
        record = self._record("engine.removed", actor, config, {"name": name})
        await self._audit.append(record)
        try:
            await self._store.delete_engine(name)
        except Error as exc:
            await self._audit.append(record.failure(exc.code, time=self._clock.now()))
            raise
        await self._forget(name)

    async def get(self, name: str, *, actor: Actor) -> EngineConfig:
        require(actor, Permission.ENGINE_READ)
        return await self._load(name)

    async def list(self, *, actor: Actor) -> builtins.list[EngineConfig]:
        require(actor, Permission.ENGINE_READ)
        return await self._store.list_engines()

    # -- a vault engine's secrets ---------------------------------------------------------

    async def put_secret(
        self, name: str, secret_name: str, value: str, *, actor: Actor
    ) -> EngineConfig:
        """Add or replace one secret of vault engine ``name``; the others stay as they are
        (``VersionConflict`` if the engine changed meanwhile: try again)."""
        require(actor, Permission.ENGINE_MANAGE)
        config = await self._vault(name)
        secrets = vault.parse_secrets(self._unseal(config))
        changed = vault.with_secret(secrets, secret_name, value)
        facts = {"secret": secret_name, "replaced": secret_name in secrets}
        return await self._reseal(config, changed, actor=actor, tag="engine.secret_set", **facts)

    async def delete_secret(self, name: str, secret_name: str, *, actor: Actor) -> EngineConfig:
        """Remove one secret of vault engine ``name`` (``NotFound`` if it holds none by that
        name, ``InvalidInput`` while a role hands it out)."""
        require(actor, Permission.ENGINE_MANAGE)
        config = await self._vault(name)
        changed = vault.without_secret(vault.parse_secrets(self._unseal(config)), secret_name)
        return await self._reseal(
            config, changed, actor=actor, tag="engine.secret_deleted", secret=secret_name
        )

    async def secret_names(self, name: str, *, actor: Actor) -> builtins.list[str]:
        """The names of vault engine ``name``'s secrets, sorted (never a value)."""
        require(actor, Permission.ENGINE_MANAGE)
        return sorted(vault.parse_secrets(self._unseal(await self._vault(name))))

    def held_digests(self, config: EngineConfig) -> dict[str, str]:
        """What ``config`` holds, by name, each as the hex SHA-256 of its value (never the
        value; :func:`tether.monitor.sprawl.digest`, as the scanner computes them): every
        secret of a vault engine, else the admin secret under the admin user's name. Empty
        when it holds none or it cannot be opened. The posture's secret-sprawl check compares
        these with the digests of secrets found in files."""
        try:
            secret = self._unseal(config)
        except Error:
            return {}
        if secret is None:
            return {}
        if config.kind == vault.VAULT_KIND:
            try:
                held = vault.parse_secrets(secret)
            except Error:
                return {}
        else:
            held = {str(config.settings.get("admin_user", "admin")): secret}
        return {name: digest(value) for name, value in held.items()}

    async def _vault(self, name: str) -> EngineConfig:
        config = await self._load(name)
        if config.kind != vault.VAULT_KIND:
            raise InvalidInput(
                f"engine {name!r} is a {config.kind} engine: only vault engines hold secrets",
                details={"rule": "vault engines only"},
            )
        return config

    async def _reseal(
        self,
        config: EngineConfig,
        secrets: Mapping[str, str],
        *,
        actor: Actor,
        tag: str,
        **facts: object,
    ) -> EngineConfig:
        """``config`` with ``secrets`` sealed as its secret, checked by opening it (a role
        naming a secret no longer held is refused), recorded, then stored if the version
        read is still the stored one."""
        spec = self._kind(config.kind)
        changed = replace(
            config,
            updated_at=self._clock.now(),
            version=config.version + 1,
            sealed_secret=self._seal(config.name, vault.dump_secrets(secrets), spec.max_secret),
        )
        await self._check_opens(changed)
        details = {"name": config.name, "version": changed.version, **facts}
        record = self._record(tag, actor, changed, details)
        await self._audit.append(record)
        try:
            await self._store.update_engine(changed, expected_version=config.version)
        except Error as exc:
            await self._audit.append(record.failure(exc.code, time=self._clock.now()))
            raise
        finally:
            self._configs.pop(config.name, None)
        return changed

    # -- use -----------------------------------------------------------------------------

    async def config(self, name: str) -> EngineConfig:
        """The engine's configuration, without opening the engine (``EngineNotFound``)."""
        return await self._current(name)

    async def open(self, name: str) -> tuple[EngineConfig, CredentialEngine]:
        """The engine's configuration and the engine itself, opened once and reopened when
        the configuration changed (``EngineNotFound``, ``EngineUnavailable``)."""
        config = await self._current(name)
        kept = self._open.get(name)
        if kept is not None and kept[0] == config.version:
            return kept[1], kept[2]
        async with self._opening:
            kept = self._open.get(name)
            if kept is not None and kept[0] == config.version:
                return kept[1], kept[2]
            engine = await self._kind(config.kind).open(config, self._unseal(config))
            await self._forget(name)
            self._open[name] = (config.version, config, engine)
            return config, engine

    async def unmanaged_logins(self, name: str, *, actor: Actor) -> builtins.list[UnmanagedLogin]:
        """Logins in the engine's system that Tether did not create (a posture signal)."""
        require(actor, Permission.ENGINE_READ)
        _, engine = await self.open(name)
        return await engine.unmanaged_logins()

    async def scan(
        self,
    ) -> tuple[builtins.list[tuple[str, UnmanagedLogin]], builtins.list[tuple[str, str]]]:
        """Every engine's unmanaged logins (the monitor's scan: no actor), and the engines
        that could not be scanned with their error code: one engine down hides no other."""
        found: builtins.list[tuple[str, UnmanagedLogin]] = []
        failed: builtins.list[tuple[str, str]] = []
        for config in await self._store.list_engines():
            try:
                _, engine = await self.open(config.name)
                found += [(config.name, login) for login in await engine.unmanaged_logins()]
            except Error as exc:
                failed.append((config.name, exc.code))
        return found, failed

    async def all(self) -> builtins.list[EngineConfig]:
        """Every configured engine (for the reaper and the posture scan: no actor)."""
        return await self._store.list_engines()

    async def close(self) -> None:
        for name in list(self._open):
            await self._forget(name)

    # -- internals -----------------------------------------------------------------------

    def _kind(self, kind: str) -> EngineKind:
        spec = self._kinds.get(kind)
        if spec is None:
            raise InvalidInput(
                f"unknown engine kind {kind!r}: one of {', '.join(sorted(self._kinds))}",
                details={"rule": "kind"},
            )
        return spec

    def _templates(
        self, roles: Sequence[RoleTemplate], spec: EngineKind
    ) -> dict[str, RoleTemplate]:
        if not roles or len(roles) > MAX_ROLES:
            raise InvalidInput(
                f"an engine has 1 to {MAX_ROLES} role templates",
                details={"rule": f"1 to {MAX_ROLES} roles"},
            )
        templates: dict[str, RoleTemplate] = {}
        for role in roles:
            checked = check_role_template(
                role, ttl_ceiling=self._ttl_ceiling, needs_group=spec.needs_group
            )
            if checked.name in templates:
                raise InvalidInput(f"role {role.name!r} is named twice")
            templates[checked.name] = replace(
                checked, options=MappingProxyType(dict(checked.options))
            )
        return templates

    async def _check_opens(self, config: EngineConfig) -> None:
        engine = await self._kind(config.kind).open(config, self._unseal(config))
        await engine.close()

    async def _current(self, name: str) -> EngineConfig:
        now = self._clock.now()
        kept = self._configs.get(name)
        if kept is not None and now - kept[0] < self._config_ttl:
            return kept[1]
        config = await self._load(name)
        self._configs[name] = (now, config)
        return config

    async def _load(self, name: str) -> EngineConfig:
        config = await self._store.get_engine(name)
        if config is None:
            raise EngineNotFound(f"no engine named {name!r}", details={"name": name})
        return config

    async def _forget(self, name: str) -> None:
        self._configs.pop(name, None)
        kept = self._open.pop(name, None)
        if kept is not None:
            await kept[2].close()

    def _seal(self, name: str, secret: str, limit: int) -> bytes:
        if not secret or len(secret) > limit:
            raise InvalidInput(f"an engine's secret is 1 to {limit:,} characters")
        return self._kek.seal(secret.encode(), aad=_aad(name))

    def _unseal(self, config: EngineConfig) -> str | None:
        if config.sealed_secret is None:
            return None
        return self._kek.open(config.sealed_secret, aad=_aad(config.name)).decode()

    def _record(
        self, tag: str, actor: Actor, config: EngineConfig, details: Mapping[str, object]
    ) -> AuditRecord:
        return AuditRecord.new(
            type=tag,
            actor=actor.label,
            subject=f"engine:{config.name}",
            time=self._clock.now(),
            details=details,
        )


def role_of(config: EngineConfig, role: str) -> RoleTemplate:
    """The engine's role template ``role`` (``NotFound`` if it has none by that name)."""
    template = config.roles.get(role)
    if template is None:
        known = ", ".join(sorted(config.roles))
        raise NotFound(
            f"engine {config.name!r} has no role {role!r}: one of {known}",
            details={"engine": config.name, "role": role},
        )
    return template


def _aad(name: str) -> bytes:
    return f"tether engine secret v1:{name}".encode()


def _facts(config: EngineConfig) -> dict[str, object]:
    return {
        "name": config.name,
        "kind": config.kind,
        "version": config.version,
        "settings": dict(config.settings),
        "roles": [r.to_dict() for r in config.roles.values()],
        "secret_set": config.sealed_secret is not None,
    }
