"""The key ring: every private key Tether holds, sealed at rest, rotated on schedule.

Three purposes, each with an algorithm fixed in code (:data:`PURPOSE_ALGORITHMS`):

* ``token-signing`` — ES256 keys that sign JWT-SVIDs and, later, access tokens. The newest key
  signs; when it is older than ``signing_key_max_age`` a new one takes over at the next start
  (or on :meth:`KeyRing.rotate_signing_key`). A retired key stays in the JWKS until every token
  it could have signed has expired (``publish_until`` = retirement + the longest token TTL +
  clock-skew margin), then leaves it.
* ``audit-checkpoint`` — an Ed25519 key for signed audit checkpoints. Never rotated
  automatically: old checkpoints must stay verifiable.
* ``x509-ca`` — the ECDSA P-256 CA that signs X.509-SVIDs. Its certificate lives a year; a new
  CA takes over at half-life and the old certificate stays in the trust bundle until it expires.

Private keys are PKCS#8, sealed with the key-encryption key (:mod:`tether.crypto.kek`) with the
purpose and key id as associated data; only the current key of each purpose is ever unsealed.
Every key created or retired is reported in :attr:`KeyRing.changes` for the audit log.

Example::

    ring = await KeyRing.open(persistence=store, kek=kek, now=now, trust_domain="acme.org",
                              signing_key_max_age=timedelta(days=30),
                              token_max_ttl=timedelta(minutes=5))
    token = ring.signer.sign_jwt({"sub": "...", "exp": ...})
    claims = ring.verify_issued(token, audience=issuer, issuer=issuer, now=ts)
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import ECKey, OKPKey

from tether.crypto.ca import CertificateAuthority
from tether.crypto.jwt import TOKEN_ALGORITHM, Signer, UnverifiedToken, VerifiedClaims, verify_jwt
from tether.crypto.kek import KeyEncryptionKey
from tether.crypto.stored import KeyPurpose, StoredKey
from tether.errors import KeyringError, TokenInvalid

__all__ = [
    "PURPOSE_ALGORITHMS",
    "AuditSigner",
    "KeyRing",
    "KeyRingChange",
    "KeyRingPersistence",
]

PURPOSE_ALGORITHMS = {
    KeyPurpose.TOKEN_SIGNING: TOKEN_ALGORITHM,
    KeyPurpose.AUDIT_CHECKPOINT: "Ed25519",
    KeyPurpose.X509_CA: "ES256",
}
CA_LIFETIME = timedelta(days=365)
CA_ROTATE_AFTER = timedelta(days=182)
#: Margin added to the token TTL before a retired key leaves the JWKS (clock skew, caches).
PUBLISH_MARGIN = timedelta(minutes=10)
#: An unknown key id makes the ring read its keys again at most this often.
RELOAD_INTERVAL = timedelta(seconds=10)
#: What SPIFFE bundle consumers should wait before fetching the bundle again (seconds).
SPIFFE_REFRESH_HINT = 300


#: The ``typ`` header values a JWT-SVID may carry (SPIFFE JWT-SVID §2).
_SVID_TYPES = frozenset({"JWT", "JOSE"})
#: RFC 9068 §2.1: the ``typ`` of a JWT access token (users' and delegated tokens).
ACCESS_TOKEN_TYPE = "at+jwt"
#: What each kind of token Tether verifies must say in its ``typ`` header (RFC 8725 §3.11:
#: explicit typing, so one kind of token is never accepted as another).
_TYPES = {"svid": _SVID_TYPES, "access": frozenset({ACCESS_TOKEN_TYPE.upper()})}


class KeyRingPersistence(Protocol):
    async def list_stored_keys(self, purpose: KeyPurpose | None = None) -> list[StoredKey]:
        """Keys oldest first."""
        ...

    async def save_stored_key(self, key: StoredKey) -> None:
        """Insert a new key or replace the one with the same kid."""
        ...


@dataclass(frozen=True, slots=True)
class KeyRingChange:
    kind: Literal["created", "retired"]
    purpose: KeyPurpose
    kid: str


class AuditSigner:
    """Signs audit checkpoints with the Ed25519 key; the public key verifies them anywhere."""

    __slots__ = ("_private", "kid", "public_key")

    alg = "Ed25519"

    def __init__(self, private: ed25519.Ed25519PrivateKey, *, kid: str) -> None:
        self._private = private
        self.kid = kid
        self.public_key = private.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def verify(self, data: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def public_raw(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def _aad(purpose: KeyPurpose, kid: str) -> bytes:
    return f"tether-key:{purpose}:{kid}".encode()


def _kid(public_pem: bytes, purpose: KeyPurpose) -> str:
    key = OKPKey if purpose is KeyPurpose.AUDIT_CHECKPOINT else ECKey
    return key.import_key(public_pem).thumbprint()


def _new_key(
    purpose: KeyPurpose, *, kek: KeyEncryptionKey, now: datetime, trust_domain: str
) -> StoredKey:
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if purpose is KeyPurpose.AUDIT_CHECKPOINT:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kid = _kid(public_pem, purpose)
    certificate_pem = None
    if purpose is KeyPurpose.X509_CA:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        cert = CertificateAuthority.self_signed(
            private, trust_domain=trust_domain, now=now, ttl=CA_LIFETIME
        )
        certificate_pem = cert.public_bytes(serialization.Encoding.PEM)
    return StoredKey(
        kid=kid,
        purpose=purpose,
        alg=PURPOSE_ALGORITHMS[purpose],
        public_pem=public_pem,
        sealed_private=kek.seal(private_pem, aad=_aad(purpose, kid)),
        created_at=now,
        certificate_pem=certificate_pem,
    )


def _unseal(key: StoredKey, kek: KeyEncryptionKey) -> Any:
    pem = kek.open(key.sealed_private, aad=_aad(key.purpose, key.kid))
    private = serialization.load_pem_private_key(pem, password=None)
    want = ed25519.Ed25519PrivateKey if key.purpose is KeyPurpose.AUDIT_CHECKPOINT else None
    if want is not None and not isinstance(private, want):
        raise KeyringError(f"stored key {key.kid} is not an Ed25519 key")
    if want is None and not isinstance(private, ec.EllipticCurvePrivateKey):
        raise KeyringError(f"stored key {key.kid} is not an EC key")
    return private


def _published(key: StoredKey, now: datetime) -> bool:
    return key.publish_until is None or key.publish_until > now


class KeyRing:
    signer: Signer
    audit_signer: AuditSigner
    ca: CertificateAuthority

    def __init__(
        self,
        *,
        persistence: KeyRingPersistence,
        kek: KeyEncryptionKey,
        trust_domain: str,
        signing_key_max_age: timedelta,
        token_max_ttl: timedelta,
    ) -> None:
        """An empty ring; :meth:`open` is how one is made."""
        self._persistence = persistence
        self._kek = kek
        self._trust_domain = trust_domain
        self._token_max_ttl = token_max_ttl
        self._max_age = {
            KeyPurpose.TOKEN_SIGNING: signing_key_max_age,
            KeyPurpose.AUDIT_CHECKPOINT: None,
            KeyPurpose.X509_CA: CA_ROTATE_AFTER,
        }
        self._keys: tuple[StoredKey, ...] = ()
        self._loaded_at: datetime | None = None
        #: What the last :meth:`open` or :meth:`refresh` created or retired.
        self.changes: tuple[KeyRingChange, ...] = ()

    @classmethod
    async def open(
        cls,
        *,
        persistence: KeyRingPersistence,
        kek: KeyEncryptionKey,
        now: datetime,
        trust_domain: str,
        signing_key_max_age: timedelta,
        token_max_ttl: timedelta,
    ) -> KeyRing:
        """Load the keys, creating the first ones or rotating the ones past their age."""
        ring = cls(
            persistence=persistence,
            kek=kek,
            trust_domain=trust_domain,
            signing_key_max_age=signing_key_max_age,
            token_max_ttl=token_max_ttl,
        )
        await ring.refresh(now=now)
        return ring

    async def refresh(self, *, now: datetime, rotate: bool = True) -> tuple[KeyRingChange, ...]:
        """Read the keys again (another replica may have rotated), rotate what is past its
        age (unless ``rotate`` is false), and sign with the newest. Run at start and then
        periodically."""
        keys = await self._persistence.list_stored_keys()
        changes: list[KeyRingChange] = []
        for purpose, limit in self._max_age.items() if rotate else ():
            live = [k for k in keys if k.purpose is purpose and k.retired_at is None]
            if live and (limit is None or now - live[-1].created_at < limit):
                continue
            new, retired = await self._replace(
                persistence=self._persistence,
                kek=self._kek,
                purpose=purpose,
                live=live,
                now=now,
                trust_domain=self._trust_domain,
                token_max_ttl=self._token_max_ttl,
            )
            changes += [KeyRingChange("created", purpose, new.kid)]
            changes += [KeyRingChange("retired", purpose, k.kid) for k in retired]
            gone = {k.kid for k in retired}
            keys = [k for k in keys if k.kid not in gone] + retired + [new]
        keys.sort(key=lambda k: k.created_at)
        self._load(keys)
        self._loaded_at = now
        self.changes = tuple(changes)
        return self.changes

    @staticmethod
    async def _replace(
        *,
        persistence: KeyRingPersistence,
        kek: KeyEncryptionKey,
        purpose: KeyPurpose,
        live: Sequence[StoredKey],
        now: datetime,
        trust_domain: str,
        token_max_ttl: timedelta,
    ) -> tuple[StoredKey, list[StoredKey]]:
        # The new key is saved before the old ones retire: a crash in between leaves two live
        # keys (both published), never none.
        new = _new_key(purpose, kek=kek, now=now, trust_domain=trust_domain)
        await persistence.save_stored_key(new)
        retired = []
        for old in live:
            if purpose is KeyPurpose.X509_CA and old.certificate_pem:
                until = x509.load_pem_x509_certificate(old.certificate_pem).not_valid_after_utc
            elif purpose is KeyPurpose.AUDIT_CHECKPOINT:
                until = None
            else:
                until = now + token_max_ttl + PUBLISH_MARGIN
            gone = replace(old, retired_at=now, publish_until=until)
            await persistence.save_stored_key(gone)
            retired.append(gone)
        return new, retired

    def _load(self, keys: Sequence[StoredKey]) -> None:
        self._keys = tuple(keys)
        by_purpose: dict[KeyPurpose, list[StoredKey]] = {p: [] for p in KeyPurpose}
        for key in self._keys:
            if key.alg != PURPOSE_ALGORITHMS[key.purpose]:
                raise KeyringError(f"stored key {key.kid} has an algorithm not allowed here")
            by_purpose[key.purpose].append(key)
        current = {}
        for purpose, group in by_purpose.items():
            live = [k for k in group if k.retired_at is None]
            if not live:
                raise KeyringError(f"no current {purpose} key")
            current[purpose] = live[-1]
        signing = current[KeyPurpose.TOKEN_SIGNING]
        self.signer = Signer(
            ECKey.import_key(_unseal(signing, self._kek)), kid=signing.kid, alg=TOKEN_ALGORITHM
        )
        audit = current[KeyPurpose.AUDIT_CHECKPOINT]
        self.audit_signer = AuditSigner(_unseal(audit, self._kek), kid=audit.kid)
        ca_key = current[KeyPurpose.X509_CA]
        self._ca_keys = by_purpose[KeyPurpose.X509_CA]
        self._ca_current = ca_key
        self.ca = self._build_ca(None)
        self._verifying = {
            k.kid: (ECKey.import_key(k.public_pem), k) for k in by_purpose[KeyPurpose.TOKEN_SIGNING]
        }

    def _build_ca(self, now: datetime | None) -> CertificateAuthority:
        current = self._ca_current
        if current.certificate_pem is None:
            raise KeyringError(f"CA key {current.kid} has no certificate")
        others = [
            x509.load_pem_x509_certificate(k.certificate_pem)
            for k in reversed(self._ca_keys)
            if k is not current and k.certificate_pem and (now is None or _published(k, now))
        ]
        return CertificateAuthority(
            private_key=_unseal(current, self._kek),
            certificate=x509.load_pem_x509_certificate(current.certificate_pem),
            trusted=others,
        )

    # -- publishing ---------------------------------------------------------------------

    def _signing_jwks(self, now: datetime, use: str) -> list[dict[str, Any]]:
        keys = []
        for kid, (key, stored) in reversed(self._verifying.items()):
            if _published(stored, now):
                public = dict(key.as_dict(private=False))
                keys.append({**public, "kid": kid, "alg": TOKEN_ALGORITHM, "use": use})
        return keys

    def jwks(self, *, now: datetime) -> dict[str, Any]:
        """RFC 7517 JWK Set of every key whose tokens may still be live, newest first."""
        return {"keys": self._signing_jwks(now, "sig")}

    def spiffe_bundle(self, *, now: datetime) -> dict[str, Any]:
        """The SPIFFE bundle (Trust Domain and Bundle spec §4): JWT and X.509 authorities."""
        keys = self._signing_jwks(now, "jwt-svid")
        for cert in self.ca.trusted:
            if cert.not_valid_after_utc <= now:
                continue
            public = cert.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            der = cert.public_bytes(serialization.Encoding.DER)
            jwk = dict(ECKey.import_key(public).as_dict(private=False))
            keys.append({**jwk, "use": "x509-svid", "x5c": [base64.b64encode(der).decode()]})
        return {"keys": keys, "spiffe_refresh_hint": SPIFFE_REFRESH_HINT}

    # -- verifying what we issued --------------------------------------------------------

    def verification_key(self, kid: object, *, now: datetime) -> ECKey | None:
        entry = self._verifying.get(kid) if isinstance(kid, str) else None
        if entry is None or not _published(entry[1], now):
            return None
        return entry[0]

    def verify_issued(
        self,
        token: str,
        *,
        audience: str | Collection[str],
        issuer: str,
        now: int,
        leeway: int = 30,
        kind: Literal["svid", "access"] = "svid",
    ) -> VerifiedClaims:
        """A token this server signed, still valid, for ``audience`` (or one of several);
        else ``TokenInvalid``.

        ``kind`` ``svid``: a JWT-SVID, whose ``typ``, if present, is ``JWT`` or ``JOSE``
        (SPIFFE JWT-SVID §2) — an access token this server also signs (``at+jwt``) is never
        one, whatever its audience. ``kind`` ``access``: a user's or a delegated access token,
        whose ``typ`` must be ``at+jwt`` (RFC 9068 §2.1)."""
        parsed = UnverifiedToken.parse(token)
        typ = parsed.header.get("typ")
        allowed = _TYPES[kind]
        if (typ is not None or kind != "svid") and str(typ).upper() not in allowed:
            raise TokenInvalid(f"the token is not a {kind} token", details={"reason": "typ"})
        moment = datetime.fromtimestamp(now, tz=UTC)
        key = self.verification_key(parsed.header.get("kid"), now=moment)
        if key is None:
            raise TokenInvalid("the token's key is unknown", details={"reason": "unknown_kid"})
        return verify_jwt(
            parsed,
            key=key,
            algorithms=(TOKEN_ALGORITHM,),
            now=now,
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            max_lifetime=int(self._token_max_ttl.total_seconds()),
            require=("exp", "iat", "iss", "sub", "aud", "jti"),
        )

    async def verify_issued_reloading(
        self,
        token: str,
        *,
        audience: str | Collection[str],
        issuer: str,
        now: int,
        leeway: int = 30,
        kind: Literal["svid", "access"] = "svid",
    ) -> VerifiedClaims:
        """:meth:`verify_issued`, but a key id this process does not know makes it read the
        keys again first — another replica may have rotated — at most every 10 seconds, so
        made-up key ids cannot turn every request into a database read."""
        check = functools.partial(
            self.verify_issued, token, audience=audience, issuer=issuer, leeway=leeway, kind=kind
        )
        try:
            return check(now=now)
        except TokenInvalid as exc:
            moment = datetime.fromtimestamp(now, tz=UTC)
            recent = self._loaded_at is not None and moment - self._loaded_at < RELOAD_INTERVAL
            if exc.details.get("reason") != "unknown_kid" or recent:
                raise
        await self.refresh(now=moment, rotate=False)
        return check(now=now)

    # -- rotation ------------------------------------------------------------------------

    async def rotate_signing_key(self, *, now: datetime) -> list[KeyRingChange]:
        """A new signing key signs from now on; the old one stays published for a while."""
        live = [
            k for k in self._keys if k.purpose is KeyPurpose.TOKEN_SIGNING and k.retired_at is None
        ]
        new, retired = await self._replace(
            persistence=self._persistence,
            kek=self._kek,
            purpose=KeyPurpose.TOKEN_SIGNING,
            live=live,
            now=now,
            trust_domain=self._trust_domain,
            token_max_ttl=self._token_max_ttl,
        )
        gone = {k.kid for k in retired}
        self._load([k for k in self._keys if k.kid not in gone] + retired + [new])
        changes = [KeyRingChange("created", KeyPurpose.TOKEN_SIGNING, new.kid)]
        changes += [KeyRingChange("retired", KeyPurpose.TOKEN_SIGNING, k.kid) for k in retired]
        return changes
