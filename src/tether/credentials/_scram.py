"""SCRAM-SHA-256 password verifiers, computed on our side (RFC 5802 §3, RFC 7677 §3).

A PostgreSQL role's password is sent as the verifier the server stores, never as the plaintext:
a plaintext ``PASSWORD '…'`` can land in the server's log, in ``pg_stat_statements`` and in
``pg_stat_activity``. psycopg's ``pgconn.encrypt_password`` computes the same verifier, but it
needs a live connection, always takes the server's iteration count and blocks the event loop
for the whole PBKDF2 (about 3 ms at 4096 iterations). Here the iteration count is the role
template's, and :func:`scram_verifier_async` runs the PBKDF2 in a worker thread
(``hashlib.pbkdf2_hmac`` releases the GIL), so concurrent issuances don't stall the server.

The format is PostgreSQL's (``src/common/scram-common.c``)::

    SCRAM-SHA-256$<iterations>:<salt, base64>$<StoredKey, base64>:<ServerKey, base64>

    SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
    StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
    ServerKey      = HMAC(SaltedPassword, "Server Key")

PostgreSQL runs the password through SASLprep (RFC 4013) first, and keeps it as it is when that
fails; every ASCII password is kept as it is, so only ASCII passwords are accepted here (ours
are ``secrets.token_urlsafe``) and no SASLprep is needed.

Example::

    >>> verifier = scram_verifier("pencil", iterations=4096, salt=bytes(16))
    >>> verifier.split("$")[1]
    '4096:AAAAAAAAAAAAAAAAAAAAAA=='
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

from tether.errors import InvalidInput

__all__ = ["MAX_ITERATIONS", "SALT_BYTES", "scram_verifier", "scram_verifier_async"]

#: A salt of 16 random bytes, as PostgreSQL makes (``SCRAM_DEFAULT_SALT_LEN``).
SALT_BYTES = 16
#: Bounds the CPU one verifier may cost (role templates are checked against the same bound).
MAX_ITERATIONS = 1_000_000
#: A password longer than this is not a generated one (PostgreSQL itself takes up to 1 kB).
_MAX_PASSWORD = 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_verifier(password: str, *, iterations: int, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` with a new random salt (or ``salt``).

    ``InvalidInput`` for a password that is not ASCII (or is empty or too long), an iteration
    count outside ``1..MAX_ITERATIONS`` or a salt that is not ``SALT_BYTES`` long. The message
    never carries the password."""
    if not password or len(password) > _MAX_PASSWORD or not password.isascii():
        raise InvalidInput(
            "a SCRAM password must be 1 to 1024 ASCII characters",
            details={"rule": "ascii password"},
        )
    if isinstance(iterations, bool) or not 1 <= iterations <= MAX_ITERATIONS:
        raise InvalidInput(
            f"SCRAM iterations must be between 1 and {MAX_ITERATIONS}",
            details={"iterations": iterations},
        )
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise InvalidInput(f"a SCRAM salt is {SALT_BYTES} bytes", details={"rule": "salt"})
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


async def scram_verifier_async(password: str, *, iterations: int) -> str:
    """:func:`scram_verifier` in a worker thread, so the event loop keeps running."""
    return await asyncio.to_thread(scram_verifier, password, iterations=iterations)
