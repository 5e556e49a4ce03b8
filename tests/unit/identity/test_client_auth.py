"""Client authentication on a fixed clock: the edges of time that tests on a wall clock miss."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.audit import open_log
from tether._internal.clock import FixedClock
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.errors import InvalidClient
from tether.identity.access import Actor
from tether.identity.client_auth import ASSERTION_TYPE, ClientAuthenticator
from tether.identity.models import Declarations
from tether.identity.registry import Registry
from tether.store.memory import MemoryStore

from .conftest import TRUST_DOMAIN

AUDIENCE = "https://tether.example/oauth2/token"
LEEWAY = 30
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


async def test_replay_is_refused_in_the_last_second_an_assertion_is_accepted() -> None:
    clock = FixedClock(T0)
    store = MemoryStore(clock=clock)
    audit = await open_log(store)
    registry = Registry(store=store, audit=audit, clock=clock, trust_domain=TRUST_DOMAIN)
    root = Actor.system("test")
    agent = await registry.register(
        actor=root, name="faq-bot", owners=["alice"], description="", declarations=Declarations()
    )
    pair = generate_agent_key()
    await registry.add_key("faq-bot", pair.public_jwk, actor=root)
    auth = ClientAuthenticator(
        store=store,
        audit=audit,
        clock=clock,
        trust_domain=TRUST_DOMAIN,
        audiences=frozenset({AUDIENCE}),
        leeway=LEEWAY,
    )
    assertion = sign_client_assertion(
        pair.private_pem,
        client_id=agent.spiffe_id,
        audience=AUDIENCE,
        now=clock.timestamp(),
        lifetime=60,
    )

    async def present() -> None:
        await auth.private_key_jwt(
            client_id=None, assertion_type=ASSERTION_TYPE, assertion=assertion, instance_id="i-1"
        )

    await present()
    # exp + leeway is checked in whole seconds: at +90.1 s the assertion still verifies.
    clock.advance(60 + LEEWAY + 0.1)
    with pytest.raises(InvalidClient):
        await present()
    records = await store.list_audit(limit=100, type_prefix="client.")
    assert [r.details["reason"] for _, r in records] == ["assertion_replayed"]
