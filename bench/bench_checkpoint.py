"""The checkpoint (verify + decide + durable audit) per decision, in process, against the floor
of the same steps with the bare libraries in the same run; and how the decision cost grows
with the number of policies.

* Tether: ``Checkpoint.check`` on the embedded SQLite store — verify the agent's JWT-SVID, read
  the agent, build the request, decide with the policy set in force, append the decision record
  durably (WAL, ``synchronous=FULL``).
* Floor: ``joserfc`` verifies the same token, ``cedarpy`` decides with parsed handles (the
  entities built per call, as any checkpoint must), ``sqlite3`` appends the same JSON record and
  commits (WAL, ``synchronous=FULL``).
* Policy scaling: one decision with 10 and with 1,000 policies in force (aim: ≤ 2×).

The issue's aims: checkpoint ≤ 1.25× the floor's time per decision. Rounds alternate so both
see the same disk. Run: ``make bench`` or ``.venv/bin/python bench/bench_checkpoint.py [N]``.
"""

from __future__ import annotations

import asyncio
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
from joserfc import jwt
from joserfc.jwk import ECKey

from tether.api.services import Services
from tether.checkpoint import CheckRequest, agent_entity
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.access import Actor
from tether.identity.client_auth import ASSERTION_TYPE
from tether.identity.models import Declarations
from tether.policy._cedar import CedarEngine, _entity_json, default_policies, schema_text
from tether.policy.models import DecisionRequest, Entity, EntityRef

