"""Secret sprawl: credentials found outside Tether, matched to the ones Tether manages.

``tether posture scan-secrets PATH`` finds secrets in code and configuration with a scanner
(``detect-secrets``) on the operator's machine and sends only their SHA-256 digests; the
server compares them with the digests of the secrets its engines hold and answers which
engine (and which admin user or vault secret) each matching digest belongs to — never a
value, either way. A managed database's admin password found in a file is a standing
credential: anyone who reads the file holds it, whatever Tether's leases say.

Example::

    >>> held = [ManagedSecret(engine="pg-main", kind="postgres", name="tether",
    ...                       sha256=digest("s3cret"))]
    >>> [m.engine for m in match_digests([digest("s3cret"), digest("other")], held)]
    ['pg-main']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256

__all__ = ["ManagedSecret", "SecretMatch", "digest", "match_digests"]


@dataclass(frozen=True, kw_only=True)
class ManagedSecret:
    """A secret an engine holds (its SHA-256, never the value): a postgres engine's admin
    password (``name`` the admin user), one secret of a vault engine (``name`` its name)."""

    engine: str
    kind: str
    name: str
    sha256: str


@dataclass(frozen=True, order=True, slots=True)
class SecretMatch:
    digest: str
    engine: str
    kind: str
    name: str


def digest(secret: str) -> str:
    """The hex SHA-256 of a secret's UTF-8 bytes (what a scanner sends instead of it)."""
    return sha256(secret.encode("utf-8")).hexdigest()


def match_digests(digests: Iterable[str], managed: Iterable[ManagedSecret]) -> list[SecretMatch]:
    """Which of ``digests`` are the digest of a managed secret, and whose; sorted."""
    wanted = {d.lower() for d in digests}
    return sorted(
        SecretMatch(digest=m.sha256, engine=m.engine, kind=m.kind, name=m.name)
        for m in managed
        if m.sha256 in wanted
    )
