"""The AuthZEN endpoint over HTTP on loopback: decisions per second and latency at 16 connections.

Starts a real ``tether serve`` (uvicorn, SQLite, one worker) on 127.0.0.1, registers an agent
with a key and a policy, gets the agent's JWT-SVID, then drives ``POST /access/v1/evaluation``
from a separate process with 16 connections for a fixed time (closed loop: each connection
sends its next request when the answer arrives). Every answer must be an allow; each decision
is recorded durably before it is answered. The issue's aim: >= 1,500 decisions/s with
p99 <= 25 ms. Bounded: it stops by itself after ``SECONDS``.

Run: ``make bench`` or ``.venv/bin/python bench/bench_authzen_http.py [SECONDS]``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tether.crypto.assertion import generate_agent_key, sign_client_assertion

ROOT = "tto_" + "d" * 32
CONNECTIONS = 16
POLICY = """
@id("faq-bot-searches")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"search_faq");
"""
BODY = {
    "action": {"name": "call_tool", "properties": {"arguments": {"q": "opening hours"}}},
    "resource": {
        "type": "Tool",
        "id": "search_faq",
        "properties": {"name": "search_faq", "data_class": "public", "state_changing": False},
    },
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _prepare(addr: str) -> str:
    ops = httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"})
    body = {"name": "faq-bot", "owners": ["bench"], "declarations": {"tools": ["search_faq"]}}
    spiffe_id = ops.post("/v1/agents", json=body).json()["spiffe_id"]
    pair = generate_agent_key()
    ops.post("/v1/agents/faq-bot/keys", json={"jwk": pair.public_jwk}).raise_for_status()
    ops.post("/v1/policies", json={"text": POLICY}).raise_for_status()
    assertion = sign_client_assertion(
        pair.private_pem, client_id=spiffe_id, audience=f"{addr}/oauth2/token", now=int(time.time())
    )
    token = ops.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "instance_id": "pod-1",
        },
    ).json()["access_token"]
    ops.close()
    return str(token)


_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
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


def _load(addr: str, token: str, seconds: float) -> dict[str, Any]:
    """Drive the endpoint with wrk (a C load generator: a Python one saturates at a few hundred
    requests per second here and would measure itself). Errors count non-200 answers and any
    answer that is not an allow."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA % (token, json.dumps(BODY, separators=(",", ":"))))
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{CONNECTIONS}",
                f"-d{int(seconds)}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                f"{addr}/access/v1/evaluation",
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


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    port = _port()
    addr = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(Path(tmp) / "d"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{addr}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            token = _prepare(addr)
            result = _load(addr, token, seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"AuthZEN evaluation over HTTP, {CONNECTIONS} connections, {seconds:.0f} s, loopback")
    print(f"  decisions      {result['count']:8d}   errors {result['errors']}")
    print(f"  rate           {result['rate']:8.0f} /s   (aim >= 1,500/s)")
    print(f"  latency p50    {result['p50']:8.1f} ms")
    print(f"  latency p99    {result['p99']:8.1f} ms   (aim <= 25 ms)")


if __name__ == "__main__":
    main()
