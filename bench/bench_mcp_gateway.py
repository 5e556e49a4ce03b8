"""The MCP gateway: the latency it adds to a tool call, and its throughput, in the same run as a
bare ``mcp`` SDK pass-through proxy, the upstream called directly, and IBM ContextForge.

Every path calls the same upstream MCP server (this file run as ``upstream``: the official
SDK's low-level server with one tool, ``add``, over streamable HTTP on 127.0.0.1) with the
official ``mcp`` client, over HTTP on loopback:

* **direct** — the client talks to the upstream;
* **bare proxy** — the floor: this file run as ``proxy``, a low-level SDK server whose
  handlers forward ``tools/list`` and ``tools/call`` to one kept upstream client session, with
  no authentication, no check and no record, answering each request with one JSON body (the
  SDK's ``json_response``), as Tether answers a client that cannot be asked for input;
* **checked proxy** — the floor of a gateway that checks: the bare proxy whose ``tools/call``
  first does what a check of a cached token cannot skip, with the bare libraries —
  ``cedarpy`` decides ``call_tool`` with Tether's schema and policies (the entities parsed per
  call) and ``sqlite3`` appends the decision as canonical JSON in a sha256 chain and commits
  it (WAL, ``synchronous=FULL``) before the call is forwarded (latency only);
* **Tether** — a real ``tether serve`` (SQLite, ``synchronous=FULL``) with the upstream
  registered at ``/mcp/calc`` and a policy that permits ``add`` to the agent: every call is
  authenticated (the agent's JWT-SVID for the gateway's resource, the same token throughout: a
  verified-token cache hit), checked against the pinned listing, decided, recorded durably
  **before** it is forwarded, and forwarded on a kept upstream session;
* **ContextForge** 1.1.0 (``mcp-contextforge-gateway``, installed by ``make bench`` into
  ``.bench-peers/``; Python ≥ 3.12) with a virtual server exposing only ``add`` in front of the
  same upstream (see ``bench/_contextforge.py``) — skipped, and said so, when not installed.

Latency: one client session per path, ``WARM_UP`` calls, then ``CALLS`` sequential calls per
round, ``ROUNDS`` rounds alternating the paths; the figures are medians over all calls. Every
result is checked (``2 + 3`` is ``5``). Throughput: ``SESSIONS`` client sessions in one process
calling as fast as answers come, for ``LOAD_SECONDS``. The issue's aims: Tether adds ≤ 0.5 ms
p50 over the bare proxy and ≤ 2 ms p50 over the direct call, adds ≤ 1/50 of what ContextForge
adds, at ≥ 20× its throughput. What the checked proxy adds over the bare one is the floor of
the first aim, and what it adds over the direct call the floor of the next two, for any
gateway that checks each call durably with these libraries. The bench process, the servers and
the upstream share the machine's cores. Bounded: every load stops by itself.

The growth curve: latency against concurrent agent sessions (``AGENTS``: 1, 4, 16, 64; one
agent's token in each, a session each, all calling back to back for ``CURVE_SECONDS``), p50 of
every call, for the bare proxy, Tether and ContextForge. A call that fails (an overloaded
server sheds with 503) is counted and shown, not timed.

Run: ``make bench`` or ``.venv/bin/python bench/bench_mcp_gateway.py [CALLS] [--quick]``
(``--quick``: one second per load instead of ``LOAD_SECONDS`` and ``CURVE_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cedarpy
import httpx
import httpx2
import mcp_types as types
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel.server import Server

import _report
from _agents import agent_token
from _contextforge import CONTEXTFORGE_VERSION, running_contextforge
from _floors import agent_request
from _procs import free_port, running, wait_listening, wait_ready
from tether.policy._cedar import default_policies, schema_text

ROOT = "tto_" + "m" * 32
CALLS = 400
WARM_UP = 50
ROUNDS = 3
SESSIONS = 8
LOAD_SECONDS = 5.0
#: Concurrent agent sessions for the latency curve, and how long each level calls.
AGENTS = (1, 4, 16, 64)
CURVE_SECONDS = 3.0
POLICY = """
@id("calc-bot-adds")
permit (principal == Tether::Agent::"calc-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"calc/add");
"""
HERE = Path(__file__).resolve()


# -- the upstream and the bare proxy (this file, run as a server) ------------------------------


def _upstream_server() -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {"a": {"type": "number"},
                                                   "b": {"type": "number"}}}  # fmt: skip
        return types.ListToolsResult(
            tools=[types.Tool(name="add", description="Add two numbers.", input_schema=schema)]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        args = params.arguments or {}
        text = str(args.get("a", 0) + args.get("b", 0))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server("bench-upstream", on_list_tools=list_tools, on_call_tool=call_tool)


class _Check:
    """A check of the bare libraries: ``cedarpy`` decides the call, ``sqlite3`` makes the
    decision's record durable in a sha256 chain (one commit per call)."""

    #: calc-bot, its tool and the tool's server, as Tether's checkpoint hands them to Cedar.
    ENTITIES: ClassVar[list[dict[str, Any]]] = [
        {"uid": {"type": "Tether::Agent", "id": "calc-bot"},
         "attrs": {"name": "calc-bot", "state": "active", "risk_tier": "low", "risk_score": 10,
                   "owners": [], "tools": ["add"], "resources": [], "data_classes": [],
                   "external_connections": "none", "autonomy": "supervised",
                   "may_call_agents": False},
         "parents": []},
        {"uid": {"type": "Tether::Tool", "id": "calc/add"},
         "attrs": {"name": "add", "data_class": "internal", "state_changing": True},
         "parents": [{"type": "Tether::McpServer", "id": "calc"}]},
        {"uid": {"type": "Tether::McpServer", "id": "calc"}, "attrs": {"name": "calc"},
         "parents": []},
    ]  # fmt: skip

    def __init__(self, db: str) -> None:
        self.schema = cedarpy.Schema.from_str(schema_text())
        self.policies = cedarpy.PolicySet.from_str(default_policies() + POLICY)
        self.db = sqlite3.connect(db, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, entry, chain)")
        self.chain = hashlib.sha256(b"checked proxy").digest()

    def allows(self, tool: str, arguments: dict[str, Any]) -> bool:
        entities = cedarpy.Entities.from_json_str(json.dumps(self.ENTITIES), schema=self.schema)
        given = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
        call = {"action": "call_tool", "resource": f"calc/{tool}", "arguments": arguments}
        digest = hashlib.sha256(orjson.dumps(call, option=orjson.OPT_SORT_KEYS)).hexdigest()
        request = agent_request(
            "calc-bot", "call_tool", ("Tool", f"calc/{tool}"),
            call_digest=f"sha256:{digest}", arguments=given.decode(),
        )  # fmt: skip
        result = cedarpy.is_authorized(request, self.policies, entities, self.schema)
        record = {"type": "decision", "request": request, "effect": str(result.decision),
                  "reasons": list(result.diagnostics.reasons)}  # fmt: skip
        entry = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        self.chain = hashlib.sha256(b"\x00" + self.chain + entry).digest()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO audit (entry, chain) VALUES (?, ?)", (entry, self.chain))
        self.db.execute("COMMIT")
        return bool(result.allowed)


def _proxy_server(upstream_url: str, db: str | None = None) -> Server[Any]:
    """The floor: forward, nothing else, on one kept upstream session; with ``db``, each call
    checked by the bare libraries first (the decision recorded in ``db``)."""
    check = _Check(db) if db is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(server: Server[Any]) -> AsyncIterator[dict[str, Client]]:
        async with Client(upstream_url, cache=None) as upstream:
            yield {"upstream": upstream}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        result: types.ListToolsResult = await ctx.lifespan_context["upstream"].list_tools()
        return result

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if check is not None and not check.allows(params.name, params.arguments or {}):
            refused = types.TextContent(type="text", text="refused")
            return types.CallToolResult(content=[refused], is_error=True)
        upstream: Client = ctx.lifespan_context["upstream"]
        result: types.CallToolResult = await upstream.session.call_tool(
            params.name, params.arguments
        )
        return result

    return Server("bare-proxy", lifespan=lifespan, on_list_tools=list_tools,
                  on_call_tool=call_tool)  # fmt: skip


def _serve(server: Server[Any], port: int, *, json_response: bool) -> None:
    import uvicorn  # noqa: PLC0415 - only the server modes need it

    app = server.streamable_http_app(host="127.0.0.1", json_response=json_response)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- the clients -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    token: str | None = None
    #: ContextForge names the upstream's tools ``<gateway>-<tool>``.
    tool: str = "add"
    #: Measured for its latency alone (no throughput, no curve).
    latency_only: bool = False


@contextlib.asynccontextmanager
async def _session(target: Target) -> AsyncIterator[Client]:
    """A session in the handshake era (2025-11-25), the one all four paths serve fastest."""
    headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        transport = streamable_http_client(target.url, http_client=http)
        async with Client(transport, cache=None, mode="legacy") as client:
            await client.list_tools()
            yield client


async def _call(client: Client, tool: str) -> None:
    result = await client.call_tool(tool, {"a": 2, "b": 3})
    text = "".join(getattr(part, "text", "") for part in result.content)
    if result.is_error or text != "5":
        raise SystemExit(f"a call answered {text!r} (is_error={result.is_error})")


async def _latencies(client: Client, tool: str, n: int) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        await _call(client, tool)
        times.append(time.perf_counter() - start)
    return times


async def _throughput(target: Target, seconds: float) -> float:
    """Calls per second with ``SESSIONS`` sessions calling back to back for ``seconds``."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        async with _session(target) as client:
            await _latencies(client, target.tool, 5)
            while time.monotonic() < stop:
                await _call(client, target.tool)
                done += 1

    begun = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(SESSIONS)))
    return done / (time.monotonic() - begun)


async def _crowd(target: Target, agents: int, seconds: float) -> tuple[list[float], int]:
    """``agents`` sessions calling back to back for ``seconds``: every call's latency (s)
    and how many failed."""
    times: list[float] = []
    failed = 0
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(_session(target)) for _ in range(agents)]
        for client in clients:
            await _latencies(client, target.tool, 2)
        stop = time.monotonic() + seconds

        async def worker(client: Client) -> None:
            nonlocal failed
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    await _call(client, target.tool)
                except (Exception, SystemExit):
                    failed += 1
                    continue
                times.append(time.perf_counter() - began)

        await asyncio.gather(*(worker(c) for c in clients))
    return times, failed


async def _curve(targets: list[Target], seconds: float) -> dict[str, list[tuple[int, float]]]:
    """p50 latency (ms) against concurrent agent sessions, per path (the direct call aside)."""
    out: dict[str, list[tuple[int, float]]] = {}
    print(f"latency against concurrent agent sessions ({seconds:.0f} s each)")
    print(f"{'path':<14}{'agents':>7}{'p50 ms':>9}{'p99 ms':>9}{'calls/s':>10}{'failed':>8}")
    for target in targets:
        if target.name == "direct":
            continue
        for agents in AGENTS:
            times, failed = await _crowd(target, agents, seconds)
            if times:
                out.setdefault(target.name, []).append((agents, _pct(times, 0.5)))
            p50, p99 = (_pct(times, 0.5), _pct(times, 0.99)) if times else (0.0, 0.0)
            print(f"{target.name:<14}{agents:>7}{p50:>9.2f}{p99:>9.2f}"
                  f"{len(times) / seconds:>10,.0f}{failed:>8}")  # fmt: skip
    return out


async def _measure(targets: list[Target], calls: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    async with contextlib.AsyncExitStack() as stack:
        clients = {t.name: await stack.enter_async_context(_session(t)) for t in targets}
        for target in targets:
            await _latencies(clients[target.name], target.tool, WARM_UP)
        for _ in range(ROUNDS):
            for target in targets:
                times[target.name] += await _latencies(clients[target.name], target.tool, calls)
    return times


# -- Tether ------------------------------------------------------------------------------------


def _prepare_tether(addr: str, upstream_url: str) -> str:
    """The upstream registered as ``calc``, calc-bot with a key and a policy: its token."""
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"},
                      timeout=60) as ops:  # fmt: skip
        ops.post("/v1/mcp/servers", json={"name": "calc", "url": upstream_url}).raise_for_status()
    return agent_token(addr, root=ROOT, name="calc-bot", policy=POLICY, tools=("add",),
                       audience=f"{addr}/mcp/calc")  # fmt: skip


@contextlib.contextmanager
def _servers(tmp: Path) -> Iterator[tuple[str, str, str, str, str]]:
    """The upstream, the bare and the checked proxies and Tether, running: their URLs and
    Tether's token."""
    env = dict(os.environ)
    up_port, proxy_port, checked_port, tether_port = (free_port() for _ in range(4))
    upstream = f"http://127.0.0.1:{up_port}/mcp"
    me = [sys.executable, str(HERE)]
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running([*me, "upstream", str(up_port)], env=env,
                                             log=tmp / "upstream.log"))  # fmt: skip
        wait_listening(upstream, server, "the upstream")
        proxies = []
        checked = [str(tmp / "checked.db")]
        for port, extra, name in ((proxy_port, [], "bare"), (checked_port, checked, "checked")):
            url = f"http://127.0.0.1:{port}/mcp"
            server = stack.enter_context(running([*me, "proxy", str(port), upstream, *extra],
                                                 env=env, log=tmp / f"{name}.log"))  # fmt: skip
            wait_listening(url, server, f"the {name} proxy")
            proxies.append(url)
        addr = f"http://127.0.0.1:{tether_port}"
        tether_env = env | {"TETHER_ROOT_TOKEN": ROOT, "TETHER_ISSUER": addr}
        argv = [sys.executable, "-m", "tether", "serve", "--port", str(tether_port),
                "--data-dir", str(tmp / "tether")]  # fmt: skip
        server = stack.enter_context(running(argv, env=tether_env, log=tmp / "tether.log"))
        wait_ready(f"{addr}/readyz", server, "tether serve")
        yield upstream, proxies[0], proxies[1], addr, _prepare_tether(addr, upstream)


