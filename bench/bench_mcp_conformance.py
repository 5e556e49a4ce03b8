"""The official MCP conformance suite against an MCP server directly and through Tether's gateway:
the gateway may not lose a scenario the server passes, and must pass DNS-rebinding protection.

* The server under test is ``tests/support/mcp_conformance_server.py``: the suite's fixtures
  (``test_*`` tools, resources, prompts, completion) on the official ``mcp`` SDK.
* The suite (``@modelcontextprotocol/conformance`` 0.1.11, installed by ``make bench`` into
  ``.bench-peers/``) runs every scenario of its active suite against the server's URL, then
  against ``/mcp/everything`` of a real ``tether serve`` where that server is registered, with a
  policy that permits the suite's agent every tool, resource and prompt of it.
* The suite cannot send a bearer token, so it reaches the gateway through a small front (this
  file run as ``front``) that adds the agent's ``Authorization`` header and passes everything
  else through as it came — the ``Host`` and ``Origin`` headers included, so the DNS-rebinding
  scenario reaches the gateway unmasked.

A scenario passes when none of its checks failed. The report lists every scenario with both
results, names each one the gateway loses and says whether it passes the DNS-rebinding
scenario (a benchmark reports; like the others it exits 0 when it could measure). Bounded:
every scenario has the suite's own timeout.

Run: ``make bench`` or ``.venv/bin/python bench/bench_mcp_conformance.py [--quick]``
(``--quick``: only the ``QUICK`` scenarios, initialisation and DNS-rebinding protection).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

import _report
from _agents import agent_token
from _procs import free_port, running, wait_listening, wait_ready

ROOT = "tto_" + "c" * 32
HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
FIXTURES = REPO / "tests" / "support" / "mcp_conformance_server.py"
PEERS = REPO / ".bench-peers"
SUITE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.1.11"
POLICY = """
@id("conformance-bot-uses-everything")
permit (principal == Tether::Agent::"conformance-bot", action,
        resource in Tether::McpServer::"everything");
"""
DNS_REBINDING = "dns-rebinding-protection"
#: The scenarios ``--quick`` runs, one suite invocation each.
QUICK = ("server-initialize", DNS_REBINDING)


def _suite() -> list[str]:
    """The suite's command line; exits saying how to install it when missing."""
    package = PEERS / "node_modules" / SUITE / "package.json"
    try:
        version = json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        version = None
    if version != SUITE_VERSION:
        raise SystemExit(f"{SUITE}@{SUITE_VERSION} is not installed in {PEERS}: run `make bench`")
    return ["npx", "--prefix", str(PEERS), "conformance"]


def _results(url: str, out: Path, *, quick: bool = False) -> dict[str, bool]:
    """Every active scenario's result against ``url`` (``quick``: the ``QUICK`` ones):
    passed or not."""
    env = dict(os.environ, npm_config_loglevel="error")
    chosen = [["--scenario", s] for s in QUICK] if quick else [["--suite", "active"]]
    for which in chosen:
        argv = [*_suite(), "server", "--url", url, *which, "-o", str(out)]
        subprocess.run(argv, env=env, cwd=PEERS, capture_output=True, timeout=900, check=False)
    found: dict[str, bool] = {}
    for checks in sorted(out.glob("server-*/checks.json")):
        named = re.match(r"server-(.+)-\d{4}-\d{2}-\d{2}T", checks.parent.name)
        if named is None:
            continue
        scenario = named.group(1)
        statuses = [c.get("status") for c in json.loads(checks.read_text())]
        found[scenario] = bool(statuses) and "FAILURE" not in statuses
    if not found:
        raise SystemExit(f"the suite wrote no results for {url}")
    return found


# -- the header-adding front (this file, run as ``front``) ------------------------------------


def _front(port: int, target: str, token: str) -> None:
    """Pass every request to ``target`` with the agent's bearer, everything else as it came."""
    import uvicorn  # noqa: PLC0415 - only the front needs it
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import StreamingResponse  # noqa: PLC0415

    client = httpx.AsyncClient(timeout=120)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        headers = [(k, v) for k, v in request.headers.items() if k != "authorization"]
        headers.append(("authorization", f"Bearer {token}"))
        upstream = client.build_request(request.method, target, headers=headers,
                                         content=await request.body())  # fmt: skip
        answer = await client.send(upstream, stream=True)
        kept = {k: v for k, v in answer.headers.items()
                if k not in {"content-length", "transfer-encoding", "connection"}}  # fmt: skip
        response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                                     headers=kept, background=None)  # fmt: skip
        await response(scope, receive, send)
        await answer.aclose()

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- Tether ------------------------------------------------------------------------------------


