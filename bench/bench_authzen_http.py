"""The AuthZEN endpoint over HTTP on loopback: decisions per second and latency at 16 connections,
against the Cerbos PDP's AuthZEN endpoint in the same run, on an equivalent policy.

* Tether: starts a real ``tether serve`` (uvicorn, SQLite, one worker) on 127.0.0.1, registers
  an agent with a key and a policy, gets the agent's JWT-SVID, then drives
  ``POST /access/v1/evaluation`` with ``wrk`` (2 threads, 16 connections, a fixed time; closed
  loop: each connection sends its next request when the answer arrives). Each request verifies
  the token, reads the agent, decides and records the decision durably before answering.
* Cerbos PDP 0.55.0 (the static binary of the npm package ``@cerbos/cerbos-linux-x64``, installed
  into ``.bench-peers/`` by ``make bench``): started next, on 127.0.0.1 only (HTTP, gRPC and debug
  listeners), telemetry and audit off, disk store in a temporary directory holding one resource
  policy equivalent to Tether's (agent ``faq-bot`` may ``call_tool`` on the tools of MCP server
  ``kb``; any agent that is not active is denied, as Tether's shipped policy says). The same wrk
  load drives its ``/access/v1/evaluation``; Cerbos takes the subject from the request body.

Before timing, each server must allow the request and deny others (Tether: another tool;
Cerbos: another agent, an agent that is not active, a tool of another server). Every timed
answer must be ``{"decision":true}`` with status 200: anything else counts as an error. The
servers run one after the other, each sharing the 2 cores with wrk, and each gets
``WARM_UP`` seconds of the same load before the measured run. The issue's aim for Tether:
>= 1,500 decisions/s with p99 <= 25 ms. Bounded: each load stops by itself after ``SECONDS``.

Run: ``make bench`` or ``.venv/bin/python bench/bench_authzen_http.py [SECONDS]``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

import _report
from _agents import agent_token
from _procs import free_port, running, wait_ready

ROOT = "tto_" + "d" * 32
THREADS = 2
CONNECTIONS = 16
#: Seconds of the same load, not measured, before each measured run (both servers).
WARM_UP = 2
POLICY = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"search_faq");
"""
BODY: dict[str, Any] = {
    "action": {"name": "call_tool", "properties": {"arguments": {"q": "opening hours"}}},
    "resource": {
        "type": "Tool",
        "id": "search_faq",
        "properties": {"name": "search_faq", "data_class": "public", "state_changing": False},
    },
}

CERBOS_VERSION = "0.55.0"
CERBOS_PACKAGE = "@cerbos/cerbos-linux-x64"
PEERS = Path(__file__).resolve().parent.parent / ".bench-peers"
CERBOS_DIR = PEERS / "node_modules" / CERBOS_PACKAGE
#: Tether's policy and the part of its shipped policies that bears on this request, in Cerbos
#: terms: AuthZEN's ``subject.type`` is the Cerbos role, its properties the principal's
#: attributes; the tool's MCP server is an attribute (Cerbos has no entity hierarchy).
CERBOS_POLICY = """\
apiVersion: api.cerbos.dev/v1
resourcePolicy:
  version: default
  resource: Tool
  rules:
    - name: faq-bot-searches
      actions: ["call_tool"]
      effect: EFFECT_ALLOW
      roles: ["agent"]
      condition:
        match:
          all:
            of:
              - expr: request.principal.id == "faq-bot"
              - expr: request.resource.attr.server == "kb"
    - name: forbid-inactive-agent
      actions: ["*"]
      effect: EFFECT_DENY
      roles: ["*"]
      condition:
        match:
          expr: request.principal.attr.state != "active"
"""
CERBOS_CONFIG = """\
server:
  httpListenAddr: "127.0.0.1:{http}"
  grpcListenAddr: "127.0.0.1:{grpc}"
storage:
  driver: disk
  disk:
    directory: "{policies}"
    watchForChanges: false
telemetry:
  disabled: true
audit:
  enabled: false
"""


