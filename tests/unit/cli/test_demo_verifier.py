"""The demo's resource servers trust only a downstream token Tether minted for them and for a
person: tokens from Tether's real downstream token engine, checked by the servers' verifier
against Tether's JWKS — and the tokens an attacker or a confused agent would present instead."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, KeySet

from tether._internal.clock import FixedClock
from tether.cli.demo._verifier import NO_PERSON, TokenVerifier, ToolError
from tether.credentials.models import EngineConfig, RoleTemplate
from tether.credentials.tokens import open_token_engine
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import KeyRing
from tether.store.memory import MemoryStore

ISSUER = "http://127.0.0.1:8200"
HOLDER = "spiffe://acme.org/agent/assistant/i/pod-1"
ACCOUNTS = "urn:tether-demo:accounts"


def _now() -> datetime:
    """Now, when asked: the tokens live a minute, and a suite may run for an hour."""
    return datetime.now(UTC)


@pytest.fixture
async def keyring() -> KeyRing:
    return await KeyRing.open(persistence=MemoryStore(), kek=KeyEncryptionKey.generate(),
                              now=_now(), trust_domain="acme.org",
                              signing_key_max_age=timedelta(days=30),
                              token_max_ttl=timedelta(seconds=300))  # fmt: skip


async def _minted(keyring: KeyRing, *, audience: str = ACCOUNTS, user: str | None = "alice") -> str:
    """A downstream token, as the gateway injects it: Tether's engine, a lease of 60 s."""
    role = RoleTemplate(name="reader", default_ttl=60, max_ttl=300, options={"audience": audience})
    config = EngineConfig(name="accounts-api", kind="token", settings={}, roles={"reader": role},
                          created_at=_now(), created_by="root", updated_at=_now())  # fmt: skip
    engine = await open_token_engine(config, None, keyring=keyring, clock=FixedClock(_now()),
                                     issuer=ISSUER, reserved_audiences=frozenset({ISSUER}),
                                     max_ttl=300)  # fmt: skip
    expires = _now() + timedelta(seconds=60)
    issued = await engine.create(credential="lea_1", role=role, expires_at=expires,
                                 holder=HOLDER, user=user)  # fmt: skip
    assert issued.secret is not None
    return issued.secret


def _verifier(keyring: KeyRing, audience: str = ACCOUNTS) -> TokenVerifier:
    keys = KeySet.import_key_set(keyring.jwks(now=_now()))  # type: ignore[arg-type]
    # The JWKS address is never reached: an unknown key is refetched from a port no one holds.
    return TokenVerifier(keys=keys, jwks_url="http://127.0.0.1:9/jwks", issuer=ISSUER,
                         audience=audience)  # fmt: skip


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_token_tether_minted_for_alice_names_alice(keyring: KeyRing) -> None:
    token = await _minted(keyring)
    assert await _verifier(keyring).person(_bearer(token)) == "alice"


async def test_an_agent_acting_for_itself_gets_no_persons_data(keyring: KeyRing) -> None:
    token = await _minted(keyring, user=None)  # a lease taken without a person's grant
    with pytest.raises(ToolError) as refused:
        await _verifier(keyring).person(_bearer(token))
    assert str(refused.value) == NO_PERSON


async def test_a_token_minted_for_another_server_is_refused(keyring: KeyRing) -> None:
    token = await _minted(keyring, audience="urn:tether-demo:bank")
    with pytest.raises(ToolError, match="refused: invalid token"):
        await _verifier(keyring).person(_bearer(token))


async def test_the_agents_own_identity_token_is_refused(keyring: KeyRing) -> None:
    # A JWT-SVID passed through (typ JWT), even signed by Tether's key for this audience.
    now = int(_now().timestamp())
    svid = keyring.signer.sign_jwt({"iss": ISSUER, "sub": "alice", "aud": ACCOUNTS,
                                    "iat": now, "exp": now + 60,
                                    "jti": "j", "client_id": "c", "act": {"sub": HOLDER}},
                                   typ="JWT")  # fmt: skip
    with pytest.raises(ToolError, match="its typ is not at\\+jwt"):
        await _verifier(keyring).person(_bearer(svid))


async def test_a_token_whose_subject_was_swapped_for_bob_is_refused(keyring: KeyRing) -> None:
    header, payload, signature = (await _minted(keyring)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    swapped = base64.urlsafe_b64encode(json.dumps(claims | {"sub": "bob"}).encode())
    forged = f"{header}.{swapped.decode().rstrip('=')}.{signature}"
    with pytest.raises(ToolError, match="refused: invalid token"):
        await _verifier(keyring).person(_bearer(forged))


async def test_a_token_signed_by_a_key_not_in_tethers_jwks_is_refused(keyring: KeyRing) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "stranger"})
    claims = {"iss": ISSUER, "sub": "alice", "aud": ACCOUNTS, "iat": int(_now().timestamp()),
              "exp": int(_now().timestamp()) + 60, "jti": "j", "client_id": "c",
              "act": {"sub": HOLDER}}  # fmt: skip
    token = jose_jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "stranger"}, claims, stranger)
    with pytest.raises(ToolError, match="not in Tether's JWKS"):
        await _verifier(keyring).person(_bearer(token))


async def test_no_token_at_all_is_refused(keyring: KeyRing) -> None:
    with pytest.raises(ToolError, match="no credential"):
        await _verifier(keyring).person({})