def _prepare(addr: str, fixtures: str) -> str:
    """The fixture server registered as ``everything``, its agent and policy: its token."""
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"},
                      timeout=120) as ops:  # fmt: skip
        added = ops.post("/v1/mcp/servers", json={"name": "everything", "url": fixtures})
    if added.status_code != 201:
        raise SystemExit(f"registering the fixture server: {added.status_code} {added.text[:300]}")
    return agent_token(addr, root=ROOT, name="conformance-bot", policy=POLICY,
                       audience=f"{addr}/mcp/everything", instance="conformance-1")  # fmt: skip


@contextmanager
def _everything(tmp: Path) -> Iterator[tuple[str, str]]:
    """The fixture server, and Tether's gateway to it behind the header-adding front."""
    env = dict(os.environ)
    fixtures_port, tether_port, front_port = free_port(), free_port(), free_port()
    fixtures = f"http://127.0.0.1:{fixtures_port}/mcp"
    with ExitStack() as stack:
        argv = [sys.executable, str(FIXTURES), str(fixtures_port)]
        server = stack.enter_context(running(argv, env=env, log=tmp / "fixtures.log"))
        wait_listening(fixtures, server, "the fixture server")
        addr = f"http://127.0.0.1:{tether_port}"
        argv = [sys.executable, "-m", "tether", "serve", "--port", str(tether_port),
                "--data-dir", str(tmp / "tether")]  # fmt: skip
        server = stack.enter_context(running(argv, env=env | {"TETHER_ROOT_TOKEN": ROOT},
                                             log=tmp / "tether.log"))  # fmt: skip
        wait_ready(f"{addr}/readyz", server, "tether serve")
        token = _prepare(addr, fixtures)
        argv = [sys.executable, str(HERE), "front", str(front_port),
                f"{addr}/mcp/everything", token]  # fmt: skip
        server = stack.enter_context(running(argv, env=env, log=tmp / "front.log"))
        wait_listening(f"http://127.0.0.1:{front_port}/mcp", server, "the front")
        yield fixtures, f"http://127.0.0.1:{front_port}/mcp"


def _report_text(direct: dict[str, bool], gateway: dict[str, bool]) -> None:
    lost = sorted(s for s, ok in direct.items() if ok and not gateway.get(s, False))
    print(f"{'scenario':<36}{'direct':>8}{'gateway':>9}")
    for scenario in sorted(direct | gateway):
        marks = ["pass" if r.get(scenario) else "FAIL" for r in (direct, gateway)]
        print(f"{scenario:<36}{marks[0]:>8}{marks[1]:>9}")
    print(f"direct: {sum(direct.values())}/{len(direct)} passed; through the gateway: "
          f"{sum(gateway.values())}/{len(gateway)} passed")  # fmt: skip
    print("scenarios the gateway loses:", ", ".join(lost) or "none")
    rebinding = gateway.get(DNS_REBINDING, False)
    print(f"DNS-rebinding protection through the gateway: {'pass' if rebinding else 'FAIL'}")
    _report.peer("MCP conformance suite", SUITE_VERSION)
    _report.row(area="gateway", path="MCP conformance scenarios passed through the gateway",
                figure=sum(gateway.values()), unit="scenarios", better="higher",
                floor=sum(direct.values()), floor_name="the same server, directly",
                aim=_report.at_least(1, of="floor"),
                note=f"{SUITE}@{SUITE_VERSION}; lost: {', '.join(lost) or 'none'}")  # fmt: skip
    _report.row(area="gateway", path="DNS-rebinding protection through the gateway",
                figure=float(rebinding), unit="(1 = pass)", better="higher",
                aim=_report.at_least(1))  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "front":
        _front(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    quick = "--quick" in sys.argv[1:]
    _suite()
    with tempfile.TemporaryDirectory() as tmp, _everything(Path(tmp)) as (direct, gateway):
        results = (_results(direct, Path(tmp) / "direct", quick=quick),
                   _results(gateway, Path(tmp) / "gw", quick=quick))  # fmt: skip
    _report_text(*results)


if __name__ == "__main__":
    main()
