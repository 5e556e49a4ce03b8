"""The downstream token engine (tether.credentials.tokens): RFC 9068 JWTs an internal API
verifies with Tether's JWKS, which Tether itself never takes for an agent's JWT-SVID."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tether._internal.clock import FixedClock
from tether.credentials.models import EngineConfig, RoleTemplate
from tether.credentials.tokens import (
    TOKEN_TYPE,
    DownstreamTokenEngine,
    open_token_engine,
    validate_token_settings,
)
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing
from tether.errors import InvalidInput, TokenInvalid
from tether.store.memory import MemoryStore

NOW = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
ISSUER = "https://tether.acme.org"
HOLDER = "spiffe://acme.org/agent/faq-bot/i/i-1"
ORDERS = "https://orders.internal.acme.org"
RESERVED = frozenset({ISSUER, f"{ISSUER}/oauth2/token", "https://api.acme.org"})
MAX_TTL = 300


def _role(name: str = "orders", **options: object) -> RoleTemplate:
    return RoleTemplate(
        name=name, default_ttl=60, max_ttl=MAX_TTL, options={"audience": ORDERS, **options}
    )


def _config(*roles: RoleTemplate) -> EngineConfig:
    templates = roles or (_role(),)
    return EngineConfig(
        name="orders-api",
        kind="token",
        settings={},
        roles={r.name: r for r in templates},
        created_at=NOW,
        created_by="root",
        updated_at=NOW,
    )


@pytest.fixture
async def keyring() -> KeyRing:
    return await KeyRing.open(
        persistence=MemoryStore(),
        kek=KeyEncryptionKey.generate(),
        now=NOW,
        trust_domain="acme.org",
        signing_key_max_age=timedelta(days=30),
        token_max_ttl=timedelta(seconds=MAX_TTL),
    )


async def _open(
    keyring: KeyRing, *roles: RoleTemplate, secret: str | None = None
) -> DownstreamTokenEngine:
    return await open_token_engine(
        _config(*roles),
        secret,
        keyring=keyring,
        clock=FixedClock(NOW),
        issuer=ISSUER,
        reserved_audiences=RESERVED,
        max_ttl=MAX_TTL,
    )


@pytest.fixture
async def engine(keyring: KeyRing) -> AsyncIterator[DownstreamTokenEngine]:
    opened = await _open(keyring, _role(), _role("orders-rw", scope="orders:read orders:write"))
    yield opened
    await opened.close()


def _verified(keyring: KeyRing, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, as a resource server gets them: signature checked with the JWKS."""
    keys = KeySet.import_key_set(keyring.jwks(now=NOW))  # type: ignore[arg-type]
    decoded = jose_jwt.decode(token, keys, algorithms=["ES256"])
    return dict(decoded.header), dict(decoded.claims)


async def test_downstream_token_verifies_with_the_jwks_and_names_lease_and_holder(
    keyring: KeyRing, engine: DownstreamTokenEngine
) -> None:
    expires = NOW + timedelta(seconds=60)
    issued = await engine.create(
        credential="lea_1", role=_role(), expires_at=expires, holder=HOLDER
    )
    assert issued.credential == "lea_1"
    assert issued.secret is not None
    header, claims = _verified(keyring, issued.secret)
    assert header == {"alg": "ES256", "kid": keyring.signer.kid, "typ": TOKEN_TYPE}
    assert claims == {
        "iss": ISSUER,
        "sub": HOLDER,
        "client_id": "spiffe://acme.org/agent/faq-bot",
        "aud": ORDERS,
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": "lea_1",
    }
    assert claims["exp"] <= expires.timestamp()
    assert dict(issued.details) == {"token_type": "Bearer", "audience": ORDERS, "scope": None}


async def test_a_token_taken_for_a_person_names_the_person_as_subject_and_the_agent_as_actor(
    keyring: KeyRing, engine: DownstreamTokenEngine
) -> None:
    # The resource server serves alice's data to the agent acting for her, and only hers: it
    # must learn who the person is from a token it can verify, never from the agent's word.
    issued = await engine.create(credential="lea_3", role=_role(),
                                 expires_at=NOW + timedelta(seconds=60), holder=HOLDER,
                                 user="alice")  # fmt: skip
    assert issued.secret is not None
    claims = _verified(keyring, issued.secret)[1]
    assert claims["sub"] == "alice"
    assert claims["act"] == {"sub": HOLDER}
    assert claims["client_id"] == "spiffe://acme.org/agent/faq-bot"


