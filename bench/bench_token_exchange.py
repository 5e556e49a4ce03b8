"""Token exchange (RFC 8693): verify the subject and actor tokens, decide, mint, record — per
second, in process.

Measures Tether's own path (``TokenExchanger.exchange`` on the embedded SQLite store, as the
token endpoint runs it for ``grant_type=token-exchange``: a user's access token as the subject,
the acting instance's JWT-SVID as the actor, the grant named) next to the floor: the same steps
with the bare libraries in the same run — ES256 verify of both tokens and their claims with
``cryptography``, one ``cedarpy.is_authorized`` for ``act_for`` with parsed schema and policy
handles (the shipped policies; the entities built from JSON per call), the delegated claims
built and ES256-signed with ``cryptography``, and the audit record as one row of Tether's own
audit table (made by its migrations, with its indexes, as the audit-append bench's floor
writes it): canonical JSON, a sha256 hash chain with ``hashlib``, committed with ``sqlite3``
in WAL mode with ``synchronous=FULL``. Every exchange on both paths verifies tokens never seen
before (fresh ones are minted before each round, outside the timing), so no verification cache
serves them.

Tether runs as ``tether serve`` does: on uvloop, the embedded store's audit commits in its
writer process or, for a record that waits alone, on the event loop's thread
(:mod:`tether.store.sql._audit_writer`). Rounds of 400 alternate, fifteen of them: this VM's
shared disk makes single rounds' ratios vary from 0.55 to 1.0, and with seven the median
still moved by 0.05 from run to run.

Prints both rates, the ratio (the issue's aim: >= 0.8x the floor) and, for orientation only,
Tether's rate over Keycloak's sizing figure for token exchange (120 grants/s per vCPU), then
Tether's steps, each timed alone.

Run: ``.venv/bin/python bench/bench_token_exchange.py [N]`` (N exchanges per path; 6,000).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cedarpy
import uvloop
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

import _report
from tether.api.services import Services
from tether.audit.records import AuditRecord
from tether.checkpoint import agent_entity
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.delegation.models import Grant
from tether.delegation.token_exchange import (
    ACCESS_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    ExchangeRequest,
)
from tether.identity.access import Actor
from tether.identity.client_auth import ASSERTION_TYPE, AuthenticatedClient
from tether.identity.models import Agent, Declarations
from tether.policy._cedar import _entity_json, default_policies, schema_text
from tether.store.sql import open_sql_store

ISSUER = "http://127.0.0.1:8200"
TOKEN_ENDPOINT = f"{ISSUER}/oauth2/token"
ROUNDS = 15
USER = "alice"
SCOPES = frozenset({"orders:read"})
#: Keycloak's sizing guide: token exchange, grants per second per vCPU (orientation only).
KEYCLOAK_PER_VCPU = 120


def _b64d(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (for checks and templates outside the timing)."""
    claims: dict[str, Any] = json.loads(_b64d(token.split(".")[1]))
    return claims


