"""Fixtures for the identity domain: the reference in-memory store and a real audit sink."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.identity.access import Actor
from tether.identity.models import Role
from tether.identity.registry import Registry
from tether.store.memory import MemoryStore

TRUST_DOMAIN = "acme.org"


def b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def ec_public_jwk(key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y)}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def registry(store: MemoryStore, clock: FixedClock) -> AsyncIterator[Registry]:
    audit = await open_log(store, clock)
    yield Registry(store=store, audit=audit, clock=clock, trust_domain=TRUST_DOMAIN)
    await audit.close()


@pytest.fixture
def actor() -> Callable[..., Actor]:
    def make(role: Role = Role.SECURITY_ADMIN, name: str = "sam") -> Actor:
        return Actor.operator(token_id=f"opt_{name}", name=name, role=role)

    return make
