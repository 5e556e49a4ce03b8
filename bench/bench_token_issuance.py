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
import statistics
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

import _report
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


class Floor:
    """The same steps with the bare libraries: ``sqlite3`` and ``cryptography``."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE replay (key TEXT PRIMARY KEY, expires REAL)")
        self.conn.execute(
            "CREATE TABLE inst (id TEXT PRIMARY KEY, first REAL, last REAL, kid TEXT)"
        )
        self.conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, body TEXT)")
        self.signer = ec.generate_private_key(ec.SECP256R1())
        self.out_head = _b64e(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())

    def run(self, assertions: list[str], public: ec.EllipticCurvePublicKey) -> float:
        """Issuances per second over ``assertions``."""
        conn = self.conn
        start = time.perf_counter()
        for token in assertions:
            head, body, sig = token.split(".")
            header, claims = json.loads(_b64d(head)), json.loads(_b64d(body))
            raw = _b64d(sig)
            r_s = (int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            public.verify(
                encode_dss_signature(*r_s), f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())
            )
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
            signing_input = f"{self.out_head}.{_b64e(json.dumps(out).encode())}"
            signature = self.signer.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
            r, s_ = decode_dss_signature(signature)
            _ = signing_input + "." + _b64e(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))
        return len(assertions) / (time.perf_counter() - start)


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
            AuditRecord.new(type="svid.jwt_issued", actor="bench", subject=None, time=clock.now())
        )
    out["audit append (1 durable unit)"] = (time.perf_counter() - start) / n * 1e6
    claims = {"iss": ISSUER, "sub": spiffe_id, "aud": ISSUER, "exp": 2**31, "jti": "j"}
    start = time.perf_counter()
    for _ in range(n):
        services.keyring.signer.sign_jwt(claims)
    out["sign the JWT-SVID"] = (time.perf_counter() - start) / n * 1e6
    return out


class TetherPath:
    """Tether's own path, as the token endpoint runs it, on the embedded SQLite store."""

    def __init__(self, services: Services, spiffe_id: str, agent_id: str, pem: bytes) -> None:
        self.services, self.spiffe_id, self.agent_id, self.pem = services, spiffe_id, agent_id, pem

    @classmethod
    async def open(cls, data_dir: Path) -> TetherPath:
        settings = Settings(data_dir=data_dir, issuer=ISSUER, root_token="tto_" + "b" * 32)
        services = await Services.open(settings)
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
        return cls(services, agent.spiffe_id, agent.id, pair.private_pem)

    def assertions(self, n: int) -> list[str]:
        now = int(time.time())
        return [
            sign_client_assertion(
                self.pem, client_id=self.spiffe_id, audience=TOKEN_ENDPOINT, now=now, lifetime=300
            )
            for _ in range(n)
        ]

    async def run(self, assertions: list[str]) -> float:
        start = time.perf_counter()
        for assertion in assertions:
            client = await self.services.client_auth.private_key_jwt(
                client_id=None,
                assertion_type=ASSERTION_TYPE,
                assertion=assertion,
                instance_id="pod-1",
            )
            await self.services.svids.issue_jwt_svid(client, audience=())
        return len(assertions) / (time.perf_counter() - start)

    async def close(self) -> None:
        await self.services.close()


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


async def measure(
    n: int, rounds: int, tmp: Path
) -> tuple[list[float], list[float], dict[str, float]]:
    """Floor and Tether in alternating rounds, so both see the same disk: fsync latency on a
    shared virtual disk drifts by 3x within a minute, and a ratio of two runs taken minutes
    apart measures the disk, not the code."""
    floor = Floor(tmp / "floor.db")
    tether = await TetherPath.open(tmp / "tether")
    floor_rates, tether_rates = [], []
    try:
        for _ in range(rounds):
            assertions, public = floor_inputs(n // rounds)
            floor_rates.append(floor.run(assertions, public))
            tether_rates.append(await tether.run(tether.assertions(n // rounds)))
        steps = await _steps(tether.services, tether.agent_id, tether.spiffe_id, max(50, n // 4))
    finally:
        floor.conn.close()
        await tether.close()
    return floor_rates, tether_rates, steps


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rounds = 5
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        floors, ours, steps = asyncio.run(measure(n, rounds, Path(tmp)))
    ratios = sorted(t / f for t, f in zip(ours, floors, strict=True))
    floor_rate, our_rate = statistics.median(floors), statistics.median(ours)
    print(f"token issuance, {n} sequential issuances in {rounds} alternating rounds,")
    print("SQLite WAL synchronous=FULL (medians of the rounds)")
    print(f"  floor (bare libraries)  {floor_rate:8.0f} /s  {1e6 / floor_rate:8.0f} us each")
    print(f"  tether                  {our_rate:8.0f} /s  {1e6 / our_rate:8.0f} us each")
    print(
        f"  ratio tether/floor      {statistics.median(ratios):8.2f}x   "
        f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; aim >= 0.70x)"
    )
    print("tether's steps, each alone:")
    for step, micros in steps.items():
        print(f"  {step:40s} {micros:6.0f} us")
    _report.row(area="tokens", path="token issuance (client assertion → JWT-SVID), one at a time",
                figure=our_rate, unit="/s", better="higher", floor=floor_rate,
                floor_name="cryptography + sqlite3", aim=_report.at_least(0.7, of="floor"),
                note="SQLite WAL, synchronous=FULL; a new assertion each time.")  # fmt: skip


if __name__ == "__main__":
    main()
