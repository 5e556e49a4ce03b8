"""The demo's three MCP servers: what an agent reaches through Tether's gateway.

Each runs as a process of its own, on the official ``mcp`` SDK's low-level server, over
streamable HTTP at ``http://127.0.0.1:PORT/mcp`` (loopback only)::

    python -m tether.cli.demo.servers support-kb --port P
    python -m tether.cli.demo.servers accounts --port P --issuer ISSUER --jwks URL [--audience AUD]
    python -m tether.cli.demo.servers bank --port P --issuer ISSUER --jwks URL [--audience AUD]
                                       [--ledger FILE]

Each prints one line, ``ready``, on its standard output once it listens, so a parent waits for
that line (a server that cannot start exits non-zero without printing it).

* ``support-kb`` — a support knowledge base: ``search_faq(question)`` reads the ``faq`` table of
  a PostgreSQL database through the just-in-time role whose URI the gateway injects on each call
  (``X-Database-Url``). The server holds no database credential of its own.
* ``accounts`` — customer accounts: ``get_account(customer)`` serves a person's own account, and
  only to an agent acting for that person.
* ``bank`` — ``balance()`` and ``transfer(amount, to)`` on accounts kept in memory; each transfer
  is also written to the ``--ledger`` file, so the demo can check what really happened.

Why ``accounts`` and ``bank`` verify Tether's token themselves: a resource server trusts only
what it can verify. The agent's own token never reaches them — the gateway keeps it and injects
a credential of its own, a short-lived downstream access token (RFC 9068) for this server's
audience, whose ``sub`` is the person the agent acts for and whose ``act`` names the agent
instance (RFC 8693 §4.1). The server checks its signature against Tether's JWKS, its ``typ``,
issuer, audience and lifetime, then decides from ``sub`` alone whose data the call may touch: a
prompt-injected "read bob's account" from an agent acting for alice is refused here too, even if
every policy upstream let it through (:mod:`._verifier`). Like a third party's service, the
servers use no part of Tether's product: only the MCP SDK, ``joserfc``, ``httpx`` and
``psycopg``.

Example::

    >>> eur(Decimal("2340.5"))
    '2,340.50 EUR'
    >>> best_match("When are you open?", [("How do I get a refund?", "Within 30 days."),
    ...                                   ("What are your opening hours?", "9 to 5.")])
    ('What are your opening hours?', '9 to 5.')
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import mcp_types as types
import psycopg
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server

from tether.cli.demo._verifier import (
    GATEWAY_ONLY,
    NO_PERSON,
    Headers,
    JwksUnavailable,
    TokenVerifier,
    ToolError,
)

__all__ = [
    "ACCOUNTS",
    "ACCOUNTS_AUDIENCE",
    "BANK_AUDIENCE",
    "GATEWAY_ONLY",
    "HOST",
    "NO_PERSON",
    "Account",
    "Bank",
    "JwksUnavailable",
    "Movement",
    "TokenVerifier",
    "ToolError",
    "accounts_server",
    "bank_server",
    "best_match",
    "eur",
    "main",
    "serve",
    "support_kb_server",
]

HOST = "127.0.0.1"
ACCOUNTS_AUDIENCE = "urn:tether-demo:accounts"
BANK_AUDIENCE = "urn:tether-demo:bank"
MAX_DATABASE_URL = 2048
MAX_ARGUMENT = 256
MAX_AMOUNT = Decimal(1_000_000_000)


def eur(amount: Decimal, *, signed: bool = False) -> str:
    """``amount`` with two decimals and thousands separators: ``2,340.50 EUR``."""
    return f"{amount:{'+' if signed else ''},.2f} EUR"


# -- tools on the low-level server -----------------------------------------------------------

Arguments = Mapping[str, Any]
Handler = Callable[[Headers, Arguments], Awaitable[types.CallToolResult]]


@dataclass(frozen=True, slots=True)
class _Tool:
    definition: types.Tool
    handler: Handler


def _tool(
    name: str,
    description: str,
    handler: Handler,
    *,
    arguments: Mapping[str, str] = MappingProxyType({}),
    destructive: bool = False,
) -> _Tool:
    """A tool whose ``arguments`` (name → JSON type) are all required; read-only unless
    ``destructive``."""
    schema = {
        "type": "object",
        "properties": {arg: {"type": kind} for arg, kind in arguments.items()},
        "required": list(arguments),
        "additionalProperties": False,
    }
    hints = types.ToolAnnotations(read_only_hint=not destructive, destructive_hint=destructive)
    definition = types.Tool(
        name=name, description=description, input_schema=schema, annotations=hints
    )
    return _Tool(definition=definition, handler=handler)


def _result(text: str, structured: dict[str, Any] | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], structured_content=structured
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _server(name: str, tools: Sequence[_Tool]) -> Server[Any]:
    """A low-level server listing ``tools`` and calling them with the HTTP request's headers."""
    by_name = {tool.definition.name: tool for tool in tools}

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.definition for tool in tools])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            return _error(f"no tool {params.name!r}")
        headers: Headers = getattr(ctx.request, "headers", None) or {}
        try:
            return await tool.handler(headers, params.arguments or {})
        except ToolError as error:
            return _error(str(error))

    return Server(name, version="1", on_list_tools=list_tools, on_call_tool=call_tool)


