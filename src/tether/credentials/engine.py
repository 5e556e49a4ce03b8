"""What a credential engine does for the lease service, and nothing more.

An engine creates a credential for one role template, moves its expiry, and revokes it. The
lease service owns the lease records and the order of things (record first, then create;
block first, then remove); an engine only talks to the system that holds the credentials.

Rules every engine keeps:

* ``revoke`` is idempotent: a credential that does not exist (never created, or already gone)
  is revoked. It blocks the credential first, so that a revocation that fails halfway leaves
  it unusable.
* ``managed`` lists the credentials the engine holds under its managed prefix, so credentials
  left behind (a crash between create and record) are found and removed on start.
* Nothing an engine raises or logs carries a secret: failures are ``EngineUnavailable`` with
  the system's words, minus any credential.
* Where a credential cannot be recalled (a static secret of the vault engine, a signed token of
  the token engine), ``revoke`` succeeds with nothing to do and ``managed`` is empty: the lease
  record says the lease ended, and the engine's module says what that does and does not stop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Protocol

from tether.credentials.models import EngineConfig, IssuedCredential, RoleTemplate

__all__ = ["CredentialEngine", "EngineFactory", "UnmanagedLogin"]


class UnmanagedLogin(Protocol):
    """A login the engine's system holds that Tether did not create (a standing privilege,
    or an agent bypassing the broker)."""

    name: str
    details: Mapping[str, object]


class CredentialEngine(Protocol):
    @property
    def kind(self) -> str: ...

    def credential_name(self, lease_id: str) -> str:
        """The name the credential of lease ``lease_id`` gets (under the managed prefix)."""
        ...

    async def create(
        self,
        *,
        credential: str,
        role: RoleTemplate,
        expires_at: datetime,
        holder: str,
        user: str | None = None,
    ) -> IssuedCredential:
        """Create the credential, valid until ``expires_at`` where the system can enforce
        it, for ``holder`` (the SPIFFE ID of the agent instance taking the lease) acting for
        ``user`` when the lease is taken under a person's grant (a token engine names them;
        others ignore both); its secret is returned once."""
        ...

    async def extend(self, *, credential: str, role: RoleTemplate, expires_at: datetime) -> None:
        """Move the credential's expiry to ``expires_at`` (a renewal)."""
        ...

    async def revoke(self, *, credential: str, role: RoleTemplate) -> None:
        """Block, then remove the credential; a missing one counts as removed."""
        ...

    async def managed(self) -> set[str]:
        """Every credential under the managed prefix that the system holds now."""
        ...

    async def unmanaged_logins(self) -> list[UnmanagedLogin]:
        """Logins outside the managed prefix (empty where the notion does not apply)."""
        ...

    async def close(self) -> None: ...


#: Opens the engine of a configuration, given its admin secret (unsealed).
EngineFactory = Callable[[EngineConfig, str | None], Awaitable[CredentialEngine]]