async def test_downstream_token_carries_the_role_scope(
    keyring: KeyRing, engine: DownstreamTokenEngine
) -> None:
    role = _role("orders-rw", scope="orders:read orders:write")
    issued = await engine.create(
        credential="lea_2", role=role, expires_at=NOW + timedelta(seconds=60), holder=HOLDER
    )
    assert issued.secret is not None
    assert _verified(keyring, issued.secret)[1]["scope"] == "orders:read orders:write"


async def test_downstream_token_is_not_a_tether_agent_token(
    keyring: KeyRing, engine: DownstreamTokenEngine
) -> None:
    issued = await engine.create(
        credential="lea_1", role=_role(), expires_at=NOW + timedelta(seconds=60), holder=HOLDER
    )
    assert issued.secret is not None
    with pytest.raises(TokenInvalid) as refused:
        keyring.verify_issued(
            issued.secret, audience=ISSUER, issuer=ISSUER, now=int(NOW.timestamp())
        )
    # Refused for its type first (at+jwt); its audience would refuse it too.
    assert refused.value.details["reason"] == "typ"


@pytest.mark.parametrize(
    "audience",
    [ISSUER, f"{ISSUER}/oauth2/token", f"{ISSUER}/v1/leases", "https://api.acme.org"],
)
async def test_downstream_token_role_may_not_name_an_audience_of_tether_tokens(
    keyring: KeyRing, audience: str
) -> None:
    with pytest.raises(InvalidInput, match="may not be Tether"):
        await _open(keyring, _role(audience=audience))


@pytest.mark.parametrize(
    ("role", "match"),
    [
        (RoleTemplate(name="orders", max_ttl=MAX_TTL), "options.audience"),
        (_role(audience=""), "options.audience"),
        (_role(audience="two words"), "options.audience"),
        (_role(audience="x" * 1025), "options.audience"),
        (_role(audience=["a", "b"]), "options.audience"),
        (_role(scope="a  b"), "options.scope"),
        (_role(scope='a "b"'), "options.scope"),
        (_role(scope=7), "options.scope"),
        (_role(secret="x"), "unknown options secret"),
        (replace(_role(), group="readers"), "takes no group"),
        (replace(_role(), max_ttl=MAX_TTL + 1), "max_ttl is at most 300"),
    ],
)
async def test_downstream_token_open_refuses_a_role_it_cannot_serve(
    keyring: KeyRing, role: RoleTemplate, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        await _open(keyring, role)


async def test_downstream_token_engine_takes_no_secret_and_no_settings(keyring: KeyRing) -> None:
    with pytest.raises(InvalidInput, match="takes no secret"):
        await _open(keyring, _role(), secret="admin")
    assert validate_token_settings({}) == {}
    with pytest.raises(InvalidInput, match="unknown token settings: audience"):
        validate_token_settings({"audience": ORDERS})


async def test_downstream_token_scope_is_deduplicated_in_order(keyring: KeyRing) -> None:
    role = _role(scope="b a b")
    engine = await _open(keyring, role)
    issued = await engine.create(
        credential="lea_1", role=role, expires_at=NOW + timedelta(seconds=60), holder=HOLDER
    )
    assert issued.details["scope"] == "b a"


@pytest.mark.parametrize(
    "holder", ["spiffe://acme.org/agent/faq-bot", "unknown", "spiffe://acme.org/other/x"]
)
async def test_downstream_token_is_only_for_an_agent_instance(
    engine: DownstreamTokenEngine, holder: str
) -> None:
    with pytest.raises(InvalidInput):
        await engine.create(
            credential="lea_1", role=_role(), expires_at=NOW + timedelta(seconds=60), holder=holder
        )


async def test_downstream_token_lease_cannot_be_extended(engine: DownstreamTokenEngine) -> None:
    with pytest.raises(InvalidInput, match="take a new lease"):
        await engine.extend(credential="lea_1", role=_role(), expires_at=NOW)


async def test_downstream_token_revoke_succeeds_with_nothing_to_remove(
    engine: DownstreamTokenEngine,
) -> None:
    await engine.revoke(credential="lea_1", role=_role())
    assert await engine.managed() == set()
    assert await engine.unmanaged_logins() == []
    assert engine.credential_name("lea_1") == "lea_1"


async def test_downstream_token_for_a_role_of_another_engine_is_refused(
    engine: DownstreamTokenEngine,
) -> None:
    with pytest.raises(InvalidInput, match="not a role of this engine"):
        await engine.create(
            credential="lea_1",
            role=_role("billing"),
            expires_at=NOW + timedelta(seconds=60),
            holder=HOLDER,
        )