ISSUER = "http://127.0.0.1:8200"
ROUNDS = 5
TOOL = Entity(
    ref=EntityRef("Tool", "search_faq"),
    attrs={"name": "search_faq", "data_class": "public", "state_changing": False},
    parents=(EntityRef("McpServer", "kb"),),
)
KB = Entity(ref=EntityRef("McpServer", "kb"), attrs={"name": "kb"})
POLICY = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"kb");
"""


def many_policies(n: int) -> str:
    """``n`` policies like real ones: one permit per agent and tool."""
    return (
        "\n".join(
            f'@id("agent-{i}-tool-{i % 7}")\n'
            f'permit (principal == Tether::Agent::"agent-{i}", '
            f'action == Tether::Action::"call_tool", resource == Tether::Tool::"tool-{i % 7}");'
            for i in range(n)
        )
        + POLICY
    )


class Setup:
    def __init__(self, services: Services, token: str, public: ECKey) -> None:
        self.services, self.token, self.public = services, token, public
        self.principal_json: dict[str, Any] = {}

    @classmethod
    async def open(cls, data_dir: Path) -> Setup:
        settings = Settings(data_dir=data_dir, issuer=ISSUER, root_token="tto_" + "c" * 32)
        services = await Services.open(settings)
        root = Actor.system("bench")
        await services.registry.register(
            actor=root,
            name="faq-bot",
            owners=["bench"],
            description="",
            declarations=Declarations(tools=("search_faq",)),
        )
        pair = generate_agent_key()
        await services.registry.add_key("faq-bot", pair.public_jwk, actor=root)
        await services.policies.apply(POLICY, actor=root)
        agent = await services.registry.get("faq-bot", actor=root)
        client = await services.client_auth.private_key_jwt(
            client_id=None,
            assertion_type=ASSERTION_TYPE,
            assertion=sign_client_assertion(
                pair.private_pem,
                client_id=agent.spiffe_id,
                audience=f"{ISSUER}/oauth2/token",
                now=int(time.time()),
            ),
            instance_id="pod-1",
        )
        issued = await services.svids.issue_jwt_svid(client, audience=())
        key = services.keyring.verification_key(
            services.keyring.signer.kid, now=services.clock.now()
        )
        assert key is not None
        setup = cls(services, issued.token, key)
        setup.principal_json = _entity_json(agent_entity(agent))
        return setup

    async def concurrent(self, n: int, width: int = 16) -> float:
        """µs per decision with ``width`` decisions in flight (group commit shares fsyncs)."""
        request = self._request()

        async def lane(count: int) -> None:
            for _ in range(count):
                assert (await self.services.checkpoint.check(request)).allowed

        start = time.perf_counter()
        await asyncio.gather(*(lane(n // width) for _ in range(width)))
        return (time.perf_counter() - start) / (n // width * width) * 1e6

    def _request(self) -> CheckRequest:
        return CheckRequest(
            token=self.token,
            action="call_tool",
            resource=TOOL,
            entities=(KB,),
            arguments={"q": "opening hours"},
            enforcement_point="bench",
        )

    async def tether(self, n: int) -> float:
        request = self._request()
        start = time.perf_counter()
        for _ in range(n):
            verdict = await self.services.checkpoint.check(request)
            assert verdict.allowed, verdict.decision
        return (time.perf_counter() - start) / n * 1e6


class Floor:
    def __init__(self, db: Path, setup: Setup) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, body TEXT)")
        self.schema = cedarpy.Schema.from_str(schema_text())
        self.policies = cedarpy.PolicySet.from_str(default_policies() + POLICY)
        self.token, self.public = setup.token, setup.public
        self.principal = setup.principal_json

    def run(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            token = jwt.decode(self.token, self.public, algorithms=["ES256"])
            claims = token.claims
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": ISSUER},
                aud={"essential": True, "value": ISSUER},
                exp={"essential": True},
            ).validate(claims)
            entities = cedarpy.Entities.from_json_str(
                json.dumps([self.principal, _entity_json(TOOL), _entity_json(KB)]),
                schema=self.schema,
            )
            request = {
                "principal": {"type": "Tether::Agent", "id": "faq-bot"},
                "action": {"type": "Tether::Action", "id": "call_tool"},
                "resource": {"type": "Tether::Tool", "id": "search_faq"},
                "context": {
                    "now": int(time.time()),
                    "instance": "pod-1",
                    "scopes": [],
                    "act_chain": [],
                    "act_depth": 0,
                },
            }
            result = cedarpy.is_authorized(request, self.policies, entities, self.schema)
            assert result.allowed
            record = {
                "sub": claims["sub"],
                "effect": "allow",
                "reasons": result.diagnostics.reasons,
            }
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("INSERT INTO audit (body) VALUES (?)", (json.dumps(record),))
            self.conn.execute("COMMIT")
        return (time.perf_counter() - start) / n * 1e6


def scaling(n: int) -> tuple[float, float]:
    engine = CedarEngine()
    request = DecisionRequest(
        principal=Entity(
            ref=EntityRef("Agent", "faq-bot"),
            attrs={
                "name": "faq-bot",
                "state": "active",
                "risk_tier": "low",
                "risk_score": 10,
                "owners": set(),
                "tools": set(),
                "resources": set(),
                "data_classes": set(),
                "external_connections": "none",
                "autonomy": "supervised",
                "may_call_agents": False,
            },
        ),
        action="call_tool",
        resource=TOOL,
        context={"now": 0, "instance": "i", "scopes": set(), "act_chain": set(), "act_depth": 0},
        entities=(KB,),
    )
    costs = []
    for size in (10, 1000):
        compiled = engine.compile(many_policies(size - 1), version=None)
        start = time.perf_counter()
        for _ in range(n):
            assert engine.decide(compiled, request).allowed
        costs.append((time.perf_counter() - start) / n * 1e6)
    return costs[0], costs[1]


async def measure(n: int, tmp: Path) -> tuple[list[float], list[float], list[float]]:
    setup = await Setup.open(tmp / "tether")
    floor = Floor(tmp / "floor.db", setup)
    ours, floors, wide = [], [], []
    try:
        await setup.tether(20)
        for _ in range(ROUNDS):
            floors.append(floor.run(n // ROUNDS))
            ours.append(await setup.tether(n // ROUNDS))
            wide.append(await setup.concurrent(n // ROUNDS))
    finally:
        floor.conn.close()
        await setup.services.close()
    return ours, floors, wide


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours, floors, wide = asyncio.run(measure(n, Path(tmp)))
    ratios = sorted(o / f for o, f in zip(ours, floors, strict=True))
    print(f"checkpoint, {n} sequential decisions in {ROUNDS} alternating rounds (medians)")
    print(f"  floor (joserfc + cedarpy + sqlite3)  {statistics.median(floors):7.0f} us each")
    print(f"  tether Checkpoint.check              {statistics.median(ours):7.0f} us each")
    print(
        f"  ratio tether/floor (time)            {statistics.median(ratios):7.2f}x   "
        f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; aim <= 1.25x)"
    )
    wide_ratios = sorted(w / f for w, f in zip(wide, floors, strict=True))
    print(f"  tether, 16 decisions in flight       {statistics.median(wide):7.0f} us each")
    print(
        f"  ratio (16 in flight, cached token)   {statistics.median(wide_ratios):7.2f}x   "
        f"(rounds {wide_ratios[0]:.2f}-{wide_ratios[-1]:.2f}; aim <= 0.5x)"
    )
    small, large = scaling(max(100, n // 4))
    print("policy scaling, one decision")
    print(f"  10 policies                          {small:7.0f} us")
    print(f"  1,000 policies                       {large:7.0f} us")
    print(f"  ratio                                {large / small:7.2f}x   (aim <= 2x)")


if __name__ == "__main__":
    main()