def _text_argument(arguments: Arguments, name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ARGUMENT:
        raise ToolError(f"{name} must be a non-empty string of at most {MAX_ARGUMENT} characters")
    return value


def _amount_argument(arguments: Arguments, name: str) -> Decimal:
    value = arguments.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ToolError(f"{name} must be a number")
    if not 0 < value <= MAX_AMOUNT:
        raise ToolError(f"{name} must be more than 0 and at most {eur(MAX_AMOUNT)}")
    amount = Decimal(str(value))
    if amount != amount.quantize(Decimal("0.01")):
        raise ToolError(f"{name} must be in cents (two decimals at most)")
    return amount


def serve(server: Server[Any], *, port: int) -> None:
    """Serve ``server`` over streamable HTTP at ``http://127.0.0.1:port/mcp`` until SIGINT or
    SIGTERM, printing ``ready`` once it listens."""
    app = server.streamable_http_app(host=HOST)
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning")
    asyncio.run(_serve(uvicorn.Server(config)))


async def _serve(server: uvicorn.Server) -> None:
    task = asyncio.create_task(server.serve())
    # uvicorn has no "started" event to wait on: poll its flag, as the gateway's tests do.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        print("ready", flush=True)
    await task


# -- support-kb: the FAQ through the gateway's just-in-time PostgreSQL role ------------------


def _words(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s]", "", text.lower()).split())


def best_match(question: str, faq: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The FAQ row (question, answer) whose question shares the most words with ``question``
    (the first of equals); None if none shares a word."""
    asked = _words(question)
    best, shared = None, 0
    for row in faq:
        if (count := len(asked & _words(row[0]))) > shared:
            best, shared = row, count
    return best


def _redact(message: str, url: str) -> str:
    """The first line of ``message`` with the URI and its password (as written and decoded)
    taken out: libpq quotes bits of a connection string it cannot parse."""
    try:
        password = urlsplit(url).password or ""
    except ValueError:
        password = ""
    line = (message.strip().splitlines() or ["database error"])[0]
    for secret in sorted({url, password, unquote(password)} - {""}, key=len, reverse=True):
        line = line.replace(secret, "***")
    return line


def _read_faq(url: str) -> tuple[str, list[tuple[str, str]]]:
    """Who the database says we are, and the FAQ (blocking: run in a worker thread)."""
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        user = conn.execute("SELECT current_user").fetchone()
        rows = conn.execute("SELECT question, answer FROM faq ORDER BY id LIMIT 1000").fetchall()
    return str(user[0] if user else ""), [(str(q), str(a)) for q, a in rows]


async def _search_faq(headers: Headers, arguments: Arguments) -> types.CallToolResult:
    question = _text_argument(arguments, "question")
    url = headers.get("x-database-url", "")
    if not url:
        raise ToolError(f"no database credential: {GATEWAY_ONLY}")
    if len(url) > MAX_DATABASE_URL or not url.startswith(("postgresql://", "postgres://")):
        raise ToolError("the database credential is not a postgresql:// URI")
    try:
        user, faq = await anyio.to_thread.run_sync(functools.partial(_read_faq, url))
    except (psycopg.Error, ValueError, OSError) as error:
        raise ToolError(_redact(str(error), url)) from None
    found = best_match(question, faq)
    if found is None:
        return _result("no answer in the FAQ")
    matched, answer = found
    # Whether any bearer token reached this server (the gateway sends none here: an agent's
    # token passed through would show), for the demo to check.
    bearer = "authorization" in headers
    return _result(answer, {"answer": answer, "matched": matched, "read_as": user,
                            "bearer_seen": bearer})  # fmt: skip


def support_kb_server() -> Server[Any]:
    """The support knowledge base: ``search_faq(question)``."""
    search = _tool(
        "search_faq",
        "Answer a customer's question from the support FAQ.",
        _search_faq,
        arguments={"question": "string"},
    )
    return _server("support-kb", [search])


# -- accounts and bank: a person's own data ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Movement:
    date: str
    label: str
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {"date": self.date, "label": self.label, "amount": float(self.amount)}


@dataclass(frozen=True, slots=True)
class Account:
    holder: str
    iban: str
    balance: Decimal
    movements: tuple[Movement, ...]


ACCOUNTS: Mapping[str, Account] = MappingProxyType({
    "alice": Account(holder="Alice Martin", iban="DE89 3704 0044 0532 0130 00",
                     balance=Decimal("2340.50"), movements=(
                         Movement("2025-06-02", "Salary, Acme Corp", Decimal("3100.00")),
                         Movement("2025-06-03", "Rent, June", Decimal("-1150.00")),
                         Movement("2025-06-05", "Grocer's, Rue Haute", Decimal("-84.20")))),
    "bob": Account(holder="Bob Keller", iban="GB82 WEST 1234 5698 7654 32",
                   balance=Decimal("18200.00"), movements=(
                       Movement("2025-05-28", "Invoice 2025-041 paid", Decimal("6400.00")),
                       Movement("2025-06-01", "Car lease", Decimal("-489.00")),
                       Movement("2025-06-04", "Flight to Lisbon", Decimal("-312.75")))),
})  # fmt: skip


def _account_result(customer: str, account: Account) -> types.CallToolResult:
    lines = [
        f"holder: {account.holder} ({customer})",
        f"account: {account.iban}",
        f"balance: {eur(account.balance)}",
        "last transactions:",
        *(f"  {m.date}  {m.label}  {eur(m.amount, signed=True)}" for m in account.movements[-3:]),
    ]
    structured = {
        "customer": customer,
        "holder": account.holder,
        "account": account.iban,
        "balance": float(account.balance),
        "currency": "EUR",
        "transactions": [m.to_json() for m in account.movements[-3:]],
    }
    return _result("\n".join(lines), structured)


def accounts_server(verifier: TokenVerifier) -> Server[Any]:
    """Customer accounts: ``get_account(customer)``, for the person the token acts for."""

    async def get_account(headers: Headers, arguments: Arguments) -> types.CallToolResult:
        person = await verifier.person(headers)
        customer = _text_argument(arguments, "customer").strip().lower()
        if customer != person:
            raise ToolError(
                f"refused: this request acts for {person}; "
                f"{customer}'s account is not theirs to read"
            )
        account = ACCOUNTS.get(person)
        if account is None:
            raise ToolError(f"no account for {person}")
        return _account_result(person, account)

    tool = _tool(
        "get_account",
        "A customer's account: holder, number, balance and last transactions.",
        get_account,
        arguments={"customer": "string"},
    )
    return _server("accounts", [tool])


class Bank:
    """Balances in memory; a transfer is checked and applied in one step (no ``await``)."""

    def __init__(self, balances: Mapping[str, Decimal]) -> None:
        self._balances = dict(balances)

    @classmethod
    def demo(cls) -> Bank:
        """Alice's and Bob's balances of :data:`ACCOUNTS`, and Carol's."""
        balances = {name: account.balance for name, account in ACCOUNTS.items()}
        return cls(balances | {"carol": Decimal("615.00")})

    def balance(self, name: str) -> Decimal:
        if name not in self._balances:
            raise ToolError(f"no account for {name} at this bank")
        return self._balances[name]

    def transfer(self, *, sender: str, to: str, amount: Decimal) -> Decimal:
        """Move ``amount`` from ``sender`` to ``to``; the sender's new balance."""
        balance = self.balance(sender)
        self.balance(to)
        if to == sender:
            raise ToolError("a transfer goes to another account than the sender's")
        if amount > balance:
            raise ToolError(f"insufficient funds: {sender}'s balance is {eur(balance)}")
        self._balances[sender] = balance - amount
        self._balances[to] += amount
        return self._balances[sender]


async def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    async with await anyio.open_file(path, "a", encoding="utf-8") as file:
        await file.write(json.dumps(record) + "\n")


def bank_server(verifier: TokenVerifier, *, bank: Bank, ledger: Path | None = None) -> Server[Any]:
    """The bank: ``balance()`` and ``transfer(amount, to)`` from the account of the person the
    token acts for; each transfer also appended to ``ledger`` as a JSON line."""

    async def balance(headers: Headers, arguments: Arguments) -> types.CallToolResult:
        person = await verifier.person(headers)
        value = bank.balance(person)
        return _result(f"{person}'s balance is {eur(value)}", {
            "account": person, "balance": float(value)
        })  # fmt: skip

    async def transfer(headers: Headers, arguments: Arguments) -> types.CallToolResult:
        person = await verifier.person(headers)
        amount = _amount_argument(arguments, "amount")
        to = _text_argument(arguments, "to").strip().lower()
        left = bank.transfer(sender=person, to=to, amount=amount)
        moved = {"from": person, "to": to, "amount": float(amount)}
        if ledger is not None:
            await _append_line(ledger, moved)
        text = f"moved {eur(amount)} from {person} to {to}; {person}'s balance is now {eur(left)}"
        return _result(text, moved | {"balance": float(left)})

    return _server("bank", [
        _tool("balance", "The balance of your account.", balance),
        _tool("transfer", "Move money from your account to another one.", transfer,
              arguments={"amount": "number", "to": "string"}, destructive=True),
    ])  # fmt: skip


# -- the command line --------------------------------------------------------------------------


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError("a port is 1 to 65535")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tether.cli.demo.servers",
        description="One of the demo's MCP servers, on 127.0.0.1 (prints 'ready' once it listens).",
    )
    servers = parser.add_subparsers(dest="server", required=True)
    kb = servers.add_parser("support-kb", help="the support FAQ, read through X-Database-Url")
    kb.add_argument("--port", type=_port, required=True)
    for name, audience in (("accounts", ACCOUNTS_AUDIENCE), ("bank", BANK_AUDIENCE)):
        sub = servers.add_parser(name, help=f"the {name} server, verifying Tether's tokens")
        sub.add_argument("--port", type=_port, required=True)
        sub.add_argument("--issuer", required=True, help="Tether's issuer URL (iss)")
        sub.add_argument("--jwks", required=True, help="Tether's JWKS URL (http or https)")
        sub.add_argument("--audience", default=audience, help=f"aud (default {audience})")
        if name == "bank":
            sub.add_argument("--ledger", type=Path, help="append each transfer here (JSON lines)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server ``argv`` names until it is stopped; 1 if Tether's JWKS is unreachable."""
    args = _parser().parse_args(argv)
    if args.server == "support-kb":
        serve(support_kb_server(), port=args.port)
        return 0
    if urlsplit(args.jwks).scheme not in {"http", "https"}:
        print("--jwks must be an http(s) URL", file=sys.stderr)
        return 2
    try:
        verifier = TokenVerifier.fetch(
            jwks_url=args.jwks, issuer=args.issuer, audience=args.audience
        )
    except JwksUnavailable as error:
        print(f"cannot read Tether's JWKS: {error}", file=sys.stderr)
        return 1
    if args.server == "accounts":
        serve(accounts_server(verifier), port=args.port)
    else:
        serve(bank_server(verifier, bank=Bank.demo(), ledger=args.ledger), port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