# -- the report --------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _report_text(times: dict[str, list[float]], rates: dict[str, float]) -> None:
    print(f"{'path':<14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'calls/s':>10}")
    for name, values in times.items():
        rate = rates.get(name)
        shown = f"{rate:>10,.0f}" if rate is not None else f"{'-':>10}"
        print(f"{name:<14}{_pct(values, .5):>9.2f}{_pct(values, .95):>9.2f}"
              f"{_pct(values, .99):>9.2f}{shown}")  # fmt: skip
    p50 = {name: statistics.median(v) * 1000 for name, v in times.items()}
    over_proxy = p50["Tether"] - p50["bare proxy"]
    over_direct = p50["Tether"] - p50["direct"]
    print(f"Tether adds {over_proxy:.2f} ms p50 over the bare proxy (aim <= 0.5 ms), "
          f"{over_direct:.2f} ms over the direct call (aim <= 2 ms)")  # fmt: skip
    checked = p50["checked proxy"]
    print(f"the floor, the checked proxy, adds {checked - p50['bare proxy']:.2f} ms p50 over the "
          f"bare proxy, {checked - p50['direct']:.2f} ms over the direct call")  # fmt: skip
    if "ContextForge" in p50:
        theirs = p50["ContextForge"] - p50["direct"]
        print(f"ContextForge adds {theirs:.2f} ms p50 over the direct call; Tether adds "
              f"{over_direct / theirs:.3f}x that (aim <= 0.020x), the checked proxy "
              f"{(checked - p50['direct']) / theirs:.3f}x")  # fmt: skip
        if rates["ContextForge"]:
            ratio = rates["Tether"] / rates["ContextForge"]
            print(f"Tether's throughput is {ratio:.1f}x ContextForge's (aim >= 20x)")
        else:  # a --quick window can end before its first answer
            print("ContextForge answered no call in the throughput window: no ratio")
    else:
        print("ContextForge: not installed (make bench installs it when Python >= 3.12 exists)")