class TetherPath:
    """Tether's own path, as the token endpoint runs a token exchange, on the embedded store."""

    def __init__(
        self, services: Services, agent: Agent, client: AuthenticatedClient, grant: Grant
    ) -> None:
        self.services, self.agent, self.client, self.grant = services, agent, client, grant
        self.instance = client.instance.spiffe_id

    @classmethod
    async def open(cls, data_dir: Path) -> TetherPath:
        settings = Settings(
            data_dir=data_dir,
            issuer=ISSUER,
            root_token="tto_" + "e" * 32,
            password_memory_kib=32,
            password_time_cost=1,
        )
        services = await Services.open(settings)
        root = Actor.system("bench")
        await services.registry.register(
            actor=root,
            name="shop-bot",
            owners=["bench"],
            description="",
            declarations=Declarations(tools=("list_orders",)),
        )
        pair = generate_agent_key()
        await services.registry.add_key("shop-bot", pair.public_jwk, actor=root)
        agent = await services.registry.get("shop-bot", actor=root)
        await services.delegation.users.add(actor=root, name=USER, password=None)
        grant = await services.delegation.grants.create(
            actor=Actor.user(name=USER),
            agent="shop-bot",
            scopes=set(SCOPES),
            purpose="bench",
            purpose_code="bench",
            session=None,
        )
        client = await services.client_auth.private_key_jwt(
            client_id=None,
            assertion_type=ASSERTION_TYPE,
            assertion=sign_client_assertion(
                pair.private_pem,
                client_id=agent.spiffe_id,
                audience=TOKEN_ENDPOINT,
                now=int(time.time()),
            ),
            instance_id="pod-1",
        )
        return cls(services, agent, client, grant)

    async def pairs(self, n: int) -> list[tuple[str, str]]:
        """``n`` fresh (user token, actor JWT-SVID) pairs, each token never seen before."""
        delegation = self.services.delegation
        user = await delegation.users.get(USER, actor=Actor.system("bench"))
        out = []
        for _ in range(n):
            subject = await delegation.tokens.issue_user_token(
                user=user, client_id="bench", scopes=set(SCOPES), session=None
            )
            actor = await self.services.svids.issue_jwt_svid(self.client, audience=())
            out.append((subject.token, actor.token))
        return out

    def request(self, subject: str, actor: str) -> ExchangeRequest:
        return ExchangeRequest(
            subject_token=subject,
            subject_token_type=ACCESS_TOKEN_TYPE,
            actor_token=actor,
            actor_token_type=JWT_TOKEN_TYPE,
            scope=None,
            audience=(),
            requested_token_type=None,
            grant_id=self.grant.id,
        )

    async def check(self) -> dict[str, Any]:
        """One exchange, its claims checked before anything is timed; its claims."""
        [(subject, actor)] = await self.pairs(1)
        exchanged = await self.services.delegation.exchanger.exchange(
            self.request(subject, actor), client=None, certificate_thumbprint=None
        )
        claims = _claims(exchanged.access_token)
        assert claims["sub"] == USER, claims
        assert claims["act"] == {"sub": self.instance}, claims
        assert claims["grant_id"] == self.grant.id, claims
        assert claims["scope"] == "orders:read", claims
        assert claims["token_use"] == "delegated", claims
        assert claims["aud"] == ISSUER, claims
        return claims

    async def run(self, pairs: list[tuple[str, str]]) -> float:
        """Exchanges per second over ``pairs``."""
        exchanger = self.services.delegation.exchanger
        requests = [self.request(subject, actor) for subject, actor in pairs]
        start = time.perf_counter()
        for request in requests:
            await exchanger.exchange(request, client=None, certificate_thumbprint=None)
        return len(requests) / (time.perf_counter() - start)

    async def run_in_flight(self, pairs: list[tuple[str, str]], *, in_flight: int) -> float:
        """Exchanges per second with ``in_flight`` at once, as a busy token endpoint runs
        them: their audit records share commits (the audit log's group commit)."""
        exchanger = self.services.delegation.exchanger
        requests = [self.request(subject, actor) for subject, actor in pairs]
        slots = asyncio.Semaphore(in_flight)

        async def one(request: ExchangeRequest) -> None:
            async with slots:
                await exchanger.exchange(request, client=None, certificate_thumbprint=None)

        start = time.perf_counter()
        await asyncio.gather(*(one(r) for r in requests))
        return len(requests) / (time.perf_counter() - start)

    async def close(self) -> None:
        await self.services.close()


