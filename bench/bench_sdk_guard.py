"""What ``@tether.guard`` adds to a tool call, on a token-cache hit, against the checkpoint
floor measured in the same run (issue 9's aim: at most 0.5× the floor).

* Bare: the same AuthZEN evaluation sent by hand with ``httpx`` (one kept connection, the
  body encoded once, the answer's JSON read) — the decision's own round trip.
* Guarded: a no-op function decorated with ``@tether.guard`` called inside ``with client:``
  (its JWT-SVID cached): binding the call's arguments, building the evaluation, the same round
  trip, reading the answer into a ``Decision``, then the body.
* The guard's overhead is the guarded call's time minus the bare one's, per round — measured
  twice: with the server's answer served from memory (an ``httpx.MockTransport`` answering
  the token and the evaluation requests with canned JSON; this isolates what the SDK itself
  costs, which the aim is about), and against a live ``tether serve`` on loopback, one bare
  evaluation and one guarded call in turn (the server's own time, about 3 ms, and its noise
  dwarf the difference).
* The floor: the checkpoint's steps with the bare libraries in process (``bench_checkpoint``'s
  ``Floor``: joserfc verifies the token, cedarpy decides, sqlite3 appends and commits).

Rounds alternate the three so all see the same machine load; medians over the rounds. Needs
the ``bench`` extra (``bench_checkpoint`` imports regopy): ``make bench``, or
``.venv/bin/python bench/bench_sdk_guard.py [N]`` (N calls per path and round; 500).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

import _report
import tether
from _agents import register_agent
from _procs import free_port, running, wait_ready
from bench_checkpoint import Floor, Setup

ROOT = "tto_" + "g" * 32
ROUNDS = 5
POLICY = """
@id("guard-bench")
permit (principal == Tether::Agent::"guard-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"kb/search");
"""
TOOL = {
    "type": "Tool",
    "id": "kb/search",
    "properties": {"name": "search", "data_class": "internal", "state_changing": False},
}


def bare_round(http: httpx.Client, url: str, token: str, n: int) -> float:
    """µs per decision asked by hand (the body built and encoded per call, as any caller)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    start = time.perf_counter()
    for i in range(n):
        body = {"action": {"name": "call_tool", "properties": {"arguments": {"query": f"q{i}"}}},
                "resource": TOOL, "context": {}}  # fmt: skip
        answer = http.post(url, content=orjson.dumps(body), headers=headers)
        assert orjson.loads(answer.content)["decision"] is True
    return (time.perf_counter() - start) / n * 1e6


def guarded_round(client: tether.Client, n: int) -> float:
    @tether.guard(action="call_tool", resource=TOOL, client=client)
    def search(query: str) -> str:
        return query

    start = time.perf_counter()
    for i in range(n):
        search(f"q{i}")
    return (time.perf_counter() - start) / n * 1e6


def interleaved(
    http: httpx.Client, url: str, token: str, client: tether.Client, n: int
) -> tuple[float, float]:
    """Against the live server, one bare evaluation and one guarded call in turn (so the
    server's own background work — audit commits, checkpoints — falls on both alike): the
    median µs of each."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    @tether.guard(action="call_tool", resource=TOOL, client=client)
    def search(query: str) -> str:
        return query

    bare: list[float] = []
    guarded: list[float] = []
    for i in range(n):
        body = {"action": {"name": "call_tool", "properties": {"arguments": {"query": f"q{i}"}}},
                "resource": TOOL, "context": {}}  # fmt: skip
        start = time.perf_counter()
        answer = http.post(url, content=orjson.dumps(body), headers=headers)
        assert orjson.loads(answer.content)["decision"] is True
        middle = time.perf_counter()
        search(f"q{i}")
        bare.append(middle - start)
        guarded.append(time.perf_counter() - middle)
    return statistics.median(bare) * 1e6, statistics.median(guarded) * 1e6


def _canned(request: httpx.Request) -> httpx.Response:
    """The server's answers, from memory: a token, and an allow."""
    if request.url.path == "/oauth2/token":
        return httpx.Response(200, json={"access_token": "tok", "token_type": "Bearer",
                                         "expires_in": 300, "scope": ""})  # fmt: skip
    return httpx.Response(200, json={"decision": True, "context": {"id": "d", "effect": "allow",
                                                                  "reasons": ["r"]}})  # fmt: skip


def measure(addr: str, spiffe_id: str, pem: bytes, floor: Floor, n: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {k: [] for k in ("bare", "guarded", "floor", "mem_bare",
                                                    "mem_guarded")}  # fmt: skip
    url = f"{addr}/access/v1/evaluation?explain=true"
    canned = httpx.MockTransport(_canned)
    with (
        tether.Client(addr, agent=spiffe_id, key=pem) as client,
        tether.Client(addr, agent=spiffe_id, key=pem, transport=canned) as in_memory,
        httpx.Client() as http,
        httpx.Client(transport=canned) as http_in_memory,
    ):
        token = client.token()
        bare_round(http, url, token, 50)  # warm both paths and the server's caches
        guarded_round(client, 50)
        for _ in range(ROUNDS):
            runs["floor"].append(floor.run(n))
            runs["mem_bare"].append(bare_round(http_in_memory, url, "tok", n * 4))
            runs["mem_guarded"].append(guarded_round(in_memory, n * 4))
            bare, guarded = interleaved(http, url, token, client, n)
            runs["bare"].append(bare)
            runs["guarded"].append(guarded)
    return runs


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        setup = asyncio.run(Setup.open(tmp / "floor-tether"))
        floor = Floor(tmp / "floor.db", setup)
        port = free_port()
        addr = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1", "--port",
                str(port), "--data-dir", str(tmp / "d")]  # fmt: skip
        env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT}
        try:
            with running(argv, env=env, log=tmp / "tether.log") as server:
                wait_ready(f"{addr}/readyz", server, "tether serve")
                spiffe_id, pem = register_agent(addr, root=ROOT, name="guard-bot",
                                                policy=POLICY, tools=("kb/search",))  # fmt: skip
                runs = measure(addr, spiffe_id, pem, floor, n)
        finally:
            floor.conn.close()
            asyncio.run(setup.services.close())
    report(runs, n)


