"""Key material as the store keeps it: public parts in the clear, private parts sealed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["KeyPurpose", "StoredKey"]


class KeyPurpose(StrEnum):
    TOKEN_SIGNING = "token-signing"
    AUDIT_CHECKPOINT = "audit-checkpoint"
    X509_CA = "x509-ca"


@dataclass(frozen=True, kw_only=True)
class StoredKey:
    kid: str
    purpose: KeyPurpose
    alg: str
    public_pem: bytes
    #: PKCS#8 private key sealed with AES-256-GCM under the key-encryption key.
    sealed_private: bytes
    created_at: datetime
    #: The CA certificate, for ``x509-ca`` keys.
    certificate_pem: bytes | None = None
    #: When the key stopped signing (a newer key took over).
    retired_at: datetime | None = None
    #: After this the public key leaves the JWKS: every token it signed has expired.
    publish_until: datetime | None = None