_FLOOR_LOG = "floor.example/audit/r1"
_FLOOR_INSERT = (
    "INSERT INTO audit_records (sequence, id, type, correlation_id, log, log_index, entry,"
    " chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


async def _schema(path: Path) -> None:
    """Tether's own schema (its migrations) in ``path``: the floor writes the same table."""
    store = await open_sql_store(f"sqlite:///{path}")
    await store.close()


def _act_for(
    grant: dict[str, Any], user: str, instance: str, scopes: set[str], now: int
) -> dict[str, Any]:
    """The floor's Cedar request for ``act_for``, as the checkpoint builds it."""
    return {
        "principal": {"type": "Tether::Agent", "id": grant["agent"]},
        "action": {"type": "Tether::Action", "id": "act_for"},
        "resource": {"type": "Tether::User", "id": user},
        "context": {
            "now": now,
            "instance": instance.rsplit("/", 1)[-1],
            "user": {"__entity": {"type": "Tether::User", "id": user}},
            "grant_id": grant["id"],
            "grant_expires_at": grant["expires_at"],
            "scopes": sorted(scopes),
            "purpose": grant["purpose"],
            "purpose_code": grant["purpose_code"],
            "act_chain": [instance],
            "act_depth": 1,
        },
    }


class Floor:
    """The same steps with the bare libraries: ``cryptography``, ``cedarpy`` and ``sqlite3``."""

    def __init__(self, db: Path, tether: TetherPath, template: tuple[str, str]) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.chain, self.index = hashlib.sha256(b"floor").digest(), 0
        self.schema = cedarpy.Schema.from_str(schema_text())
        self.policies = cedarpy.PolicySet.from_str(default_policies())
        self.principal = _entity_json(agent_entity(tether.agent))
        self.user = {
            "uid": {"type": "Tether::User", "id": USER},
            "attrs": {"name": USER, "groups": []},
            "parents": [],
        }
        grant = tether.grant
        self.grant: dict[str, Any] = {
            "id": grant.id,
            "user": grant.user,
            "agent": grant.agent,
            "scopes": set(grant.scopes),
            "purpose_code": grant.purpose_code,
            "purpose": grant.purpose,
            "expires_at": int(grant.expires_at.timestamp()),
        }
        self.agent_spiffe_id = tether.agent.spiffe_id
        # The tokens are minted with Tether's signing key and the claims of tokens Tether
        # issued (each with its own jti); the floor verifies them with that key's public half.
        self.mint = tether.services.keyring.signer
        public = tether.services.keyring.verification_key(
            self.mint.kid, now=tether.services.clock.now()
        )
        assert public is not None
        loaded = serialization.load_pem_public_key(public.as_pem(private=False))
        assert isinstance(loaded, ec.EllipticCurvePublicKey)
        self.public = loaded
        self.subject_claims, self.actor_claims = _claims(template[0]), _claims(template[1])
        self.signer = ec.generate_private_key(ec.SECP256R1())
        self.out_head = _b64e(
            json.dumps({"alg": "ES256", "kid": "floor", "typ": "at+jwt"}).encode()
        )

    def pairs(self, n: int) -> list[tuple[str, str]]:
        """``n`` fresh (user token, actor JWT-SVID) pairs: Tether's claims, new times and jti."""
        now = int(time.time())

        def fresh(template: dict[str, Any], jti: str) -> dict[str, Any]:
            life = template["exp"] - template["iat"]
            return template | {"iat": now, "nbf": now, "exp": now + life, "jti": jti}

        return [
            (
                self.mint.sign_jwt(fresh(self.subject_claims, f"jti_fs_{now}_{i}"), typ="at+jwt"),
                self.mint.sign_jwt(fresh(self.actor_claims, f"jti_fa_{now}_{i}")),
            )
            for i in range(n)
        ]

    def _verify(self, token: str, typ: str, now: float) -> dict[str, Any]:
        """Signature, header and the registered claims (iss, aud, exp, nbf)."""
        head, body, sig = token.split(".")
        header = json.loads(_b64d(head))
        claims: dict[str, Any] = json.loads(_b64d(body))
        raw = _b64d(sig)
        r_s = (int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        self.public.verify(
            encode_dss_signature(*r_s), f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())
        )
        assert header["alg"] == "ES256"
        assert header["typ"] == typ
        assert claims["iss"] == ISSUER
        assert claims["aud"] == ISSUER
        assert claims["exp"] > now
        assert claims["nbf"] <= now + 30
        return claims

    def exchange(self, subject_token: str, actor_token: str) -> str:
        now_f = time.time()
        subject = self._verify(subject_token, "at+jwt", now_f)
        actor = self._verify(actor_token, "JWT", now_f)
        assert subject["token_use"] == "user"
        instance = actor["sub"]
        assert instance.startswith(self.agent_spiffe_id + "/")
        now = int(now_f)
        grant = self.grant
        assert grant["user"] == subject["sub"]
        assert grant["expires_at"] > now
        scopes = grant["scopes"] & set(subject["scope"].split())
        assert scopes
        request = _act_for(grant, subject["sub"], instance, scopes, now)
        entities = cedarpy.Entities.from_json_str(
            json.dumps([self.principal, self.user]), schema=self.schema
        )
        result = cedarpy.is_authorized(request, self.policies, entities, self.schema)
        assert result.decision == cedarpy.Decision.Allow
        assert not result.diagnostics.errors
        claims = {
            "iss": ISSUER,
            "sub": subject["sub"],
            "aud": ISSUER,
            "act": {"sub": instance},
            "client_id": self.agent_spiffe_id,
            "scope": " ".join(sorted(scopes)),
            "purpose": grant["purpose_code"],
            "grant_id": grant["id"],
            "token_use": "delegated",
            "iat": now,
            "nbf": now,
            "exp": min(subject["exp"], grant["expires_at"], now + 600),
            "jti": f"jti_{os.urandom(12).hex()}",
        }
        signing_input = f"{self.out_head}.{_b64e(json.dumps(claims).encode())}"
        signature = self.signer.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s_ = decode_dss_signature(signature)
        token = signing_input + "." + _b64e(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))
        record = {
            "type": "token.exchanged",
            "actor": instance,
            "subject": f"user:{subject['sub']}",
            "details": {
                "jti": claims["jti"],
                "user": claims["sub"],
                "act": [instance],
                "grant_id": grant["id"],
                "scope": claims["scope"],
                "purpose": claims["purpose"],
                "aud": claims["aud"],
                "exp": claims["exp"],
                "policy_ids": sorted(result.diagnostics.reasons),
            },
        }
        self._commit(record)
        return token

    def _commit(self, record: dict[str, Any]) -> None:
        """The record as one row of Tether's audit table: canonical JSON, chained, durable."""
        entry = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        self.chain = hashlib.sha256(b"\x00" + self.chain + entry).digest()
        self.index += 1
        row = (self.index, f"aud_{os.urandom(12).hex()}", record["type"], None, _FLOOR_LOG)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(_FLOOR_INSERT, (*row, self.index - 1, entry, self.chain))
        self.conn.execute("COMMIT")

    def run(self, pairs: list[tuple[str, str]]) -> float:
        """Exchanges per second over ``pairs``."""
        start = time.perf_counter()
        for subject, actor in pairs:
            self.exchange(subject, actor)
        return len(pairs) / (time.perf_counter() - start)


