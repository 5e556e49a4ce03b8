"""The credential the MCP gateway sends upstream for a caller: never the caller's own token.

An upstream that names an :class:`~tether.enforcement.mcp.models.Injection` gets, with each
call, the value of a lease **of the calling agent instance** on that engine's role: the gateway
takes the lease for the agent with the agent's token (so ``use_credential`` is decided by
policy and recorded like any lease), keeps it while it is in force, and takes a new one when it
ends. A vault secret with ``handout: inject`` is read through
:meth:`~tether.credentials.vault.VaultEngine.reveal`, which checks the lease is in force; a
downstream token (or any engine's secret handed out with the lease) is kept in memory for the
lease's life, never stored; a database login (a PostgreSQL role) is sent as one libpq
connection URI (``postgresql://role:password@host:port/database``, RFC 3986 percent-encoded),
the one value an upstream needs to connect as that role alone. The lease is read again before
each use, so a revoked lease is never injected, and one taken under a user's grant serves only
calls under that grant. The agent never sees the value; the ``lease.issued`` record names the
agent instance, the grant and the decision that allowed the lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from tether._internal.clock import Clock
from tether.credentials.engines import Engines, role_of
from tether.credentials.leases import Leases
from tether.credentials.vault import VaultEngine
from tether.enforcement.mcp.models import Injection
from tether.errors import Forbidden
from tether.store.interfaces import LeaseStore

__all__ = ["Injected", "Injector"]

#: Leases kept for callers (beyond this the least recently used are forgotten, not revoked:
#: they end at their TTL).
MAX_KEPT = 10_000
#: A lease with less than this share of its TTL left is replaced before use.
RENEW_SHARE = 0.2


@dataclass(frozen=True, kw_only=True)
class Injected:
    value: str = field(repr=False)
    lease_id: str


@dataclass(kw_only=True)
class _Held:
    lease_id: str
    ttl: float
    value: str | None = field(default=None, repr=False)


class Injector:
    def __init__(
        self, *, leases: Leases, engines: Engines, store: LeaseStore, clock: Clock
    ) -> None:
        self._leases = leases
        self._engines = engines
        self._store = store
        self._clock = clock
        self._held: dict[tuple[str, str, str, str], _Held] = {}
        self._taking: dict[tuple[str, str, str, str], asyncio.Lock] = {}

    async def value(
        self,
        injection: Injection,
        *,
        token: str,
        instance: str,
        audience: str,
        grant_id: str | None = None,
    ) -> Injected:
        """The value to send for ``instance`` acting under ``grant_id`` (whose ``token``,
        minted for ``audience``, the gateway verified): ``Forbidden`` and the rest of
        :meth:`Leases.issue`'s refusals when no lease can be had. A lease taken under one
        user's grant is never used for another's."""
        key = (instance, grant_id or "", injection.engine, injection.role)
        found = await self._in_force(key, injection)
        if found is not None:
            return found
        lock = self._taking.setdefault(key, asyncio.Lock())
        async with lock:
            found = await self._in_force(key, injection)
            if found is not None:
                return found
            issued = await self._leases.issue(
                token=token, engine=injection.engine, role=injection.role, audience=audience
            )
            lease = issued.lease
            ttl = (lease.expires_at - lease.created_at).total_seconds()
            value = _sendable(issued.credential.secret, issued.credential.details)
            held = _Held(lease_id=lease.id, ttl=ttl, value=value)
            self._held[key] = held
            if len(self._held) > MAX_KEPT:  # the oldest first: dicts keep insertion order
                del self._held[next(iter(self._held))]
        if len(self._taking) > MAX_KEPT:
            self._taking = {k: v for k, v in self._taking.items() if v.locked()}
        found = await self._in_force(key, injection)
        if found is None:
            raise Forbidden("the lease taken for this call is not in force")
        return found

    async def _in_force(
        self, key: tuple[str, str, str, str], injection: Injection
    ) -> Injected | None:
        held = self._held.get(key)
        if held is None:
            return None
        lease = await self._store.get_lease(held.lease_id)
        now = self._clock.now()
        left = (lease.expires_at - now).total_seconds() if lease is not None else 0.0
        if lease is None or not lease.usable(now) or left < held.ttl * RENEW_SHARE:
            self._held.pop(key, None)
            return None
        if held.value is not None:
            return Injected(value=held.value, lease_id=lease.id)
        config, engine = await self._engines.open(injection.engine)
        if not isinstance(engine, VaultEngine):
            raise Forbidden(f"engine {injection.engine!r} handed out no value to inject")
        value = engine.reveal(lease=lease, role=role_of(config, injection.role), now=now)
        return Injected(value=value, lease_id=lease.id)


#: What a database login's details name (see ``PostgresEngine.create``).
_LOGIN = ("username", "host", "port", "database")


def _sendable(secret: str | None, details: Mapping[str, object]) -> str | None:
    """The value sent upstream: the secret, or for a database login a connection URI with it
    (every part percent-encoded: a password may hold ``@``, ``/`` or ``:``)."""
    if secret is None or not all(key in details for key in _LOGIN):
        return secret
    user, port, database = (quote(str(details[key]), safe="") for key in _LOGIN if key != "host")
    host = str(details["host"])
    host = f"[{host}]" if ":" in host else quote(host, safe="")  # an IPv6 address in brackets
    return f"postgresql://{user}:{quote(secret, safe='')}@{host}:{port}/{database}"
