"""The checkpoint (verify + decide + durable audit) per decision, in process, against the floor
of the same steps with the bare libraries in the same run; how the decision cost grows with the
number of policies; and the decision step against a peer engine, OPA's Rego (regopy), on an
equivalent policy.

* Tether: ``Checkpoint.check`` on the embedded SQLite store — verify the agent's JWT-SVID, read
  the agent, build the request, decide with the policy set in force, append the decision record
  durably (WAL, ``synchronous=FULL``).
* Floor: ``joserfc`` verifies the same token, ``cedarpy`` decides with parsed handles (the
  entities built per call, as any checkpoint must), ``sqlite3`` appends the same JSON record and
  commits (WAL, ``synchronous=FULL``).
* Policy scaling: one decision with 10, 100, 1,000 and 10,000 policies in force (aim: ≤ 2× at
  1,000 against 10). 10,000 policies of this shape are about 1.4 MB of text, over the 1 MiB a
  policy set may have (``MAX_POLICY_SET_BYTES``): the bench lifts that cap for this curve only.
* Peers: the decision alone (faq-bot calls a tool of MCP server ``kb``; the shipped policies
  apply), the same request each call, by Tether's ``CedarEngine.decide`` on a
  ``DecisionRequest`` (its caches hit; a second line gives it a new tool each call, so they
  miss), by bare ``cedarpy`` with parsed handles (parsing the entities each call), and by
  ``regopy`` 1.5.2 (the ``bench`` extra) on the same policy in Rego through a pre-built bundle
  entrypoint (an ``Input`` built each call). All must allow that call and deny another agent,
  a tool outside ``kb`` and a suspended agent before anything is timed. Reported: µs per
  decision and the ratios to regopy.

The issue's aims: checkpoint ≤ 1.25× the floor's time per decision (each decision verifying a
token never seen before), ≤ 0.5× on a verified-token cache hit. Both are measured one decision
at a time and with 16 in flight (where group commit shares fsyncs). Rounds alternate so all
see the same disk and the same machine load. Run: ``make bench`` or
``.venv/bin/python bench/bench_checkpoint.py [N]`` (N decisions per measured path; 1,000).
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

import _report
import tether.policy._cedar as cedar_module
from _floors import agent_request

try:  # the `bench` extra (`make bench` installs it); no type stubs
    import regopy  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:
    raise SystemExit(
        "regopy is not installed: run `make bench`, or .venv/bin/pip install -e '.[bench]'"
    ) from None

from tether.api.services import Services
from tether.checkpoint import CheckRequest, agent_entity
from tether.config import Settings
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.access import Actor
from tether.identity.client_auth import ASSERTION_TYPE
from tether.identity.models import Declarations
from tether.policy._cedar import (
    CedarEngine,
    _entity_json,
    _uid,
    _value,
    default_policies,
    schema_text,
)
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


#: POLICY and the shipped policies (defaults.cedar) in Rego: a permit that no forbid overrides.
#: Cedar's ``resource in McpServer::"kb"`` is the tool itself or one of its parents (the
#: bench's tools have one level of parents).
REGO_POLICY = """
package tether

default allow := false

allow if {
	permit
	not forbid
}

kb := {"type": "Tether::McpServer", "id": "kb"}

permit if {
	input.principal.uid == {"type": "Tether::Agent", "id": "faq-bot"}
	input.action == "call_tool"
	in_kb
}

in_kb if input.resource.uid == kb

in_kb if input.resource.parents[_] == kb

forbid if input.principal.attrs.state != "active"

forbid if input.context.grant_expires_at <= input.context.now

forbid if {
	input.action == "invoke_agent"
	not input.principal.attrs.may_call_agents
}
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
        self.claims: dict[str, Any] = {}

    def fresh_tokens(self, n: int) -> list[str]:
        """``n`` distinct JWT-SVIDs for the same instance, signed with Tether's key as the
        token endpoint signs them (each with its own ``jti``): none is in the verified-token
        cache, so each decision verifies its token in full."""
        signer, now = self.services.keyring.signer, int(time.time())
        return [
            signer.sign_jwt(self.claims | {"jti": f"jti_bench_{now}_{i}", "iat": now, "nbf": now})
            for i in range(n)
        ]

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
        verified = await services.svids.verify_agent_token(
            issued.token, certificate_thumbprint=None
        )
        setup.claims = dict(verified.claims.claims)
        return setup

    async def concurrent(self, n: int, *, fresh: bool, width: int = 16) -> float:
        """µs per decision with ``width`` decisions in flight (group commit shares fsyncs);
        ``fresh``: a token never seen before for each decision."""
        count = n // width
        tokens = self.fresh_tokens(count * width) if fresh else [self.token] * (count * width)

        async def lane(mine: list[str]) -> None:
            for token in mine:
                assert (await self.services.checkpoint.check(self._request(token))).allowed

        start = time.perf_counter()
        await asyncio.gather(*(lane(tokens[i::width]) for i in range(width)))
        return (time.perf_counter() - start) / (count * width) * 1e6

    def _request(self, token: str | None = None) -> CheckRequest:
        return CheckRequest(
            token=token or self.token,
            action="call_tool",
            resource=TOOL,
            entities=(KB,),
            arguments={"q": "opening hours"},
            enforcement_point="bench",
        )

    async def tether(self, n: int, *, fresh: bool) -> float:
        """µs per decision, one at a time; ``fresh``: each with a token never seen before."""
        requests = [self._request(t) for t in self.fresh_tokens(n)] if fresh else None
        start = time.perf_counter()
        for i in range(n):
            verdict = await self.services.checkpoint.check(
                requests[i] if requests else self._request()
            )
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
            request = agent_request("faq-bot", "call_tool", ("Tool", "search_faq"))
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