async def _steps(tether: TetherPath, claims: dict[str, Any], n: int) -> dict[str, float]:
    """Each step of an exchange alone, in microseconds, on fresh tokens: where the time goes."""
    services, agent = tether.services, tether.agent
    pairs = await tether.pairs(n)
    out: dict[str, float] = {}
    audiences = (ISSUER, agent.spiffe_id, tether.instance)
    start = time.perf_counter()
    for subject, _ in pairs:
        await services.delegation.tokens.subject(subject, audiences=audiences)
    out["verify the subject token"] = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _, actor in pairs:
        await services.svids.verify_agent_token(actor, certificate_thumbprint=None)
    out["verify the actor token (JWT-SVID)"] = (time.perf_counter() - start) / n * 1e6
    grant = tether.grant
    start = time.perf_counter()
    for _ in range(n):
        await services.delegation.grants.cache.get(grant.id)
    out["read the grant (cache)"] = (time.perf_counter() - start) / n * 1e6
    context: dict[str, Any] = {
        "now": int(time.time()),
        "instance": "pod-1",
        "grant_id": grant.id,
        "grant_expires_at": int(grant.expires_at.timestamp()),
        "scopes": set(SCOPES),
        "purpose": grant.purpose,
        "purpose_code": grant.purpose_code,
        "act_chain": {tether.instance},
        "act_depth": 1,
    }
    assert services.checkpoint.act_for(agent, USER, context).allowed
    start = time.perf_counter()
    for _ in range(n):
        services.checkpoint.act_for(agent, USER, context)
    out["policy: act_for"] = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n):
        services.delegation.tokens.sign_delegated(claims)
    out["sign the delegated token"] = (time.perf_counter() - start) / n * 1e6
    out["audit append (1 durable unit)"] = await _audit_step(tether, claims, n)
    return out