async def _run(
    targets: list[Target], calls: int, *, quick: bool
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, list[tuple[int, float]]]]:
    times = await _measure(targets, calls)
    seconds = 1.0 if quick else LOAD_SECONDS
    loaded = [t for t in targets if not t.latency_only]
    rates = {t.name: await _throughput(t, seconds) for t in loaded}
    curves = await _curve(loaded, 1.0 if quick else CURVE_SECONDS)
    return times, rates, curves


def record(
    times: dict[str, list[float]],
    rates: dict[str, float],
    curves: dict[str, list[tuple[int, float]]],
    contextforge: str | None,
) -> None:
    """The figures, for ``bench/report.py``."""
    _report.peer("IBM ContextForge", contextforge)
    p50 = {name: statistics.median(v) * 1000 for name, v in times.items()}
    cf = "ContextForge" in p50
    peer_name = f"ContextForge {contextforge}" if cf else "ContextForge"
    proxy = "bare mcp SDK proxy"
    _report.row(area="gateway", path="MCP tool call through the gateway: p50",
                figure=p50["Tether"], unit="ms", better="lower", floor=p50["bare proxy"],
                floor_name=proxy, peer=p50.get("ContextForge"), peer_name=peer_name,
                note=f"the direct call (no gateway): {p50['direct']:.2f} ms p50")  # fmt: skip
    checked = "bare proxy checking with cedarpy + sqlite3"
    floor = p50["checked proxy"] - p50["bare proxy"]
    _report.row(area="gateway", path="added p50 over the bare proxy",
                figure=p50["Tether"] - p50["bare proxy"], unit="ms", better="lower",
                floor=floor, floor_name=checked, aim=_report.at_most(0.5),
                note=_below(floor, 0.5, "the floor"))  # fmt: skip
    floor = p50["checked proxy"] - p50["direct"]
    _report.row(area="gateway", path="added p50 over the direct call, against 2 ms",
                figure=p50["Tether"] - p50["direct"], unit="ms", better="lower",
                floor=floor, floor_name=checked, aim=_report.at_most(2.0),
                note=_below(floor, 2.0, "the floor"))  # fmt: skip
    peer = p50["ContextForge"] - p50["direct"] if cf else None
    _report.row(area="gateway", path="added p50 over the direct call",
                figure=p50["Tether"] - p50["direct"], unit="ms", better="lower",
                floor=floor, floor_name=checked, peer=peer, peer_name=peer_name,
                aim=_report.at_most(0.02, of="peer"),
                note=_below(floor, 0.02 * peer, "the floor") if peer else None)  # fmt: skip
    _report.row(area="gateway", path=f"throughput, {SESSIONS} sessions", figure=rates["Tether"],
                unit="calls/s", better="higher", floor=rates["bare proxy"], floor_name=proxy,
                peer=rates.get("ContextForge"), peer_name=peer_name,
                aim=_report.at_least(20, of="peer"))  # fmt: skip
    for name, points in curves.items():
        _report.curve("MCP gateway latency against concurrent agents",
                      x_label="concurrent agent sessions", y_label="p50 ms", points=points,
                      series=name)  # fmt: skip


