"""A clean load run: legitimate traffic at a constant rate, and the monitor must stay silent.

Issue 10 asks for "0 alerts during a clean 10-minute load run (no false positives)". This
starts a real ``tether serve`` (uvicorn, SQLite) on 127.0.0.1 with the monitor on its default
thresholds, registers three agents (each declaring what it uses), a vault engine and a policy
that lets them do it, then drives the traffic a well-behaved fleet makes through the Python
SDK (``tether.AsyncClient``):

* decisions at a constant rate (``--rate`` per second over all agents, each started on its
  schedule whatever the previous ones do, so a slow server shows as latency, not as a lower
  rate), round robin over the agents and their declared tools;
* every 15 s per agent, a lease of a vault secret held for 3 s and revoked (the reaper, the
  revocation path and the lease gauges see work);
* JWT-SVIDs that live 60 s, so every agent renews its token many times during the run.

At the end it lists every alert (all states). It prints the figures and exits 1 if any alert
was raised or any call failed. Bounded: it stops by itself after ``--seconds``.

    .venv/bin/python bench/monitor_clean_run.py --seconds 600 --rate 100
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tether.crypto.assertion import generate_agent_key

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tether
from _procs import free_port, running, wait_ready

AGENTS = ("clean-a", "clean-b", "clean-c")
TOOLS = ("search_faq", "lookup_order")
ROOT = "tto_clean-run-root-token-0123456789abcdef"
VAULT = {
    "kind": "vault",
    "roles": [{"name": "crm", "resource": "crm", "default_ttl": 30, "max_ttl": 120,
               "options": {"secret": "crm-api-key"}}],
    "secret": '{"crm-api-key": "crm-key-clean-run-0123456789"}',
}  # fmt: skip


def policy() -> str:
    names = ", ".join(f'Tether::Agent::"{a}"' for a in AGENTS)
    tools = ", ".join(f'Tether::Tool::"{t}"' for t in TOOLS)
    return f"""
@id("clean-fleet-tools")
permit (principal, action == Tether::Action::"call_tool", resource)
when {{ [{names}].contains(principal) && [{tools}].contains(resource) }};

@id("clean-fleet-crm")
permit (principal, action == Tether::Action::"use_credential", resource == Tether::Secret::"crm")
when {{ [{names}].contains(principal) }};
"""


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    leases: int = 0

    def failed(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1


def setup(addr: str) -> dict[str, bytes]:
    """The engine, the agents (with keys) and the policy; each agent's private key."""
    keys: dict[str, bytes] = {}
    with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"},
                      timeout=60) as ops:  # fmt: skip
        ops.put("/v1/engines/vault-main", json=VAULT).raise_for_status()
        for name in AGENTS:
            declarations = {"tools": list(TOOLS), "resources": ["crm"]}
            body = {"name": name, "owners": ["team:clean"], "declarations": declarations}
            ops.post("/v1/agents", json=body).raise_for_status()
            pair = generate_agent_key()
            ops.post(f"/v1/agents/{name}/keys", json={"jwk": pair.public_jwk}).raise_for_status()
            keys[name] = pair.private_pem
        ops.post("/v1/policies", json={"text": policy()}).raise_for_status()
    return keys


async def _check(client: tether.AsyncClient, tool: str, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        decision = await client.check("call_tool", {"type": "Tool", "id": tool, "properties": {
            "name": tool, "data_class": "public", "state_changing": False}})  # fmt: skip
    except tether.Denied as exc:
        tally.failed(type(exc).__name__)
        return
    tally.latencies.append(time.perf_counter() - started)
    if not decision.allowed:
        tally.failed(f"{decision.effect}: {'; '.join(decision.reasons)[:120]}")


async def _lease_now_and_then(client: tether.AsyncClient, tally: Tally, until: float) -> None:
    while time.monotonic() < until - 5:
        try:
            async with client.lease("vault-main", "crm", ttl=30):
                tally.leases += 1
                await asyncio.sleep(3)
        except tether.Denied as exc:
            tally.failed(f"lease: {type(exc).__name__}")
        await asyncio.sleep(12)


async def drive(addr: str, keys: dict[str, bytes], *, seconds: float, rate: float) -> Tally:
    tally = Tally()
    clients = [tether.AsyncClient(addr, agent=f"spiffe://clean.test/agent/{name}",
                                  key=keys[name], instance_id=f"{name}-1", timeout=5.0)
               for name in AGENTS]  # fmt: skip
    for client in clients:
        await client.__aenter__()
    until = time.monotonic() + seconds
    try:
        async with asyncio.TaskGroup() as tasks:
            for client in clients:
                tasks.create_task(_lease_now_and_then(client, tally, until))
            start, n = time.monotonic(), 0
            while (due := start + n / rate) < until:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                client = clients[n % len(clients)]
                tasks.create_task(_check(client, TOOLS[(n // len(clients)) % len(TOOLS)], tally))
                n += 1
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
    return tally


def alerts(addr: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{addr}/v1/alerts", params={"limit": 500}, timeout=30,
                       headers={"Authorization": f"Bearer {ROOT}"})  # fmt: skip
    answer.raise_for_status()
    found: list[dict[str, object]] = answer.json()["alerts"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=100.0, help="decisions per second")
    args = parser.parse_args()
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT, "TETHER_DATA_DIR": f"{tmp}/data",
               "TETHER_TRUST_DOMAIN": "clean.test", "TETHER_ISSUER": addr,
               "TETHER_JWT_SVID_TTL": "60"}  # fmt: skip
        argv = [sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip
        with running(argv, env=env, log=Path(tmp) / "tether.log") as server:
            wait_ready(f"{addr}/readyz", server, "tether serve")
            keys = setup(addr)
            tally = asyncio.run(drive(addr, keys, seconds=args.seconds, rate=args.rate))
            time.sleep(3)  # the monitor's last ticks and windows
            raised = alerts(addr)
    return report(tally, raised, args.seconds, args.rate)


def report(tally: Tally, raised: list[dict[str, object]], seconds: float, rate: float) -> int:
    done = len(tally.latencies)
    print(f"clean run: {seconds:.0f} s at {rate:g} decisions/s over {len(AGENTS)} agents")
    if done:
        ms = sorted(x * 1000 for x in tally.latencies)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"  decisions allowed: {done} ({done / seconds:.1f}/s), "
              f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms")  # fmt: skip
    print(f"  leases taken and revoked: {tally.leases}")
    print(f"  failures: {sum(tally.failures.values())} {tally.failures or ''}")
    print(f"  alerts: {len(raised)}")
    for alert in raised:
        print(f"    {alert['severity']} {alert['kind']}: {alert['summary']}")
    return 1 if raised or tally.failures or not done else 0


if __name__ == "__main__":
    sys.exit(main())