async def _audit_step(tether: TetherPath, claims: dict[str, Any], n: int) -> float:
    """An exchange's record appended alone, ``n`` times: microseconds each."""
    services = tether.services
    details = {
        "jti": claims["jti"],
        "user": USER,
        "act": [tether.instance],
        "grant_id": tether.grant.id,
        "prior_grants": [],
        "scope": claims["scope"],
        "purpose": claims["purpose"],
        "sid": None,
        "aud": claims["aud"],
        "exp": claims["exp"],
        "policy_ids": ["tether.permit-act-for-consenting-user"],
    }
    start = time.perf_counter()
    for _ in range(n):
        await services.audit.append(
            AuditRecord.new(
                type="token.exchanged",
                actor=tether.instance,
                subject=f"user:{USER}",
                time=services.clock.now(),
                details=details,
            )
        )
    return (time.perf_counter() - start) / n * 1e6


#: Exchanges at once in the second measurement (a busy token endpoint).
IN_FLIGHT = 8


async def measure(n: int, tmp: Path) -> tuple[list[float], list[float], dict[str, float], float]:
    """Floor and Tether in alternating rounds, so both see the same disk: fsync latency on a
    shared virtual disk drifts by 3x within a minute, and a ratio of two runs taken minutes
    apart measures the disk, not the code."""
    tether = await TetherPath.open(tmp / "tether")
    floor_rates, tether_rates = [], []
    floor: Floor | None = None
    try:
        claims = await tether.check()
        template = (await tether.pairs(1))[0]
        await _schema(tmp / "floor.db")
        floor = Floor(tmp / "floor.db", tether, template)
        floor.run(floor.pairs(20))
        await tether.run(await tether.pairs(20))
        for _ in range(ROUNDS):
            floor_rates.append(floor.run(floor.pairs(n // ROUNDS)))
            tether_rates.append(await tether.run(await tether.pairs(n // ROUNDS)))
        steps = await _steps(tether, claims, max(50, n // 4))
        busy = await tether.run_in_flight(await tether.pairs(n), in_flight=IN_FLIGHT)
    finally:
        if floor is not None:
            floor.conn.close()
        await tether.close()
    return floor_rates, tether_rates, steps, busy


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        floors, ours, steps, busy = uvloop.run(measure(n, Path(tmp)))
    ratios = sorted(t / f for t, f in zip(ours, floors, strict=True))
    floor_rate, our_rate = statistics.median(floors), statistics.median(ours)
    print(f"token exchange, {n} sequential exchanges in {ROUNDS} alternating rounds,")
    print("fresh subject and actor tokens each time, SQLite WAL synchronous=FULL")
    print("(medians of the rounds)")
    print(f"  floor (bare libraries)  {floor_rate:8.0f} /s  {1e6 / floor_rate:8.0f} us each")
    print(f"  tether                  {our_rate:8.0f} /s  {1e6 / our_rate:8.0f} us each")
    print(
        f"  ratio tether/floor      {statistics.median(ratios):8.2f}x   "
        f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; aim >= 0.80x)"
    )
    print(
        f"  peer: Keycloak sizes {KEYCLOAK_PER_VCPU} /s per vCPU; tether / {KEYCLOAK_PER_VCPU}"
        f" {our_rate / KEYCLOAK_PER_VCPU:5.1f}x   (its published figure, not run here)"
    )
    print(
        f"  tether, {IN_FLIGHT} exchanges in flight {busy:8.0f} /s   (records share commits;"
        " the floor commits one by one)"
    )
    print("tether's steps, each alone:")
    for step, micros in steps.items():
        print(f"  {step:40s} {micros:6.0f} us")
    total = sum(steps.values())
    print(f"  {'sum of the steps':40s} {total:6.0f} us   (an exchange: {1e6 / our_rate:.0f} us)")
    floor_name = "cryptography + cedarpy + sqlite3"
    _report.row(area="tokens", path="token exchange (RFC 8693), one at a time", figure=our_rate,
                unit="/s", better="higher", floor=floor_rate, floor_name=floor_name,
                aim=_report.at_least(0.8, of="floor"),
                note=f"fresh subject and actor tokens each time; Keycloak's sizing guide says "
                f"{KEYCLOAK_PER_VCPU}/s per vCPU (published, not run here).")  # fmt: skip
    _report.row(area="tokens", path=f"token exchange, {IN_FLIGHT} in flight", figure=busy,
                unit="/s", better="higher", floor=floor_rate,
                floor_name=f"{floor_name}, one at a time")  # fmt: skip


if __name__ == "__main__":
    main()