def _below(floor: float, aim: float, name: str) -> str:
    """Where the floor stands against an aim (``ms``, lower is better)."""
    if floor > aim:
        return f"{name} adds {floor:.2f} ms: the aim ({aim:.2f} ms) is below it here"
    return f"{name} adds {floor:.2f} ms, within the aim ({aim:.2f} ms)"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in {"upstream", "proxy"}:
        serve: Callable[[], Server[Any]] = (
            _upstream_server if sys.argv[1] == "upstream" else lambda: _proxy_server(*sys.argv[3:5])
        )
        _serve(serve(), int(sys.argv[2]), json_response=sys.argv[1] == "proxy")
        return
    quick = "--quick" in sys.argv[1:]
    numbers = [a for a in sys.argv[1:] if a != "--quick"]
    calls = int(numbers[0]) if numbers else CALLS
    version = None
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"{machine}; {calls} calls x {ROUNDS} rounds per path, {SESSIONS} sessions for "
          "throughput")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, _servers(Path(tmp)) as servers:
        up, proxy, checked, addr, token = servers
        targets = [Target("direct", up), Target("bare proxy", proxy),
                   Target("checked proxy", checked, latency_only=True),
                   Target("Tether", f"{addr}/mcp/calc", token)]  # fmt: skip
        with running_contextforge(up, tmp=Path(tmp) / "cf") as cf:
            if cf is not None:
                targets.append(Target("ContextForge", cf.url, cf.token, tool=cf.tool))
                version = CONTEXTFORGE_VERSION
            times, rates, curves = asyncio.run(_run(targets, calls, quick=quick))
    _report_text(times, rates)
    record(times, rates, curves, version)


if __name__ == "__main__":
    main()
