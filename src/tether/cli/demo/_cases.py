"""The seeds' three use cases, played against a running stage.

A ``platform-admin`` sets the scene over Tether's API (credential engines, the three MCP
servers behind the gateway with the credential each gets, the agents and their keys, the
policies, Alice and the web clients she signs in through); then real agents — the SDK
(``tether.AsyncClient``) for their identity and delegation, the official ``mcp`` client for
their tools — do their work through the gateway:

1. ``faq-bot`` answers "What are your business hours?" from the support database; the gateway
   takes a just-in-time PostgreSQL role for it (decided by policy), injects it into the
   support knowledge base's server, and the reaper drops the role once the lease expires.
2. Alice signs in and consents; ``assistant`` exchanges her token for a delegated one (her as
   subject, the agent instance as actor) and reads her account; asking for Bob's is refused.
3. ``bank-agent`` asks to move 100 EUR to Bob; the gateway asks Alice (CIBA); the call runs only
   once she approves, and a substituted amount under her approval is refused.

Every step checks what it expects and raises :class:`DemoFailed` otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import RequestParamsMeta

import tether
from tether._internal.ids import new_secret
from tether.crypto.assertion import generate_agent_key
from tether.crypto.jwt import UnverifiedToken

from ._people import Browser, Phone
from ._show import DemoFailed, Show
from ._stage import DATABASE, FAQ_GROUP, Stage

__all__ = ["Play"]

#: The ``_meta`` key a call redeeming an approval carries (the gateway's APPROVAL_META).
APPROVAL_META = "tether.dev/auth_req_id"
ACCOUNTS_AUDIENCE = "urn:tether-demo:accounts"
BANK_AUDIENCE = "urn:tether-demo:bank"
#: The just-in-time role's life: the demo waits for the reaper to end it.
FAQ_TTL = 10
#: How long an interactive run waits for Alice's answer in the console.
INTERACTIVE_WAIT = 600.0

POLICIES = """
@id("faq-bot-searches-the-knowledge-base")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"support-kb");

@id("faq-bot-reads-the-support-database")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"use_credential",
        resource == Tether::Database::"support-db");

@id("assistant-reads-accounts-for-the-person-it-acts-for")
permit (principal == Tether::Agent::"assistant", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"accounts")
when { context has user && context.scopes.contains("accounts:read") };

@id("assistant-gets-account-tokens-for-that-person")
permit (principal == Tether::Agent::"assistant", action == Tether::Action::"use_credential",
        resource == Tether::Api::"accounts-api")
when { context has user };

@id("bank-agent-reads-the-balance")
permit (principal == Tether::Agent::"bank-agent", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"bank/balance")
when { context has user && context.scopes.contains("payments") };

@id("a-transfer-needs-the-persons-approval")
@obligation("approval")
permit (principal == Tether::Agent::"bank-agent", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"bank/transfer")
when { context has user && context.scopes.contains("payments") };

@id("bank-agent-gets-bank-tokens-for-that-person")
permit (principal == Tether::Agent::"bank-agent", action == Tether::Action::"use_credential",
        resource == Tether::Api::"bank-api")
when { context has user };
"""

AGENTS: dict[str, dict[str, Any]] = {
    "faq-bot": {
        "description": "answers customers' questions from the FAQ",
        "declarations": {"tools": ["search_faq"], "resources": ["support-db"],
                         "data_classes": ["public"]},
    },
    "assistant": {
        "description": "shows a signed-in customer their own accounts",
        "declarations": {"tools": ["get_account"], "resources": ["accounts-api"],
                         "data_classes": ["confidential"]},
    },
    "bank-agent": {
        "description": "makes payments a signed-in customer asks for, once they approve",
        "declarations": {"tools": ["balance", "transfer"], "resources": ["bank-api"],
                         "data_classes": ["confidential"]},
    },
}  # fmt: skip
#: The web clients Alice signs in through: client id -> (agent, its redirect URI).
CLIENTS = {
    "assistant-web": ("assistant", "https://assistant.example/callback"),
    "bank-web": ("bank-agent", "https://bank.example/callback"),
}


def _text(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def _claims(token: str) -> Mapping[str, Any]:
    """A JWT's claims, read (not verified: Tether and the gateway verify; this only shows)."""
    return UnverifiedToken.parse(token).claims