def decision_request(
    agent: str = "faq-bot", *, state: str = "active", resource: Entity = TOOL
) -> DecisionRequest:
    """What the checkpoint hands the engine for ``agent`` calling ``resource``."""
    return DecisionRequest(
        principal=Entity(
            ref=EntityRef("Agent", agent),
            attrs={
                "name": agent,
                "state": state,
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
        resource=resource,
        context={"now": 0, "instance": "i", "scopes": set(), "act_chain": set(), "act_depth": 0},
        entities=(KB,),
    )


#: Policies in force for the scaling curve.
SIZES = (10, 100, 1_000, 10_000)


def scaling(n: int) -> dict[int, float]:
    """µs per decision with each of ``SIZES`` policies in force (the 1 MiB cap on a policy
    set's text lifted: 10,000 such policies are about 1.4 MB)."""
    engine = CedarEngine()
    request = decision_request()
    costs: dict[int, float] = {}
    cap = cedar_module.MAX_POLICY_SET_BYTES
    cedar_module.MAX_POLICY_SET_BYTES = 8 * 1024 * 1024
    try:
        for size in SIZES:
            compiled = engine.compile(many_policies(size - 1), version=None)
            start = time.perf_counter()
            for _ in range(n):
                assert engine.decide(compiled, request).allowed
            costs[size] = (time.perf_counter() - start) / n * 1e6
    finally:
        cedar_module.MAX_POLICY_SET_BYTES = cap
    return costs


class Peers:
    """One decision in process, three ways, the same request each call:

    * Tether's decision step: ``CedarEngine.decide`` on a ``DecisionRequest`` (entities to
      JSON, Cedar, then the ``Decision`` with its determining policies). Repeated, its caches
      (the parsed entity graph, the agent's entity) hit; a second line gives it a new tool
      and new objects each call, so they miss;
    * cedarpy bare: the request's JSON parsed into ``Entities`` and ``is_authorized`` with parsed
      policy and schema handles;
    * regopy: the same JSON as the Rego input (an ``Input`` built per call) and a pre-built
      bundle entrypoint (``build`` once, ``query_bundle_entrypoint`` per call).

    regopy aborts the process if ``Output.expressions()`` is called on an undefined result, and
    its ``Node`` objects dangle once their ``Output`` is gone: the answer is read from the
    ``Output``'s parsed results (plain Python values), never through a ``Node``.
    """

    ENTRYPOINT = "tether/allow"

    def __init__(self) -> None:
        self.engine = CedarEngine()
        self.compiled = self.engine.compile(POLICY, version=None)
        self.schema = cedarpy.Schema.from_str(schema_text())
        self.policies = cedarpy.PolicySet.from_str(default_policies() + POLICY)
        self.rego = regopy.Interpreter()
        self.rego.add_module("tether.rego", REGO_POLICY)
        self.bundle = self.rego.build("x = data.tether.allow", [self.ENTRYPOINT])
        if not self.bundle.ok():
            raise SystemExit(f"the Rego policy did not build: {self.bundle.node()}")

    @staticmethod
    def documents(request: DecisionRequest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The request as JSON: the entities, and principal, action, resource and context."""
        entities = [
            _entity_json(e) for e in (request.principal, request.resource, *request.entities)
        ]
        query = {
            "principal": entities[0],
            "action": request.action,
            "resource": entities[1],
            "context": {k: _value(v) for k, v in request.context.items()},
        }
        return entities, query

    def by_tether(self, request: DecisionRequest, n: int) -> tuple[bool, float]:
        start = time.perf_counter()
        for _ in range(n):
            allowed = self.engine.decide(self.compiled, request).allowed
        return allowed, (time.perf_counter() - start) / n * 1e6

    def by_tether_uncached(self, request: DecisionRequest, n: int) -> tuple[bool, float]:
        """Like :meth:`by_tether`, with a tool never seen before (and new entity objects)
        each call: nothing Tether keeps between decisions helps."""
        tool = request.resource
        fresh = [
            decision_request(
                resource=Entity(
                    ref=EntityRef("Tool", f"{tool.ref.id}-{i}"),
                    attrs=tool.attrs,
                    parents=tool.parents,
                )
            )
            for i in range(n)
        ]
        start = time.perf_counter()
        for one in fresh:
            allowed = self.engine.decide(self.compiled, one).allowed
        return allowed, (time.perf_counter() - start) / n * 1e6

    def by_cedarpy(self, request: DecisionRequest, n: int) -> tuple[bool, float]:
        entities_json, query = self.documents(request)
        start = time.perf_counter()
        for _ in range(n):
            entities = cedarpy.Entities.from_json_str(json.dumps(entities_json), schema=self.schema)
            cedar_request = {
                "principal": _uid(request.principal.ref),
                "action": {"type": "Tether::Action", "id": query["action"]},
                "resource": _uid(request.resource.ref),
                "context": query["context"],
            }
            result = cedarpy.is_authorized(cedar_request, self.policies, entities, self.schema)
            allowed = result.decision == cedarpy.Decision.Allow and not result.diagnostics.errors
        return allowed, (time.perf_counter() - start) / n * 1e6

    def by_regopy(self, request: DecisionRequest, n: int) -> tuple[bool, float]:
        _, query = self.documents(request)
        start = time.perf_counter()
        for _ in range(n):
            self.rego.set_input(regopy.Input(query))
            output = self.rego.query_bundle_entrypoint(self.bundle, self.ENTRYPOINT)
            # ``[[true]]`` for an allow, ``[[false]]`` for a deny, ``[[]]`` if undefined.
            allowed = output.ok() and [r.expressions for r in output.results] == [[True]]
        return allowed, (time.perf_counter() - start) / n * 1e6

    def check(self) -> None:
        """All three allow faq-bot's call and deny the others before anything is timed."""
        elsewhere = Entity(ref=EntityRef("Tool", "drop_tables"), attrs=TOOL.attrs)
        cases = {
            "faq-bot calls search_faq": (decision_request(), True),
            "another agent": (decision_request("other-bot"), False),
            "a tool outside kb": (decision_request(resource=elsewhere), False),
            "a suspended faq-bot": (decision_request(state="suspended"), False),
        }
        for what, (request, expected) in cases.items():
            answers = [
                way(request, 1)[0] for way in (self.by_tether, self.by_cedarpy, self.by_regopy)
            ]
            if answers != [expected] * 3:
                raise SystemExit(f"{what}: tether, cedarpy, regopy said {answers}, not {expected}")

    def measure(self, n: int) -> dict[str, list[float]]:
        self.check()
        request = decision_request()
        ways = {
            "tether": self.by_tether,
            "tether_uncached": self.by_tether_uncached,
            "cedarpy": self.by_cedarpy,
            "regopy": self.by_regopy,
        }
        for way in ways.values():
            way(request, 20)
        costs: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(ROUNDS):
            for name, way in ways.items():
                allowed, cost = way(request, n // ROUNDS)
                assert allowed
                costs[name].append(cost)
        return costs


async def measure(n: int, tmp: Path) -> dict[str, list[float]]:
    """Per round: the floor, then Tether one at a time and 16 in flight, each with fresh and
    with cached tokens (µs per decision)."""
    setup = await Setup.open(tmp / "tether")
    floor = Floor(tmp / "floor.db", setup)
    runs: dict[str, list[float]] = {
        k: [] for k in ("floor", "seq", "seq_cached", "wide", "wide_cached")
    }
    per_round = n // ROUNDS
    try:
        await setup.tether(20, fresh=False)
        for _ in range(ROUNDS):
            runs["floor"].append(floor.run(per_round))
            runs["seq"].append(await setup.tether(per_round, fresh=True))
            runs["seq_cached"].append(await setup.tether(per_round, fresh=False))
            runs["wide"].append(await setup.concurrent(per_round, fresh=True))
            runs["wide_cached"].append(await setup.concurrent(per_round, fresh=False))
    finally:
        floor.conn.close()
        await setup.services.close()
    return runs


def _ratio_line(label: str, ours: list[float], floors: list[float], aim: str) -> None:
    ratios = sorted(o / f for o, f in zip(ours, floors, strict=True))
    print(f"  {label:<27}{statistics.median(ours):7.0f} us each   ", end="")
    print(f"{statistics.median(ratios):5.2f}x floor (rounds {ratios[0]:.2f}-{ratios[-1]:.2f}){aim}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = asyncio.run(measure(n, Path(tmp)))
    floors = runs["floor"]
    print(f"checkpoint, {n} decisions per path in {ROUNDS} alternating rounds (medians)")
    print(f"  floor (joserfc + cedarpy + sqlite3)  {statistics.median(floors):7.0f} us each")
    print("  tether Checkpoint.check:")
    _ratio_line("one at a time, fresh token", runs["seq"], floors, "   aim <= 1.25x")
    _ratio_line("one at a time, cached token", runs["seq_cached"], floors, "")
    _ratio_line("16 in flight, fresh tokens", runs["wide"], floors, "")
    _ratio_line("16 in flight, cached token", runs["wide_cached"], floors, "   aim <= 0.5x")
    print(
        "  (one at a time, every decision waits for its own fsync, as the floor's does; in\n"
        "   flight, group commit shares them. The floor verifies the token every time.)"
    )
    costs_by_size = scaling(max(100, n // 4))
    small = costs_by_size[10]
    print("policy scaling, one decision")
    for size, cost in costs_by_size.items():
        aim = "; aim <= 2x" if size == 1000 else ""
        print(f"  {size:>6,} policies                      {cost:7.0f} us   "
              f"({cost / small:.2f}x the 10-policy cost{aim})")  # fmt: skip
    costs = Peers().measure(n)
    print(
        f"peers, one decision in process, the same request each call, {n} in {ROUNDS}"
        " alternating rounds (medians)"
    )
    print(
        f"  tether CedarEngine.decide            {statistics.median(costs['tether']):7.0f} us each"
        "   (its caches hit)"
    )
    print(
        "  tether, a new tool each call         "
        f"{statistics.median(costs['tether_uncached']):7.0f} us each   (caches miss)"
    )
    print(
        f"  cedarpy bare (parsed handles)        {statistics.median(costs['cedarpy']):7.0f} us each"
    )
    print(
        f"  regopy {regopy.__version__} (bundle entrypoint)     "
        f"{statistics.median(costs['regopy']):7.0f} us each"
    )
    for name, label in (
        ("tether", "tether decision"),
        ("tether_uncached", "tether, new tool"),
        ("cedarpy", "cedarpy bare"),
    ):
        ratios = sorted(a / b for a, b in zip(costs[name], costs["regopy"], strict=True))
        print(
            f"  ratio {label + ' / regopy':<31}{statistics.median(ratios):7.2f}x   "
            f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}; < 1: faster than regopy)"
        )
    record(runs, costs_by_size, costs)


def record(
    runs: dict[str, list[float]], sizes: dict[int, float], costs: dict[str, list[float]]
) -> None:
    """The figures, for ``bench/report.py``."""
    med = statistics.median
    floor, name = med(runs["floor"]), "joserfc + cedarpy + sqlite3"
    for key, path, aim in (
        ("seq", "checkpoint, one at a time, fresh token", _report.at_most(1.25, of="floor")),
        ("seq_cached", "checkpoint, one at a time, cached token", None),
        ("wide", "checkpoint, 16 in flight, fresh tokens", None),
        ("wide_cached", "checkpoint, 16 in flight, cached token", _report.at_most(0.5, of="floor")),
    ):
        _report.row(area="decisions", path=path, figure=med(runs[key]), unit="µs/decision",
                    better="lower", floor=floor, floor_name=name, aim=aim)  # fmt: skip
    version = f"regopy {regopy.__version__}"
    _report.peer("regopy", regopy.__version__)
    for key, path in (
        ("tether", "decision step (CedarEngine.decide, caches hit)"),
        ("tether_uncached", "decision step, a new tool each call (caches miss)"),
    ):
        _report.row(area="decisions", path=path, figure=med(costs[key]), unit="µs/decision",
                    better="lower", floor=med(costs["cedarpy"]),
                    floor_name="cedarpy, parsed handles", peer=med(costs["regopy"]),
                    peer_name=version)  # fmt: skip
    _report.row(area="decisions", path="decision with 1,000 policies against 10",
                figure=sizes[1000] / sizes[10], unit="× the 10-policy cost", better="lower",
                aim=_report.at_most(2))  # fmt: skip
    _report.curve("Decision cost against policy count", x_label="policies in force",
                  y_label="µs/decision", points=list(sizes.items()),
                  note="One CedarEngine.decide, policies of one agent and tool each; the 1 MiB "
                  "cap on a policy set's text is lifted for 10,000 (about 1.4 MB).")  # fmt: skip


if __name__ == "__main__":
    main()
