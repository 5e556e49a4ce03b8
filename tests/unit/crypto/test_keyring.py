"""The key ring: first start, restart, sealing at rest, rotation and publication."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509

from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.keyring import PUBLISH_MARGIN, KeyRing
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import KeyringError, TokenInvalid

from .conftest import MAX_AGE, T0, TOKEN_TTL, TRUST_DOMAIN, ListPersistence, open_ring

ISSUER = "https://tether.example"


def _claims(now: int, **extra: object) -> dict[str, object]:
    return {
        "iss": ISSUER,
        "sub": f"spiffe://{TRUST_DOMAIN}/agent/bot/i/1",
        "aud": ISSUER,
        "iat": now,
        "exp": now + 300,
        "jti": "j",
        **extra,
    }


def _ts(delta: timedelta = timedelta()) -> int:
    return int((T0 + delta).timestamp())


async def test_first_start_creates_one_key_per_purpose(ring: KeyRing) -> None:
    created = {(c.kind, c.purpose) for c in ring.changes}
    assert created == {("created", p) for p in KeyPurpose}


async def test_restart_reuses_the_keys_and_reports_no_change(
    ring: KeyRing, persistence: ListPersistence, kek: KeyEncryptionKey
) -> None:
    again = await open_ring(persistence, kek, T0 + timedelta(days=1))
    assert again.changes == ()
    assert again.signer.kid == ring.signer.kid
    assert again.audit_signer.kid == ring.audit_signer.kid
    token = ring.signer.sign_jwt(_claims(_ts()))
    assert again.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts()).sub


async def test_private_keys_are_sealed_at_rest(ring: KeyRing, persistence: ListPersistence) -> None:
    for key in persistence.keys:
        assert b"PRIVATE KEY" not in key.sealed_private
        assert b"BEGIN" not in key.sealed_private


async def test_another_kek_cannot_open_the_key_ring(
    ring: KeyRing, persistence: ListPersistence
) -> None:
    with pytest.raises(KeyringError):
        await open_ring(persistence, KeyEncryptionKey.generate(), T0)


async def test_stored_key_with_a_foreign_algorithm_is_refused(
    ring: KeyRing, persistence: ListPersistence, kek: KeyEncryptionKey
) -> None:
    persistence.keys = [
        replace(k, alg="HS256") if k.purpose is KeyPurpose.TOKEN_SIGNING else k
        for k in persistence.keys
    ]
    with pytest.raises(KeyringError):
        await open_ring(persistence, kek, T0)


async def test_old_signing_key_is_rotated_at_start_and_stays_published(
    ring: KeyRing, persistence: ListPersistence, kek: KeyEncryptionKey
) -> None:
    later = T0 + MAX_AGE
    rotated = await open_ring(persistence, kek, later)
    kinds = {(c.kind, c.kid) for c in rotated.changes}
    assert ("retired", ring.signer.kid) in kinds
    assert rotated.signer.kid != ring.signer.kid
    published = [k["kid"] for k in rotated.jwks(now=later)["keys"]]
    assert published == [rotated.signer.kid, ring.signer.kid], "newest first, old kept"
    # A token the old key signed just before rotation still verifies.
    just_before = int(later.timestamp()) - 10
    old_token = ring.signer.sign_jwt(_claims(just_before))
    assert rotated.verify_issued(old_token, audience=ISSUER, issuer=ISSUER, now=just_before + 60)


async def test_retired_key_leaves_the_jwks_once_its_tokens_expired(
    ring: KeyRing, persistence: ListPersistence, kek: KeyEncryptionKey
) -> None:
    token = ring.signer.sign_jwt(_claims(_ts()))
    changes = await ring.rotate_signing_key(now=T0)
    assert [c.kind for c in changes] == ["created", "retired"]
    gone = T0 + TOKEN_TTL + PUBLISH_MARGIN + timedelta(seconds=1)
    kids = [k["kid"] for k in ring.jwks(now=gone)["keys"]]
    assert kids == [ring.signer.kid]
    with pytest.raises(TokenInvalid) as caught:
        ring.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=int(gone.timestamp()))
    assert caught.value.details["reason"] == "unknown_kid"


async def test_rotation_survives_restart(
    ring: KeyRing, persistence: ListPersistence, kek: KeyEncryptionKey
) -> None:
    await ring.rotate_signing_key(now=T0)
    again = await open_ring(persistence, kek, T0 + timedelta(minutes=1))
    assert again.signer.kid == ring.signer.kid
    assert len(again.jwks(now=T0)["keys"]) == 2


async def test_token_for_another_audience_is_refused(ring: KeyRing) -> None:
    token = ring.signer.sign_jwt(_claims(_ts(), aud="https://api.acme.org"))
    with pytest.raises(TokenInvalid) as caught:
        ring.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts())
    assert caught.value.details["reason"] == "wrong_audience"


async def test_token_signed_by_an_unknown_key_is_refused(
    ring: KeyRing, persistence: ListPersistence
) -> None:
    other = await open_ring(ListPersistence(), KeyEncryptionKey.generate())
    token = other.signer.sign_jwt(_claims(_ts()))
    with pytest.raises(TokenInvalid) as caught:
        ring.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts())
    assert caught.value.details["reason"] == "unknown_kid"


async def test_token_living_longer_than_the_ttl_is_refused(ring: KeyRing) -> None:
    token = ring.signer.sign_jwt(_claims(_ts(), exp=_ts() + 3600))
    with pytest.raises(TokenInvalid):
        ring.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts())


async def test_spiffe_bundle_carries_jwt_and_x509_authorities(ring: KeyRing) -> None:
    bundle = ring.spiffe_bundle(now=T0)
    uses = [k["use"] for k in bundle["keys"]]
    assert uses == ["jwt-svid", "x509-svid"]
    x509_key = bundle["keys"][1]
    der = base64.b64decode(x509_key["x5c"][0])
    assert x509.load_der_x509_certificate(der) == ring.ca.certificate
    assert bundle["spiffe_refresh_hint"] > 0


async def test_ca_certificate_names_the_trust_domain(ring: KeyRing) -> None:
    cert = ring.ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TRUST_DOMAIN}"]


async def test_ca_is_replaced_at_half_life_and_old_ca_stays_trusted(
    ring: KeyRing, persistence: ListPersistence, kek: KeyEncryptionKey
) -> None:
    later = T0 + timedelta(days=200)
    renewed = await open_ring(persistence, kek, later)
    assert renewed.ca.certificate != ring.ca.certificate
    assert ring.ca.certificate in renewed.ca.trusted


async def test_audit_signer_signature_verifies_and_detects_change(ring: KeyRing) -> None:
    signature = ring.audit_signer.sign(b"checkpoint")
    assert ring.audit_signer.verify(b"checkpoint", signature)
    assert not ring.audit_signer.verify(b"checkpoinT", signature)
    assert len(ring.audit_signer.public_raw()) == 32


class CountingPersistence(ListPersistence):
    reads: int = 0

    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        self.reads += 1
        return await super().list_stored_keys(purpose)


async def test_refresh_rotates_a_due_key_while_running(
    ring: KeyRing, persistence: ListPersistence
) -> None:
    old = ring.signer.kid
    assert await ring.refresh(now=T0 + timedelta(days=1)) == ()
    assert ring.signer.kid == old, "not due yet"
    changes = await ring.refresh(now=T0 + MAX_AGE)
    assert {(c.kind, c.kid) for c in changes} >= {("retired", old)}
    assert ring.signer.kid != old
    assert [k["kid"] for k in ring.jwks(now=T0 + MAX_AGE)["keys"]] == [ring.signer.kid, old]


async def test_replica_learns_the_key_another_replica_rotated_to(kek: KeyEncryptionKey) -> None:
    shared = CountingPersistence()
    replica_a = await open_ring(shared, kek)
    replica_b = await open_ring(shared, kek)
    await replica_a.rotate_signing_key(now=T0)
    token = replica_a.signer.sign_jwt(_claims(_ts()))
    with pytest.raises(TokenInvalid):
        replica_b.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts())
    later = _ts(timedelta(seconds=11))
    claims = await replica_b.verify_issued_reloading(
        token, audience=ISSUER, issuer=ISSUER, now=later
    )
    assert claims.sub is not None


async def test_made_up_key_ids_cannot_force_a_read_per_request(kek: KeyEncryptionKey) -> None:
    persistence = CountingPersistence()
    ring = await open_ring(persistence, kek)
    other = await open_ring(ListPersistence(), KeyEncryptionKey.generate())
    reads = persistence.reads
    for second in range(20):
        token = other.signer.sign_jwt(_claims(_ts()))
        with pytest.raises(TokenInvalid):
            await ring.verify_issued_reloading(
                token, audience=ISSUER, issuer=ISSUER, now=_ts(timedelta(seconds=second))
            )
    assert persistence.reads - reads <= 2, "at most one read per 10 seconds"


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "dpop+jwt", "secevent+jwt"])
async def test_access_token_signed_by_the_same_key_is_not_an_agent_token(
    ring: KeyRing, typ: str
) -> None:
    """A downstream access token (RFC 9068) is signed with the same key and may even name
    Tether as its audience: its ``typ`` alone keeps it from passing as a JWT-SVID."""
    token = ring.signer.sign_jwt(_claims(_ts()), typ=typ)
    with pytest.raises(TokenInvalid) as caught:
        ring.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts())
    assert caught.value.details["reason"] == "typ"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "JOSE"])
async def test_jwt_svid_typ_values_are_accepted(ring: KeyRing, typ: str) -> None:
    token = ring.signer.sign_jwt(_claims(_ts()), typ=typ)
    assert ring.verify_issued(token, audience=ISSUER, issuer=ISSUER, now=_ts()).sub
