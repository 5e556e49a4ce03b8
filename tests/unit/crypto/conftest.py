"""Fixtures for the crypto layer: a key ring on a list-backed persistence."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing
from tether.crypto.stored import KeyPurpose, StoredKey

TRUST_DOMAIN = "acme.org"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOKEN_TTL = timedelta(minutes=5)
MAX_AGE = timedelta(days=30)


@dataclass
class ListPersistence:
    """The key ring's persistence contract, as plainly as it can be met."""

    keys: list[StoredKey] = field(default_factory=list)

    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        return [k for k in self.keys if purpose is None or k.purpose is purpose]

    async def save_stored_key(self, key: StoredKey) -> None:
        self.keys = [k for k in self.keys if k.kid != key.kid] + [key]
        self.keys.sort(key=lambda k: k.created_at)


async def open_ring(
    persistence: ListPersistence, kek: KeyEncryptionKey, now: datetime = T0
) -> KeyRing:
    return await KeyRing.open(
        persistence=persistence,
        kek=kek,
        now=now,
        trust_domain=TRUST_DOMAIN,
        signing_key_max_age=MAX_AGE,
        token_max_ttl=TOKEN_TTL,
    )


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey.generate()


@pytest.fixture
def persistence() -> ListPersistence:
    return ListPersistence()


@pytest.fixture
async def ring(persistence: ListPersistence, kek: KeyEncryptionKey) -> KeyRing:
    return await open_ring(persistence, kek)