@dataclass
class Play:
    stage: Stage
    show: Show
    approve: bool
    password: str = field(default_factory=lambda: new_secret(12))
    keys: dict[str, bytes] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # agent -> SPIFFE ID
    ops: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        admin = {"Authorization": f"Bearer {self.stage.token}"}
        self.ops = httpx.Client(base_url=self.stage.addr, timeout=15, headers=admin)

    def close(self) -> None:
        self.ops.close()

    # -- the admin's calls ----------------------------------------------------------------

    def _call(self, method: str, path: str, status: int, what: str, **kw: Any) -> Any:
        answer = self.ops.request(method, path, **kw)
        if answer.status_code != status:
            raise DemoFailed(f"{what}: HTTP {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else {}

    def resource(self, server: str) -> str:
        return f"{self.stage.addr}/mcp/{server}"

    # -- the scene --------------------------------------------------------------------------

    def set_the_scene(self) -> None:
        s = self.stage
        assert s.cluster is not None
        self.show.step("platform-admin configures three credential engines")
        pg = {"kind": "postgres",
              "settings": {"host": s.cluster.host, "port": s.cluster.port, "database": DATABASE,
                           "admin_user": s.cluster.user, "known_logins": [s.cluster.user]},
              "roles": [{"name": "faq-reader", "group": FAQ_GROUP, "resource": "support-db",
                         "default_ttl": FAQ_TTL, "max_ttl": 60}],
              "secret": s.cluster.password}  # fmt: skip
        self._call("PUT", "/v1/engines/support-db", 200, "the support-db engine", json=pg)
        self.show.say(f"  support-db   postgres  role faq-reader joins {FAQ_GROUP} "
                      f"(SELECT on faq), {FAQ_TTL} s leases")  # fmt: skip
        for name, role, audience in (("accounts-api", "reader", ACCOUNTS_AUDIENCE),
                                     ("bank-api", "payments", BANK_AUDIENCE)):  # fmt: skip
            template = {"name": role, "resource": name, "default_ttl": 60, "max_ttl": 300,
                        "options": {"audience": audience}}  # fmt: skip
            body = {"kind": "token", "roles": [template]}
            self._call("PUT", f"/v1/engines/{name}", 200, f"the {name} engine", json=body)
            self.show.say(f"  {name:<12} token     role {role}: 60 s JWTs for {audience}")
        self.show.step("platform-admin puts the three MCP servers behind the gateway")
        injections: dict[str, dict[str, str]] = {
            "support-kb": {"engine": "support-db", "role": "faq-reader",
                           "header": "X-Database-Url", "prefix": ""},
            "accounts": {"engine": "accounts-api", "role": "reader"},
            "bank": {"engine": "bank-api", "role": "payments"},
        }  # fmt: skip
        for name, inject in injections.items():
            server = {"name": name, "url": s.servers[name], "credential": inject}
            self._call("POST", "/v1/mcp/servers", 201, f"the {name} server", json=server)
            lease = f"{inject['engine']}/{inject['role']}"
            self.show.say(f"  /mcp/{name:<11} → {s.servers[name]}, gets a lease of {lease} "
                          "(never the agent's token)")  # fmt: skip
        self.show.step("the agents are registered, each with its own key")
        for name, body in AGENTS.items():
            registration = {"name": name, "owners": ["platform-team"], **body}
            agent = self._call("POST", "/v1/agents", 201, f"registering {name}", json=registration)
            if agent["state"] == "pending_review":
                agent = self._call("POST", f"/v1/agents/{name}/approve", 200, f"approving {name}",
                                   json={})  # fmt: skip
            pair = generate_agent_key()
            self._call("POST", f"/v1/agents/{name}/keys", 201, f"{name}'s key",
                       json={"jwk": pair.public_jwk})  # fmt: skip
            self.keys[name], self.ids[name] = pair.private_pem, agent["spiffe_id"]
            risk = agent["risk"]
            self.show.say(f"  {agent['spiffe_id']}  risk {risk['score']} ({risk['tier']})")
        applied = self._call("POST", "/v1/policies", 201, "the policies",
                             json={"text": POLICIES})  # fmt: skip
        self.show.step(f"the policies are applied (version {applied['version']}): "
                       "deny by default, every permit named")  # fmt: skip
        self._call("POST", "/v1/users", 201, "adding alice",
                   json={"name": "alice", "password": self.password})  # fmt: skip
        for client_id, (agent, redirect) in CLIENTS.items():
            self._call("POST", "/v1/clients", 201, f"the {client_id} client",
                       json={"client_id": client_id, "name": client_id,
                             "redirect_uris": [redirect], "agent": agent})  # fmt: skip
        self.show.step("alice has an account; the assistant's and the bank's web apps sign "
                       "people in through Tether")  # fmt: skip

    # -- the agents' side -------------------------------------------------------------------

    def agent(self, name: str, instance: str) -> tether.AsyncClient:
        return tether.AsyncClient(self.stage.addr, agent=self.ids[name], key=self.keys[name],
                                  instance_id=instance)  # fmt: skip

    @asynccontextmanager
    async def mcp(self, server: str, token: str) -> AsyncIterator[Client]:
        """The official MCP client at the gateway's ``/mcp/<server>`` with ``token``."""
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                      timeout=30) as http:  # fmt: skip
            transport = streamable_http_client(self.resource(server), http_client=http)
            async with Client(transport) as client:
                yield client

    async def _tools(self, client: Client) -> list[str]:
        return sorted(t.name for t in (await client.list_tools()).tools)

    async def pin_tools(self, client: Client, server: str, expected: list[str]) -> None:
        """The first listing shows nothing: new tools wait for a platform-admin's review.
        The admin approves them (each definition's hash pinned); then they show."""
        if await self._tools(client):
            raise DemoFailed(f"{server}'s tools were shown before anyone approved them")
        pins = self._call("GET", f"/v1/mcp/servers/{server}", 200, f"{server}'s tools")
        for pin in pins["tools"]:
            # What the admin reviewed, exactly: the definition whose hash they saw.
            done = self._call("POST", f"/v1/mcp/servers/{server}/tools/{pin['tool']}/approve",
                              200, f"approving {pin['tool']}",
                              json={"digest": pin["seen_digest"]})  # fmt: skip
            self.show.say(f"  platform-admin approves {server}/{pin['tool']}: pinned "
                          f"{str(done['digest'])[:23]}…")  # fmt: skip
        listed = await self._tools(client)
        if listed != expected:
            raise DemoFailed(f"{server} lists {listed}, expected {expected}")
        self.show.ok(f"the gateway now lists {', '.join(listed)} for this agent")

    # -- use case 1 -------------------------------------------------------------------------

    async def faq(self) -> None:
        self.show.case(1, "a read-only FAQ agent with just-in-time database credentials")
        question = "What are your business hours?"
        async with self.agent("faq-bot", "faq-1") as agent:
            token = await agent.token(self.resource("support-kb"))
            self.show.ok(f"faq-bot authenticates with its private key: a JWT-SVID for "
                         f"/mcp/support-kb, {_claims(token)['sub']}")  # fmt: skip
            async with self.mcp("support-kb", token) as client:
                await self.pin_tools(client, "support-kb", ["search_faq"])
                result = await client.call_tool("search_faq", {"question": question})
        if result.is_error:
            raise DemoFailed(f"search_faq: {_text(result)}")
        answer = result.structured_content or {}
        self.show.ok(f'"{question}" → "{_text(result)}"')
        leases = self._call("GET", "/v1/leases", 200, "the leases",
                            params={"agent": "faq-bot"})["leases"]  # fmt: skip
        # The gateway took the lease for faq-bot's instance (a new one if the first ran low).
        mine = [lease for lease in leases if lease["credential"] == answer.get("read_as")]
        if not mine:
            raise DemoFailed(f"the server read as {answer.get('read_as')!r}, "
                             f"a role of none of faq-bot's leases")  # fmt: skip
        lease, role = mine[0], mine[0]["credential"]
        self.show.ok(f"the support server read the FAQ as {role}: a PostgreSQL role made for "
                     f"this lease alone (in {FAQ_GROUP}), until {lease['expires_at']}")  # fmt: skip
        if answer.get("bearer_seen") is not False:
            raise DemoFailed("a bearer token reached the support server")
        self.show.ok("no token reached the server, only the role; the agent never saw its "
                     "password")  # fmt: skip
        if not self._role_exists(role):
            raise DemoFailed(f"{role} is not in the database while its lease is active")
        limit = FAQ_TTL + 20
        with self.show.waiting(f"the task is done: waiting for the lease to end ({FAQ_TTL} s TTL)"):
            ended = self._wait(lambda: self._all_ended([x["id"] for x in leases]), limit)
        if not ended:
            raise DemoFailed(f"faq-bot's leases did not all end within {limit} s")
        done = self._call("GET", f"/v1/leases/{lease['id']}", 200, "the lease")
        late = (datetime.fromisoformat(done["ended_at"])
                - datetime.fromisoformat(done["expires_at"])).total_seconds()  # fmt: skip
        if done["state"] != "expired" or late < 0:
            raise DemoFailed(
                f"lease {lease['id']} ended {done['state']}, {late:+.1f} s from its TTL"
            )
        self.show.ok(f"the lease expired at the end of its TTL, not before, and the reaper "
                     f"dropped {role}: no standing access is left")  # fmt: skip

    def _role_exists(self, role: str) -> bool:
        with self.stage.admin_connect() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                is not None
            )

    def _all_ended(self, lease_ids: list[str]) -> bool:
        """Every lease ended and its role gone from the database."""
        for lease_id in lease_ids:
            lease = self._call("GET", f"/v1/leases/{lease_id}", 200, "the lease")
            if lease["state"] not in ("expired", "revoked") or self._role_exists(
                lease["credential"]
            ):
                return False
        return True

    @staticmethod
    def _wait(done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    # -- use case 2 -------------------------------------------------------------------------

    async def personal(self, browser: Browser) -> None:
        self.show.case(2, "a personalized agent acting for Alice, with her consent")
        alice, shown = browser.consent(client_id="assistant-web",
                                       redirect_uri=CLIENTS["assistant-web"][1],
                                       scope="accounts:read",
                                       purpose="show me my balance and recent payments",
                                       purpose_code="account-overview")  # fmt: skip
        self.show.ok("alice signs in and consents on Tether's page: " + _consent_line(shown))
        [grant] = self._call("GET", "/v1/grants", 200, "the grants",
                             params={"user": "alice", "agent": "assistant"})["grants"]  # fmt: skip
        self.show.say(f"  grant {grant['id']}: {grant['scopes']} for "
                      f"\"{grant['purpose']}\" ({grant['purpose_code']})")  # fmt: skip
        async with self.agent("assistant", "assistant-1") as agent:
            delegated = await agent.exchange(alice, scope="accounts:read",
                                             audience=self.resource("accounts"))  # fmt: skip
        claims = _claims(delegated.access_token)
        if claims["sub"] != "alice" or "act" not in claims:
            raise DemoFailed(f"the delegated token is not alice's with an actor: {claims}")
        self.show.ok(f"token exchange (RFC 8693): sub {claims['sub']}, act "
                     f"{claims['act']['sub']}, scope {claims['scope']}, grant "
                     f"{claims.get('grant_id')}")  # fmt: skip
        async with self.mcp("accounts", delegated.access_token) as client:
            await self.pin_tools(client, "accounts", ["get_account"])
            mine = await client.call_tool("get_account", {"customer": "alice"})
            if mine.is_error:
                raise DemoFailed(f"alice's account: {_text(mine)}")
            self.show.ok("her account, read for her:")
            self.show.say("    " + _text(mine).replace("\n", "\n    "))
            bobs = await client.call_tool("get_account", {"customer": "bob"})
        if not bobs.is_error:
            raise DemoFailed("the agent acting for alice read bob's account")
        self.show.ok(f"asking for bob's account is refused: {_text(bobs)}")
        self.show.say("  the accounts server verified the token Tether injected: it acts for "
                      "alice, by assistant")  # fmt: skip

    # -- use case 3 -------------------------------------------------------------------------

    async def banking(self, browser: Browser, phone: Phone) -> None:
        self.show.case(3, "a privileged agent: a transfer only with Alice's approval")
        alice, shown = browser.consent(client_id="bank-web", redirect_uri=CLIENTS["bank-web"][1],
                                       scope="payments", purpose="pay the people I ask you to",
                                       purpose_code="payments")  # fmt: skip
        self.show.ok("alice consents for the bank's agent: " + _consent_line(shown))
        call = {"amount": 100, "to": "bob"}
        async with self.agent("bank-agent", "bank-1") as agent:
            delegated = await agent.exchange(alice, scope="payments",
                                             audience=self.resource("bank"))  # fmt: skip
        async with self.mcp("bank", delegated.access_token) as client:
            await self.pin_tools(client, "bank", ["balance", "transfer"])
            self.show.ok(
                f"balance, no approval needed: {_text(await client.call_tool('balance', {}))}"
            )
            first = await client.call_tool("transfer", call)
            pending = (first.structured_content or {}).get("tether", {})
            if not first.is_error or "auth_req_id" not in pending:
                raise DemoFailed(f"the transfer did not wait for approval: {_text(first)}")
            auth_req_id = str(pending["auth_req_id"])
            self.show.ok(f"transfer 100 EUR to bob: approval pending ({auth_req_id}); "
                         "the gateway asked alice")  # fmt: skip
            self._alice_answers(phone)
            redeem = cast("RequestParamsMeta", {APPROVAL_META: auth_req_id})
            swapped = await client.call_tool("transfer", {"amount": 10000, "to": "carol"},
                                             meta=redeem)  # fmt: skip
            if not swapped.is_error:
                raise DemoFailed("a substituted amount ran under alice's approval")
            self.show.ok(f"the same approval with 10,000 EUR to carol is refused: {_text(swapped)}")
            done = await client.call_tool("transfer", call, meta=redeem)
        if done.is_error:
            raise DemoFailed(f"the approved transfer: {_text(done)}")
        self.show.ok(f"the approved call runs: {_text(done)}")
        ledger = [json.loads(line) for line in self.stage.ledger.read_text().splitlines()]
        if ledger != [{"from": "alice", "to": "bob", "amount": 100}]:
            raise DemoFailed(f"the bank's ledger holds {ledger}")
        self.show.ok("the bank's ledger holds exactly that one transfer")

    def _alice_answers(self, phone: Phone) -> None:
        """Alice's phone shows her the request (never its ``auth_req_id``: that is the
        agent's); she approves it there (``--approve``) or in the console's inbox."""
        asked: list[dict[str, Any]] = []

        def arrived() -> bool:
            asked[:] = [a for a in phone.inbox() if a["agent"] == "bank-agent"]
            return bool(asked)

        with self.show.waiting("the request is on its way to alice's phone"):
            if not self._wait(arrived, 30):
                raise DemoFailed("the approval request never reached alice's inbox")
        [request] = asked
        [item] = request["authorization_details"]
        call = item["call"]
        self.show.say(f"  alice's phone: \"{request.get('binding_message')}\" — "
                      f"{call['resource']['id']} {json.dumps(call['arguments'])}")  # fmt: skip
        if call["arguments"] != {"amount": 100, "to": "bob"}:
            raise DemoFailed(f"alice was asked about {call['arguments']}")
        if self.approve:
            phone.answer(request["id"], "approve")
            self.show.ok("alice approves (--approve: her phone answers for her)")
            return
        self.show.say(f"  alice: open {self.stage.addr}/console/me/approvals, sign in as alice "
                      f"(password {self.password}) and approve or deny it")  # fmt: skip
        with self.show.waiting("waiting for alice's answer in the console"):
            self._wait(lambda: phone.show(request["id"])["state"] != "pending", INTERACTIVE_WAIT)
        state = phone.show(request["id"])["state"]
        if state != "approved":
            raise DemoFailed(f"alice did not approve the transfer ({state})")
        self.show.ok("alice approved it in the console")


def _consent_line(shown: list[str]) -> str:
    """What the consent page asked her, in one line: its question, the purpose, the scopes
    and until when (the words after each of the page's headings)."""
    question = [line for line in shown if line.endswith("to act for you?")]
    if not question:
        raise DemoFailed(f"the consent page did not ask her: {' / '.join(shown)[:300]}")
    after = {shown[i]: shown[i + 1] for i in range(len(shown) - 1)}
    parts = [question[0]] + [f"{key.lower()}: {after[key]}"
                             for key in ("Purpose", "It may", "Until") if key in after]  # fmt: skip
    return "; ".join(parts)