def _cerbos_body(
    agent: str = "faq-bot", state: str = "active", server: str = "kb"
) -> dict[str, Any]:
    """Tether's request with what Cerbos must be told: the subject and the tool's server."""
    resource = {**BODY["resource"]}
    resource["properties"] = {**resource["properties"], "server": server}
    subject = {
        "type": "agent",
        "id": agent,
        "properties": {"name": agent, "state": state, "risk_tier": "low"},
    }
    return {"subject": subject, "action": BODY["action"], "resource": resource}


def _cerbos_binary() -> Path:
    """The Cerbos binary in ``.bench-peers/``; exits saying how to install it when missing."""
    binary = CERBOS_DIR / "cerbos-linux-x64"
    try:
        version = json.loads((CERBOS_DIR / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        version = None
    if version != CERBOS_VERSION or not os.access(binary, os.X_OK):
        raise SystemExit(
            f"the Cerbos PDP {CERBOS_VERSION} is not installed in {PEERS}: run `make bench`, or\n"
            f"  npm install --prefix .bench-peers {CERBOS_PACKAGE}@{CERBOS_VERSION}"
        )
    return binary


_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%s
wrk.body = '%s'
local errors = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"decision":true', 1, true) then
    errors = errors + 1
  end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status + errors))
end
"""


def _wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: run `make bench`, or apt-get install -y wrk")
    return wrk


def _load(
    url: str, body: Mapping[str, Any], headers: Mapping[str, str], seconds: float
) -> dict[str, Any]:
    """Drive ``url`` with wrk (a C load generator: a Python one saturates at a few hundred
    requests per second here and would measure itself). Errors count non-200 answers and any
    answer that is not an allow."""
    text = json.dumps(body, separators=(",", ":"))
    if "'" in text or "\\" in text:
        raise ValueError("the body goes into a Lua string as it is")
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA % (lines, text))
    try:
        out = subprocess.run(
            [
                _wrk(),
                f"-t{THREADS}",
                f"-c{CONNECTIONS}",
                f"-d{int(seconds)}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    # RESULT requests duration_us p50_us p99_us errors
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    count, duration, p50, p99, errors = (int(f) for f in fields)
    return {
        "count": count,
        "errors": errors,
        "rate": count / (duration / 1e6),
        "p50": p50 / 1000,
        "p99": p99 / 1000,
    }


def _decision(url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    answer = httpx.post(url, json=body, headers=dict(headers), timeout=10)
    answer.raise_for_status()
    return bool(answer.json()["decision"])


def tether(seconds: float, tmp: Path) -> dict[str, Any]:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--data-dir", str(tmp / "d")]
    env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT}
    with running(argv, env=env, log=tmp / "tether.log") as server:
        wait_ready(f"{addr}/readyz", server, "tether serve")
        token = agent_token(addr, root=ROOT, name="faq-bot", policy=POLICY, tools=("search_faq",),
                            instance="pod-1")  # fmt: skip
        url = f"{addr}/access/v1/evaluation"
        headers = {"Authorization": f"Bearer {token}"}
        other = {**BODY, "resource": {"type": "Tool", "id": "delete_faq"}}
        if not _decision(url, BODY, headers) or _decision(url, other, headers):
            raise SystemExit("Tether did not allow search_faq and deny another tool")
        _load(url, BODY, headers, WARM_UP)  # first requests, caches and lazy imports
        return _load(url, BODY, headers, seconds)


def cerbos(binary: Path, seconds: float, tmp: Path) -> dict[str, Any]:
    policies = tmp / "cerbos-policies"
    policies.mkdir()
    (policies / "tool.yaml").write_text(CERBOS_POLICY)
    http, grpc, debug = free_port(), free_port(), free_port()
    config = tmp / "cerbos.yaml"
    config.write_text(CERBOS_CONFIG.format(http=http, grpc=grpc, policies=policies))
    argv = [str(binary), "server", f"--config={config}", "--log-level=warn"]
    argv.append(f"--debug-listen-addr=127.0.0.1:{debug}")  # ":6666", all interfaces, by default
    env = {**os.environ, "CERBOS_NO_TELEMETRY": "1"}
    addr = f"http://127.0.0.1:{http}"
    with running(argv, env=env, log=tmp / "cerbos.log") as server:
        wait_ready(f"{addr}/_cerbos/health", server, "the Cerbos PDP")
        url = f"{addr}/access/v1/evaluation"
        denied = [_cerbos_body("other"), _cerbos_body(state="suspended"), _cerbos_body(server="x")]
        if not _decision(url, _cerbos_body(), {}) or any(_decision(url, b, {}) for b in denied):
            raise SystemExit("Cerbos did not allow faq-bot's call and deny the others")
        _load(url, _cerbos_body(), {}, WARM_UP)
        return _load(url, _cerbos_body(), {}, seconds)


def _show(title: str, result: Mapping[str, Any], aims: bool = False) -> None:
    print(title)
    print(f"  decisions      {result['count']:8d}   errors {result['errors']}")
    print(f"  rate           {result['rate']:8.0f} /s" + ("   (aim >= 1,500/s)" if aims else ""))
    print(f"  latency p50    {result['p50']:8.1f} ms")
    print(f"  latency p99    {result['p99']:8.1f} ms" + ("   (aim <= 25 ms)" if aims else ""))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    _wrk()
    binary = _cerbos_binary()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ours = tether(seconds, Path(tmp))
        theirs = cerbos(binary, seconds, Path(tmp))
    load = f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds:.0f}s"
    _show(
        f"AuthZEN evaluation over HTTP, {CONNECTIONS} connections, {seconds:.0f} s, loopback",
        ours,
        aims=True,
    )
    _show(
        f"Cerbos PDP {CERBOS_VERSION}, same endpoint and load ({load}), equivalent policy", theirs
    )
    faster = "Tether/Cerbos; {} 1: Tether is faster"
    print("Tether vs Cerbos")
    print(f"  rate ratio     {ours['rate'] / theirs['rate']:8.2f}x   ({faster.format('>')})")
    print(f"  p50 ratio      {ours['p50'] / theirs['p50']:8.2f}x   ({faster.format('<')})")
    print(f"  p99 ratio      {ours['p99'] / theirs['p99']:8.2f}x   ({faster.format('<')})")
    print("  wrk and the server under load share the machine's 2 cores (one server at a time).")
    print("  Tether verifies the agent's JWT-SVID and records each decision durably; Cerbos")
    print("  takes the subject from the request body and its audit log is off.")
    record(ours, theirs)


def record(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    """The figures, for ``bench/report.py``."""
    _report.peer("Cerbos PDP", CERBOS_VERSION)
    peer = f"Cerbos PDP {CERBOS_VERSION}, AuthZEN"
    where = f"AuthZEN evaluation over HTTP, {CONNECTIONS} connections"
    note = "Tether verifies the JWT-SVID and records each decision durably; Cerbos takes the "
    note += "subject from the body, its audit log off. wrk shares the 2 cores."
    _report.row(area="decisions", path=f"{where}: rate", figure=ours["rate"], unit="/s",
                better="higher", peer=theirs["rate"], peer_name=peer,
                aim=_report.at_least(1500), note=note)  # fmt: skip
    _report.row(area="decisions", path=f"{where}: p50", figure=ours["p50"], unit="ms",
                better="lower", peer=theirs["p50"], peer_name=peer)  # fmt: skip
    _report.row(area="decisions", path=f"{where}: p99", figure=ours["p99"], unit="ms",
                better="lower", peer=theirs["p99"], peer_name=peer,
                aim=_report.at_most(25))  # fmt: skip


if __name__ == "__main__":
    main()
