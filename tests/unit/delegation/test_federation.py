"""External providers (tether.delegation.federation): discovery, the bounded key refresh,
token checks, and who a provider's account becomes here."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from joserfc.jwk import ECKey

from tether._internal.clock import FixedClock
from tether.audit.log import AuditLog
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import Signer
from tether.delegation.federation import (
    MIN_REFRESH,
    ExternalProvider,
    Federation,
    ProviderKeys,
    reachable,
)
from tether.delegation.models import UserState
from tether.errors import Unauthenticated
from tether.store.memory import MemoryStore

ISSUER = "https://idp.corp.example"
PROVIDER = ExternalProvider(name="corp", issuer=ISSUER, audience="tether-a")


class Idp:
    """A provider's published documents, counting every read."""

    def __init__(self) -> None:
        pair = generate_agent_key()
        self.jwk = pair.public_jwk
        self.signer = Signer(ECKey.import_key(pair.private_pem), kid=self.jwk["kid"])
        self.reads: list[str] = []
        self.discovery_issuer = ISSUER
        self.down = False

    async def fetch(self, url: str) -> Mapping[str, Any]:
        if self.down:
            raise Unauthenticated("the external provider cannot be read")
        self.reads.append(url)
        await asyncio.sleep(0)
        if url.endswith("/.well-known/openid-configuration"):
            return {"issuer": self.discovery_issuer, "jwks_uri": f"{ISSUER}/jwks"}
        return {"keys": [self.jwk]}

    def token(self, clock: FixedClock, **claims: Any) -> str:
        now = clock.timestamp()
        base = {"iss": ISSUER, "sub": "u-123", "aud": "tether-a", "iat": now, "exp": now + 300,
                "preferred_username": "Carol"}  # fmt: skip
        return self.signer.sign_jwt(base | claims)


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Idp:
    return Idp()


@pytest.fixture
def federation(idp: Idp, store: MemoryStore, audit: AuditLog, clock: FixedClock) -> Federation:
    return Federation(providers=[PROVIDER], fetch=idp.fetch, users=store, audit=audit, clock=clock)


async def test_unknown_key_ids_cause_one_read_however_many_ask(idp: Idp) -> None:
    ticks = Ticks()
    keys = ProviderKeys(PROVIDER, idp.fetch, monotonic=ticks)
    found = await asyncio.gather(*(keys.key(f"made-up-{i}") for i in range(100)))
    assert found == [None] * 100
    assert keys.reads == 1
    assert await keys.key("another-made-up") is None
    assert keys.reads == 1, "a second read inside the refresh interval"
    ticks.now += MIN_REFRESH
    assert await keys.key("yet-another") is None
    assert keys.reads == 2


async def test_a_known_key_is_served_from_the_cache(idp: Idp) -> None:
    keys = ProviderKeys(PROVIDER, idp.fetch, monotonic=Ticks())
    assert await keys.key(idp.jwk["kid"]) is not None
    assert await keys.key(idp.jwk["kid"]) is not None
    assert keys.reads == 1


async def test_discovery_naming_another_issuer_is_refused(idp: Idp) -> None:
    idp.discovery_issuer = "https://evil.example"
    keys = ProviderKeys(PROVIDER, idp.fetch, monotonic=Ticks())
    with pytest.raises(Unauthenticated, match="another issuer"):
        await keys.key(idp.jwk["kid"])


async def test_a_provider_account_becomes_a_user_named_after_its_sub_once(
    federation: Federation, idp: Idp, clock: FixedClock, store: MemoryStore
) -> None:
    """Named after ``sub`` (never reassigned), not ``preferred_username`` (chosen by the
    person, so it could be chosen to look like someone else)."""
    user, claims = await federation.verify(idp.token(clock))
    assert user.name == "u-123@corp"
    assert user.display_name == "Carol"
    assert (user.issuer, user.subject) == (ISSUER, "u-123")
    assert claims.sub == "u-123"
    renamed, _ = await federation.verify(idp.token(clock, preferred_username="carol.new"))
    assert renamed.id == user.id, "a renamed account stays the same user"
    assert len(await store.list_users()) == 1