def report(runs: dict[str, list[float]], n: int) -> None:
    floor = statistics.median(runs["floor"])
    print(f"@tether.guard on a token-cache hit ({ROUNDS} alternating rounds, medians, one call")
    print(f"at a time); checkpoint floor (in process): {floor:.0f} us per decision")
    for title, bare, guarded, calls in (
        ("the server's answers from memory (the SDK's own cost)", "mem_bare", "mem_guarded",
         n * 4),
        ("a live `tether serve` on loopback, in turn (medians per call)", "bare", "guarded", n),
    ):  # fmt: skip
        overheads = [g - b for g, b in zip(runs[guarded], runs[bare], strict=True)]
        ratios = sorted(o / f for o, f in zip(overheads, runs["floor"], strict=True))
        print(f"- {title}, {calls} calls per path and round:")
        print(f"  evaluation by hand (httpx)   {statistics.median(runs[bare]):7.0f} us each")
        print(f"  guarded no-op tool           {statistics.median(runs[guarded]):7.0f} us each")
        print(f"  the guard's overhead         {statistics.median(overheads):7.0f} us each")
        print(
            f"  overhead / floor             {statistics.median(ratios):7.2f}x "
            f"(rounds {ratios[0]:.2f} to {ratios[-1]:.2f})   aim <= 0.5x"
        )
        where = "server's answers from memory" if bare == "mem_bare" else "live tether serve"
        _report.row(area="sdk", path=f"@tether.guard overhead, token cached, {where}",
                    figure=statistics.median(overheads), unit="µs/call", better="lower",
                    floor=floor, floor_name="checkpoint floor: joserfc + cedarpy + sqlite3",
                    aim=_report.at_most(0.5, of="floor"),
                    note="the guarded call's time minus the same evaluation sent by hand "
                    "with httpx.")  # fmt: skip


if __name__ == "__main__":
    main()
