"""OAuth clients of the built-in provider: the applications people sign in to.

Every client is public (RFC 6749 §2.1): it holds no secret, and PKCE with S256 (RFC 7636) ties
an authorization code to the client instance that asked for it. A client is registered by an
administrator with its exact redirect URIs — ``https``, or ``http`` on a loopback address for
native applications, whose port may then differ at each request (RFC 8252 §7.3). Two clients are
built in: ``tether-cli``, the ``tether login`` command, redirected to a loopback port, and
``tether-console``, the web console, redirected to ``/console/callback`` under the issuer.

Example::

    client = await clients.add(actor=sam, client_id="shop-web", name="Shop",
                               redirect_uris=["https://shop.example/callback"], agent="shop-bot")
    clients.check_redirect(client, "https://shop.example/callback")    # or InvalidRequest
"""

from __future__ import annotations

import builtins
import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from tether._internal.clock import Clock
from tether.audit.records import AuditRecord
from tether.audit.sink import AuditSink, audited
from tether.delegation.flows import CLI_CLIENT as CLI_CLIENT_ID
from tether.delegation.models import OAuthClient
from tether.errors import AgentNotFound, ClientNotFound, InvalidInput, InvalidRequest
from tether.identity.access import Actor, Permission, require
from tether.identity.names import check_agent_name
from tether.store.interfaces import AgentStore, ClientStore

__all__ = [
    "CLI_CLIENT",
    "CONSOLE_CALLBACK",
    "CONSOLE_CLIENT_ID",
    "FIRST_PARTY",
    "Clients",
    "console_client",
    "redirect_allowed",
]

_CLIENT_ID = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
MAX_REDIRECTS = 10
MAX_URI = 2000

#: ``tether login``: a native application listening on a loopback port (RFC 8252 §7.3).
CLI_CLIENT = OAuthClient(
    id=CLI_CLIENT_ID,
    name="Tether command line",
    redirect_uris=("http://127.0.0.1/callback",),
    agent=None,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    created_by="tether",
)
#: The web console (:mod:`tether.api.console`): a client of the issuer it is served under.
CONSOLE_CLIENT_ID = "tether-console"
CONSOLE_CALLBACK = "/console/callback"
#: Tether's own clients: the only ones that may ask for the person's account scope.
FIRST_PARTY = frozenset({CLI_CLIENT.id, CONSOLE_CLIENT_ID})


def console_client(issuer: str) -> OAuthClient:
    """The console's client: redirected only to its own callback under ``issuer``."""
    return OAuthClient(
        id=CONSOLE_CLIENT_ID,
        name="Tether console",
        redirect_uris=(issuer.rstrip("/") + CONSOLE_CALLBACK,),
        agent=None,
        created_at=CLI_CLIENT.created_at,
        created_by="tether",
    )


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_registered(uri: str) -> str:
    parts = urlsplit(uri)
    secure = parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
    if len(uri) > MAX_URI or not secure or not parts.netloc or parts.fragment:
        raise InvalidInput(
            "a redirect URI is https (or http on 127.0.0.1 / [::1]), without a fragment",
            details={"field": "redirect_uris"},
        )
    return uri


def redirect_allowed(client: OAuthClient, uri: str) -> bool:
    """Exactly a registered URI; for a loopback URI, any port (RFC 8252 §7.3)."""
    if uri in client.redirect_uris:
        return True
    asked = urlsplit(uri)
    if asked.scheme != "http" or not _loopback(asked.hostname) or asked.fragment:
        return False
    for registered in client.redirect_uris:
        known = urlsplit(registered)
        same = (known.scheme, known.hostname, known.path, known.query)
        if _loopback(known.hostname) and same == (
            asked.scheme,
            asked.hostname,
            asked.path,
            asked.query,
        ):
            return True
    return False


class Clients:
    def __init__(
        self,
        *,
        store: ClientStore,
        agents: AgentStore,
        audit: AuditSink,
        clock: Clock,
        issuer: str | None = None,
    ) -> None:
        self._store = store
        self._agents = agents
        self._audit = audit
        self._clock = clock
        #: The built-in clients: the command line's, and the console's when served.
        self._builtin = {CLI_CLIENT.id: CLI_CLIENT}
        if issuer is not None:
            self._builtin[CONSOLE_CLIENT_ID] = console_client(issuer)

    async def add(
        self,
        *,
        actor: Actor,
        client_id: str,
        name: str,
        redirect_uris: Sequence[str],
        agent: str | None = None,
    ) -> OAuthClient:
        require(actor, Permission.CLIENT_MANAGE)
        if not _CLIENT_ID.fullmatch(client_id) or client_id in FIRST_PARTY:
            raise InvalidInput(
                "a client id is 2 to 63 characters: lowercase letters, digits and '-', starting "
                "with a letter (and not tether-cli or tether-console)",
                details={"field": "client_id"},
            )
        if not 1 <= len(redirect_uris) <= MAX_REDIRECTS:
            raise InvalidInput(
                f"1 to {MAX_REDIRECTS} redirect URIs", details={"field": "redirect_uris"}
            )
        if agent is not None and await self._agents.get_agent(check_agent_name(agent)) is None:
            raise AgentNotFound(f"no agent named {agent!r}", details={"name": agent})
        client = OAuthClient(
            id=client_id,
            name=name.strip()[:200] or client_id,
            redirect_uris=tuple(dict.fromkeys(_check_registered(u) for u in redirect_uris)),
            agent=agent,
            created_at=self._clock.now(),
            created_by=actor.label,
        )
        details: dict[str, object] = {"redirect_uris": list(client.redirect_uris), "agent": agent}
        record = self._record("client.registered", actor, client_id, details)
        await audited(
            self._audit, record, lambda: self._store.create_client(client), clock=self._clock
        )
        return client

    async def get(self, client_id: str) -> OAuthClient | None:
        """The client (the built-in ones included), or None."""
        if client_id in self._builtin:
            return self._builtin[client_id]
        if not _CLIENT_ID.fullmatch(client_id or ""):
            return None
        return await self._store.get_client(client_id)

    async def list(self, *, actor: Actor) -> builtins.list[OAuthClient]:
        require(actor, Permission.CLIENT_READ)
        return [*self._builtin.values(), *await self._store.list_clients()]

    async def remove(self, client_id: str, *, actor: Actor) -> None:
        require(actor, Permission.CLIENT_MANAGE)
        if await self.get(client_id) is None or client_id in FIRST_PARTY:
            raise ClientNotFound(f"no client {client_id!r}", details={"id": client_id})
        record = self._record("client.removed", actor, client_id, {})
        await audited(
            self._audit, record, lambda: self._store.delete_client(client_id), clock=self._clock
        )

    async def check_redirect(self, client_id: str, redirect_uri: str) -> OAuthClient:
        """The client, if ``redirect_uri`` is one of its own; ``InvalidRequest`` otherwise —
        shown to the person, never sent to an unverified redirect (RFC 6749 §4.1.2.1)."""
        client = await self.get(client_id)
        if client is None:
            raise InvalidRequest("unknown client_id")
        if not redirect_allowed(client, redirect_uri):
            raise InvalidRequest("redirect_uri is not registered for this client")
        return client

    def _record(
        self, tag: str, actor: Actor, client_id: str, details: dict[str, object]
    ) -> AuditRecord:
        return AuditRecord.new(
            type=tag,
            actor=actor.label,
            subject=f"client:{client_id}",
            time=self._clock.now(),
            details={"client_id": client_id, **details},
        )
