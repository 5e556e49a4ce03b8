"""Tether's X.509 certificate authority for X.509-SVIDs (SPIFFE X.509-SVID spec) and mTLS.

* The CA is an ECDSA P-256 key with a self-signed certificate (``CA:TRUE``, path length 0, URI
  SAN = the trust domain's SPIFFE ID). Its private key is sealed in the store like every other.
* :meth:`CertificateAuthority.sign_csr` turns an instance's CSR into an X.509-SVID: the CSR's
  own signature must verify (proof of possession), its key must be on the allow-list, and
  everything else in it is ignored — subject and SANs come from Tether. The leaf has an empty
  subject and one critical URI SAN (the instance SPIFFE ID), as RFC 5280 §4.2.1.6 wants when
  the subject is empty; ``cryptography``'s verifier enforces exactly that.
* :meth:`verify_client_certificate` is the RFC 8705 ``tls_client_auth`` check: the chain ends
  at one of our CA certificates and is valid now (``cryptography.x509.verification``), and the
  leaf carries exactly one ``spiffe://`` URI. It returns the ``x5t#S256`` thumbprint that binds
  tokens to the certificate (RFC 8705 §3.1).

Example::

    cert_pem = ca.sign_csr(csr_pem, spiffe_id="spiffe://acme.org/agent/bot/i/i-1",
                           ttl=timedelta(hours=1), now=now)
    verified = ca.verify_client_certificate(cert_pem, now=now)  # .spiffe_id, .thumbprint
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tether.errors import CertificateInvalid, InvalidCsr

__all__ = [
    "CertificateAuthority",
    "VerifiedClientCertificate",
    "certificate_not_after",
    "x5t_s256",
]

MAX_CSR_BYTES = 16 * 1024
MAX_CERT_BYTES = 16 * 1024
#: Certificates are back-dated this much so a peer whose clock is slightly behind accepts them.
BACKDATE = timedelta(seconds=60)


def x5t_s256(der: bytes) -> str:
    """RFC 8705 §3.1: base64url (no padding) SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def certificate_not_after(pem: bytes) -> datetime:
    """When a PEM certificate (one Tether issued) expires."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


@dataclass(frozen=True, slots=True)
class VerifiedClientCertificate:
    spiffe_id: str
    thumbprint: str
    not_after: datetime


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Signing only; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ski(public: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public)


class CertificateAuthority:
    """The current CA (which signs) and every CA certificate still trusted (which verify)."""

    def __init__(
        self,
        *,
        private_key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        trusted: Sequence[x509.Certificate] = (),
    ) -> None:
        self._key = private_key
        self.certificate = certificate
        self.trusted = tuple(dict.fromkeys([certificate, *trusted]))
        self._store = Store(list(self.trusted))
        self._bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.trusted)

    @staticmethod
    def self_signed(
        private_key: ec.EllipticCurvePrivateKey,
        *,
        trust_domain: str,
        now: datetime,
        ttl: timedelta,
    ) -> x509.Certificate:
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tether"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"Tether CA {trust_domain}"),
            ]
        )
        public = private_key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(_ski(public), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
                ),
                critical=False,
            )
            .sign(private_key, hashes.SHA256())
        )

    def bundle_pem(self) -> bytes:
        """Every trusted CA certificate, PEM, newest first."""
        return self._bundle

    def _leaf(
        self,
        builder: x509.CertificateBuilder,
        public: CertificatePublicKeyTypes,
        *,
        now: datetime,
        ttl: timedelta,
        server: bool,
    ) -> x509.Certificate:
        not_after = min(now + ttl, self.certificate.not_valid_after_utc)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usage.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return (
            builder.issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def sign_csr(self, csr_pem: bytes, *, spiffe_id: str, ttl: timedelta, now: datetime) -> bytes:
        """An X.509-SVID (PEM) for ``spiffe_id`` over the CSR's public key."""
        if len(csr_pem) > MAX_CSR_BYTES:
            raise InvalidCsr(f"a CSR is at most {MAX_CSR_BYTES} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidCsr("not a PEM-encoded PKCS#10 certificate request") from exc
        if not csr.is_signature_valid:
            raise InvalidCsr("the CSR's signature does not verify (proof of possession failed)")
        public = csr.public_key()
        _check_leaf_key(public)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=True,
            )
        )
        cert = self._leaf(builder, public, now=now, ttl=ttl, server=False)
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue_server_certificate(
        self,
        *,
        dns_names: Sequence[str],
        ip_addresses: Sequence[str],
        ttl: timedelta,
        now: datetime,
    ) -> tuple[bytes, bytes]:
        """A TLS server certificate and its new P-256 key (both PEM) for ``tether serve --tls``."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tether server")]))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
        )
        cert = self._leaf(builder, key.public_key(), now=now, ttl=ttl, server=True)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def verify_client_certificate(self, data: bytes, *, now: datetime) -> VerifiedClientCertificate:
        """RFC 8705 §2.1.2 with SPIFFE: a leaf our CA signed, valid at ``now``, one SPIFFE ID."""
        if len(data) > MAX_CERT_BYTES:
            raise _refused("too_large", "the client certificate is too large")
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                leaf = x509.load_pem_x509_certificate(data)
            else:
                leaf = x509.load_der_x509_certificate(data)
        except ValueError as exc:
            raise _refused("malformed", "the client certificate cannot be parsed") from exc
        verifier = PolicyBuilder().store(self._store).time(now).build_client_verifier()
        try:
            verifier.verify(leaf, [])
        except VerificationError as exc:
            raise _refused("untrusted", "the client certificate is not trusted") from exc
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise _refused("no_spiffe_id", "the client certificate names no SPIFFE ID") from exc
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1 or not uris[0].startswith("spiffe://"):
            raise _refused("no_spiffe_id", "an X.509-SVID has exactly one spiffe:// URI")
        der = leaf.public_bytes(serialization.Encoding.DER)
        return VerifiedClientCertificate(
            spiffe_id=uris[0], thumbprint=x5t_s256(der), not_after=leaf.not_valid_after_utc
        )


def _refused(reason: str, message: str) -> CertificateInvalid:
    return CertificateInvalid(message, details={"reason": reason})


def _check_leaf_key(public: object) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1"):
            raise InvalidCsr("EC keys must be on P-256 or P-384")
        return
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise InvalidCsr("RSA keys must have at least 2048 bits")
        return
    raise InvalidCsr("the CSR's key type is not accepted (EC P-256/P-384, or RSA ≥ 2048)")