@pytest.mark.parametrize(
    "claims",
    [{"aud": "someone-else"}, {"iss": "https://other.example"}, {"exp": 0}, {"exp": None}],
    ids=["wrong-audience", "other-issuer", "expired", "no-expiry"],
)
async def test_a_token_failing_a_check_is_refused(
    federation: Federation, idp: Idp, clock: FixedClock, claims: dict[str, Any]
) -> None:
    assert await federation.verify(idp.token(clock)), "the unaltered token is accepted"
    token = idp.token(clock, **claims)
    if claims.get("exp", 1) is None:
        token = idp.signer.sign_jwt(
            {k: v for k, v in json.loads(_payload(token)).items() if k != "exp"}
        )
    with pytest.raises(Unauthenticated, match=r"not a valid token|not the provider"):
        await federation.verify(token)


async def test_a_token_naming_an_actor_is_the_providers_delegation_not_its_person(
    federation: Federation, idp: Idp, clock: FixedClock
) -> None:
    token = idp.token(clock, act={"sub": "some-service"})
    with pytest.raises(Unauthenticated, match="delegated"):
        await federation.verify(token)


async def test_a_token_living_longer_than_an_hour_is_refused(
    federation: Federation, idp: Idp, clock: FixedClock
) -> None:
    token = idp.token(clock, exp=clock.timestamp() + 2 * 3600)
    with pytest.raises(Unauthenticated):
        await federation.verify(token)


async def test_a_local_users_name_cannot_be_taken_by_a_provider_account(
    federation: Federation, idp: Idp, clock: FixedClock, store: MemoryStore
) -> None:
    local, _ = await federation.verify(idp.token(clock))  # u-123@corp now exists
    other = idp.token(clock, sub="U-123")  # sanitised to the same name, another person
    with pytest.raises(Unauthenticated, match="taken"):
        await federation.verify(other)
    assert (await store.get_user("u-123@corp")) == local


def test_documents_are_read_over_https_or_from_a_loopback_provider_only() -> None:
    assert reachable("https://idp.example/jwks", issuer="https://idp.example")
    assert not reachable("http://idp.example/jwks", issuer="https://idp.example")
    assert not reachable("http://127.0.0.1:8080/admin", issuer="https://idp.example")
    assert reachable("http://127.0.0.1:9000/jwks", issuer="http://127.0.0.1:9000")


async def test_an_unsigned_token_is_refused(
    federation: Federation, idp: Idp, clock: FixedClock
) -> None:
    signed = idp.token(clock)
    head = base64.urlsafe_b64encode(b'{"alg":"none","kid":"' + idp.jwk["kid"].encode() + b'"}')
    unsigned = head.rstrip(b"=").decode() + "." + signed.split(".")[1] + "."
    with pytest.raises(Unauthenticated):
        await federation.verify(unsigned)


async def test_a_disabled_user_is_refused_whatever_the_provider_says(
    federation: Federation, idp: Idp, clock: FixedClock, store: MemoryStore
) -> None:
    user, _ = await federation.verify(idp.token(clock))
    disabled = replace(user, state=UserState.DISABLED, version=user.version + 1)
    await store.update_user(disabled, expected_version=user.version)
    with pytest.raises(Unauthenticated, match="disabled"):
        await federation.verify(idp.token(clock))


def test_knows_routes_by_the_claimed_issuer_only(
    federation: Federation, idp: Idp, clock: FixedClock
) -> None:
    assert federation.knows(idp.token(clock))
    assert not federation.knows(idp.token(clock, iss="https://other.example"))
    assert not federation.knows("not-a-token")


def _payload(token: str) -> bytes:
    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def test_a_known_key_outlives_a_provider_outage(idp: Idp) -> None:
    ticks = Ticks()
    keys = ProviderKeys(PROVIDER, idp.fetch, monotonic=ticks)
    assert await keys.key(idp.jwk["kid"]) is not None
    idp.down = True
    ticks.now += 3600  # the cached set is old: a read is due, and fails
    assert await keys.key(idp.jwk["kid"]) is not None
    assert await keys.key("a-key-never-seen") is None  # and no second read inside 30 s
    ticks.now += MIN_REFRESH
    with pytest.raises(Unauthenticated):
        await keys.key("a-key-never-seen")
