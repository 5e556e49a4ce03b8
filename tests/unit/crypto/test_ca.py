"""The X.509 CA: X.509-SVIDs from CSRs, server certificates, client-certificate checks."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tether.crypto.ca import CertificateAuthority, x5t_s256
from tether.crypto.keyring import KeyRing
from tether.errors import CertificateInvalid, InvalidCsr

from .conftest import T0, TRUST_DOMAIN

SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/agent/bot/i/pod-1"
HOUR = timedelta(hours=1)


def _csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    *,
    asking_for: str = "spiffe://acme.org/agent/root",
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(asking_for)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.fixture
def ca(ring: KeyRing) -> CertificateAuthority:
    return ring.ca


def test_svid_names_only_the_instance_whatever_the_csr_asks(ca: CertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(
        ca.sign_csr(_csr(), spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)
    )
    assert cert.subject == x509.Name([])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical, "RFC 5280: an empty subject needs a critical SAN"
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_ID]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - T0 == HOUR


def test_svid_verifies_as_a_client_certificate(ca: CertificateAuthority) -> None:
    pem = ca.sign_csr(_csr(), spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)
    verified = ca.verify_client_certificate(pem, now=T0 + timedelta(minutes=5))
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert verified.spiffe_id == SPIFFE_ID
    want = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    assert verified.thumbprint == x5t_s256(der) == want


def test_expired_svid_is_refused(ca: CertificateAuthority) -> None:
    pem = ca.sign_csr(_csr(), spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)
    with pytest.raises(CertificateInvalid) as caught:
        ca.verify_client_certificate(pem, now=T0 + HOUR + timedelta(seconds=1))
    assert caught.value.details["reason"] == "untrusted"


def test_certificate_from_another_ca_is_refused(ca: CertificateAuthority) -> None:
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = CertificateAuthority(
        private_key=rogue_key,
        certificate=CertificateAuthority.self_signed(
            rogue_key, trust_domain=TRUST_DOMAIN, now=T0, ttl=timedelta(days=1)
        ),
    )
    pem = rogue.sign_csr(_csr(), spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)
    with pytest.raises(CertificateInvalid):
        ca.verify_client_certificate(pem, now=T0)


def test_server_certificate_is_not_an_agent_identity(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.issue_server_certificate(
        dns_names=["localhost"], ip_addresses=["127.0.0.1"], ttl=HOUR, now=T0
    )
    assert b"PRIVATE KEY" in key_pem
    with pytest.raises(CertificateInvalid) as caught:
        ca.verify_client_certificate(cert_pem, now=T0)
    assert caught.value.details["reason"] == "no_spiffe_id"


def test_svid_never_outlives_the_ca(ca: CertificateAuthority) -> None:
    pem = ca.sign_csr(_csr(), spiffe_id=SPIFFE_ID, ttl=timedelta(days=5000), now=T0)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_csr_with_a_broken_signature_is_refused(ca: CertificateAuthority) -> None:
    # Proof of possession: a CSR whose signature does not match its key.
    good = x509.load_pem_x509_csr(_csr())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidCsr):
        ca.sign_csr(forged, spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)


@pytest.mark.parametrize(
    "csr",
    [b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END", b"x" * 20000],
    ids=["empty", "garbage", "bad_pem", "oversized"],
)
def test_malformed_csr_is_refused(ca: CertificateAuthority, csr: bytes) -> None:
    with pytest.raises(InvalidCsr):
        ca.sign_csr(csr, spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)


def test_weak_csr_keys_are_refused(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidCsr):
        ca.sign_csr(_csr(weak), spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)
    k1 = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(InvalidCsr):
        ca.sign_csr(_csr(k1), spiffe_id=SPIFFE_ID, ttl=HOUR, now=T0)


@pytest.mark.parametrize("data", [b"garbage", b"-----BEGIN CERTIFICATE-----\nAA\n", b"x" * 20000])
def test_unparseable_client_certificate_is_refused(ca: CertificateAuthority, data: bytes) -> None:
    with pytest.raises(CertificateInvalid):
        ca.verify_client_certificate(data, now=T0)
