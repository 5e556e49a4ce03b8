"""Token issuance: client-assertion verify + JWT-SVID mint + record, per second, in-process.

Measures Tether's own path (``ClientAuthenticator.private_key_jwt`` then
``SvidIssuer.issue_jwt_svid`` on the embedded SQLite store, as the token endpoint runs them)
next to the floor: the same steps with the bare libraries in the same run — ES256 verify of the
assertion and its claims with ``cryptography``, one ES256 signature for the JWT-SVID, and the
same durable records (replay key, instance, audit row) written with ``sqlite3`` in WAL mode with
``synchronous=FULL``. Prints both rates and the ratio (the issue's aim: >= 0.7x the floor).

Run: ``make bench`` or ``.venv/bin/python bench/bench_token_issuance.py [N]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from tether.api.services import Services
from tether.audit.records import AuditRecord
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.access import Actor
from tether.identity.client_auth import ASSERTION_TYPE
from tether.identity.models import Declarations

ISSUER = "http://127.0.0.1:8200"
TOKEN_ENDPOINT = f"{ISSUER}/oauth2/token"


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def floor(assertions: list[str], public: ec.EllipticCurvePublicKey, db: Path) -> float:
    """The same steps with the bare libraries; returns issuances per second."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE replay (key TEXT PRIMARY KEY, expires REAL)")
    conn.execute("CREATE TABLE inst (id TEXT PRIMARY KEY, first REAL, last REAL, kid TEXT)")
    conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, body TEXT)")
    signer = ec.generate_private_key(ec.SECP256R1())
    out_head = _b64e(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    start = time.perf_counter()
    for token in assertions:
        head, body, sig = token.split(".")
        header, claims = json.loads(_b64d(head)), json.loads(_b64d(body))
        raw = _b64d(sig)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        now = time.time()
        assert header["alg"] == "ES256"
        assert claims["aud"] == TOKEN_ENDPOINT
        assert claims["iss"] == claims["sub"]
        assert claims["exp"] > now
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO replay VALUES (?, ?)", (claims["jti"], claims["exp"]))
        conn.execute(
            "INSERT INTO inst VALUES ('pod-1', ?, ?, ?) ON CONFLICT(id) DO UPDATE SET last=?",
            (now, now, header["kid"], now),
        )
        out = {
            "iss": ISSUER,
            "sub": claims["sub"] + "/i/pod-1",
            "aud": ISSUER,
            "iat": int(now),
            "exp": int(now) + 300,
            "jti": claims["jti"],
        }
        conn.execute("INSERT INTO audit (body) VALUES (?)", (json.dumps(out),))
        conn.execute("COMMIT")
        signing_input = f"{out_head}.{_b64e(json.dumps(out).encode())}"
        r, s = decode_dss_signature(signer.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        _ = signing_input + "." + _b64e(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    elapsed = time.perf_counter() - start
    conn.close()
    return len(assertions) / elapsed


async def _steps(services: Services, agent_id: str, spiffe_id: str, n: int) -> dict[str, float]:
    """Each durable or CPU step of an issuance alone, in microseconds: where the time goes."""
    clock = services.clock
    out: dict[str, float] = {}
    start = time.perf_counter()
    for _ in range(n):
        await services.store.get_agent_with_keys("bench-bot")
    out["read agent + keys (1 unit)"] = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for i in range(n):
        await services.store.record_authentication(
            replay_key=f"bench:{i}",
            replay_expires_at=clock.now() + timedelta(minutes=5),
            agent_id=agent_id,
            instance_id="pod-1",
            spiffe_id=f"{spiffe_id}/i/pod-1",
            kid="k",
            auth_method="private_key_jwt",
            at=clock.now(),
        )
    out["consume jti + instance (1 durable unit)"] = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n):
        await services.audit.append(
            AuditRecord.new(type="bench", actor="bench", subject=None, time=clock.now())
        )
    out["audit append (1 durable unit)"] = (time.perf_counter() - start) / n * 1e6
    claims = {"iss": ISSUER, "sub": spiffe_id, "aud": ISSUER, "exp": 2**31, "jti": "j"}
    start = time.perf_counter()
    for _ in range(n):
        services.keyring.signer.sign_jwt(claims)
    out["sign the JWT-SVID"] = (time.perf_counter() - start) / n * 1e6
    return out


async def tether_path(n: int, data_dir: Path) -> tuple[float, dict[str, float]]:
    settings = Settings(data_dir=data_dir, issuer=ISSUER, root_token="tto_" + "b" * 32)
    services = await Services.open(settings)
    try:
        root = Actor.system("bench")
        agent = await services.registry.register(
            actor=root,
            name="bench-bot",
            owners=["bench"],
            description="",
            declarations=Declarations(tools=("search",)),
        )
        pair = generate_agent_key()
        await services.registry.add_key("bench-bot", pair.public_jwk, actor=root)
        now = int(time.time())
        assertions = [
            sign_client_assertion(
                pair.private_pem,
                client_id=agent.spiffe_id,
                audience=TOKEN_ENDPOINT,
                now=now,
                lifetime=300,
            )
            for _ in range(n)
        ]
        start = time.perf_counter()
        for assertion in assertions:
            client = await services.client_auth.private_key_jwt(
                client_id=None,
                assertion_type=ASSERTION_TYPE,
                assertion=assertion,
                instance_id="pod-1",
            )
            await services.svids.issue_jwt_svid(client, audience=())
        rate = n / (time.perf_counter() - start)
        return rate, await _steps(services, agent.id, agent.spiffe_id, max(50, n // 4))
    finally:
        await services.close()


def floor_inputs(n: int) -> tuple[list[str], ec.EllipticCurvePublicKey]:
    pair = generate_agent_key()
    key = serialization.load_pem_private_key(pair.private_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = int(time.time())
    assertions = [
        sign_client_assertion(
            pair.private_pem,
            client_id="spiffe://tether.local/agent/b",
            audience=TOKEN_ENDPOINT,
            now=now,
            lifetime=300,
        )
        for _ in range(n)
    ]
    return assertions, key.public_key()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        assertions, public = floor_inputs(n)
        floor_rate = floor(assertions, public, Path(tmp) / "floor.db")
        ours, steps = asyncio.run(tether_path(n, Path(tmp) / "tether"))
    print(f"token issuance, {n} sequential issuances, SQLite WAL synchronous=FULL")
    print(f"  floor (bare libraries)  {floor_rate:8.0f} /s  {1e6 / floor_rate:8.0f} us each")
    print(f"  tether                  {ours:8.0f} /s  {1e6 / ours:8.0f} us each")
    print(f"  ratio tether/floor      {ours / floor_rate:8.2f}x   (aim >= 0.70x)")
    print("tether's steps, each alone:")
    for step, micros in steps.items():
        print(f"  {step:40s} {micros:6.0f} us")


if __name__ == "__main__":
    main()
