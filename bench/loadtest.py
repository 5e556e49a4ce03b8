"""Load, soak and overload of a real ``tether serve`` on loopback (issue 13 §2), driven at a
constant rate by an open-loop generator (``bench/_rate.py``: latency from the time each request
was due, so a slow server cannot hide it).

* ``ext-authz`` — the HTTP enforcement point (``/v1/ext_authz/orders/...``, as Envoy asks it,
  with the example route file): an agent's reads, each allowed and recorded durably. Aims at
  300/s: 0 errors, p50 <= 5 ms, p99 <= 25 ms.
* ``mcp`` — ``tools/call`` through the MCP gateway (``/mcp/calc``) to an upstream MCP server
  (``bench_mcp_gateway.py upstream``), over 8 sessions. Aims at 200/s: 0 errors, p99 <= 25 ms.
* ``soak`` — both at half those rates for ``--seconds``, sampling the server process every
  10 s from ``/proc``: resident memory, open file descriptors, its TCP connections. Aims: 0
  errors; after the warm-up (a quarter of the run, at most 5 min), RSS grows <= 10%, file
  descriptors and connections by <= 10% (or 16, whichever is more).
* ``overload`` — the ext_authz capacity measured first (closed loop, 32 connections, 5 s),
  then 3x that, open loop, for ``--seconds``: one request in four a DELETE the policy denies.
  Every answer must be right or shed: a read allowed (200 with a decision id) or shed, a
  delete denied (403) or shed, shed meaning 503 ``overloaded`` with ``Retry-After`` (or 429);
  never an allow of a delete, never another status. Then the normal rate (300/s) for 35 s:
  within 30 s of the overload's end, every request must be answered rightly again, and
  within 0.5 s (the Envoy example's timeout; a later answer is a denial at the proxy).

Each prints its figures next to its aims and exits 1 when one is missed. Bounded: every phase
stops by itself; traffic goes to 127.0.0.1 only. ``--max-in-flight`` sets the server's
``TETHER_MAX_IN_FLIGHT`` (default: the server's own).

    .venv/bin/python bench/loadtest.py ext-authz --rate 300 --seconds 600
    .venv/bin/python bench/loadtest.py mcp --rate 200 --seconds 600
    .venv/bin/python bench/loadtest.py soak --seconds 3600
    .venv/bin/python bench/loadtest.py overload --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from _agents import agent_token
from _procs import free_port, running, wait_listening, wait_ready
from _rate import (
    Judge,
    Make,
    Record,
    Reply,
    Target,
    drive,
    percentile,
    request_bytes,
    run,
    saturate,
)

ROOT = "tto_" + "l" * 32
HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples" / "ext_authz"
EXT_POLICY = """
@id("order-bot-reads")
permit (principal == Tether::Agent::"order-bot", action == Tether::Action::"read", resource);
"""
MCP_POLICY = """
@id("calc-bot-adds")
permit (principal == Tether::Agent::"calc-bot", action == Tether::Action::"call_tool",
        resource == Tether::Tool::"calc/add");
"""
MCP_VERSION = "2025-11-25"
MCP_SESSIONS = 8
SAMPLE_EVERY = 10.0
SHED = "shed"
#: An answer later than this is a denial at the proxy (the Envoy example's timeout).
PROXY_TIMEOUT = 0.5
#: The first answers of each unexpected outcome, shown with the figures: this many of each,
#: this many bytes of each.
SAMPLES: dict[str, list[str]] = {}
KEEP = 3
KEPT_BYTES = 300
#: How long the normal rate runs after the overload (the aim: right answers within 30 s).
RECOVERY = 35.0


@dataclass(frozen=True)
class Stack:
    """A running server: its address, process id, and what the load needs."""

    target: Target
    addr: str
    pid: int
    ext_token: str
    mcp_token: str = ""
    mcp_sessions: tuple[str, ...] = ()


# -- the server -------------------------------------------------------------------------------


def _mcp_session(addr: str, token: str) -> str:
    """A new MCP session (initialize, initialized, tools/list): its id."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": MCP_VERSION, "capabilities": {},
                       "clientInfo": {"name": "loadtest", "version": "1"}}}  # fmt: skip
    with httpx.Client(base_url=addr, headers=headers, timeout=30) as http:
        opened = http.post("/mcp/calc", json=init)
        opened.raise_for_status()
        headers = {"mcp-session-id": opened.headers["mcp-session-id"],
                   "mcp-protocol-version": MCP_VERSION}  # fmt: skip
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        http.post("/mcp/calc", json=note, headers=headers).raise_for_status()
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        http.post("/mcp/calc", json=listing, headers=headers).raise_for_status()
    return headers["mcp-session-id"]


@contextmanager
def tether(tmp: Path, *, mcp: bool, max_in_flight: int | None) -> Iterator[Stack]:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT, "TETHER_ISSUER": addr,
           "TETHER_EXT_AUTHZ_ROUTES": str(EXAMPLES / "routes.toml"),
           "TETHER_JWT_SVID_TTL": "7200"}  # fmt: skip
    if max_in_flight is not None:
        env["TETHER_MAX_IN_FLIGHT"] = str(max_in_flight)
    argv = [sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(tmp / "data")]  # fmt: skip
    with ExitStack() as stack:
        server = stack.enter_context(running(argv, env=env, log=tmp / "tether.log"))
        wait_ready(f"{addr}/readyz", server, "tether serve")
        # Each policy applied is the whole active set: both agents' permits, every time.
        policy = EXT_POLICY + MCP_POLICY
        ext = agent_token(addr, root=ROOT, name="order-bot", policy=policy, instance="load-1")
        found = Stack(Target("127.0.0.1", port), addr, server.pid, ext)
        if mcp:
            up_port = free_port()
            upstream = f"http://127.0.0.1:{up_port}/mcp"
            up = stack.enter_context(running(
                [sys.executable, str(HERE / "bench_mcp_gateway.py"), "upstream", str(up_port)],
                env=os.environ, log=tmp / "upstream.log"))  # fmt: skip
            wait_listening(upstream, up, "the upstream MCP server")
            with httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {ROOT}"},
                              timeout=60) as ops:  # fmt: skip
                ops.post(
                    "/v1/mcp/servers", json={"name": "calc", "url": upstream}
                ).raise_for_status()
            token = agent_token(addr, root=ROOT, name="calc-bot", policy=policy, tools=("add",),
                                audience=f"{addr}/mcp/calc", instance="load-2")  # fmt: skip
            sessions = tuple(_mcp_session(addr, token) for _ in range(MCP_SESSIONS))
            found = Stack(found.target, addr, server.pid, ext, token, sessions)
        yield found


# -- requests and how their answers are judged ------------------------------------------------


def _error(reply: Reply) -> str:
    """``error_<status>``, with the error code when the body names one."""
    try:
        error = json.loads(reply.body)["error"]
        code = error["code"] if isinstance(error, dict) else error
    except (ValueError, KeyError, TypeError):
        return _kept(f"error_{reply.status}", reply)
    return _kept(f"error_{reply.status}_{code}", reply)


def _kept(outcome: str, reply: Reply) -> str:
    """``outcome``, with the answer kept (the first ``KEEP`` of each) to be shown."""
    kept = SAMPLES.setdefault(outcome, [])
    if len(kept) < KEEP:
        kept.append(f"{reply.status} {reply.body[:KEPT_BYTES].decode(errors='replace')!r}")
    return outcome


def _shed(reply: Reply) -> bool:
    if reply.status == 429:
        return True
    if reply.status != 503 or "retry-after" not in reply.headers:
        return False
    try:
        return bool(json.loads(reply.body)["error"]["code"] == "overloaded")
    except (ValueError, KeyError, TypeError):
        return False


def ext_authz(stack: Stack, *, deletes: bool) -> tuple[Make, Judge]:
    """Reads of ``/orders/<n>`` (allowed); with ``deletes``, one in four a DELETE (denied)."""
    auth = [("Authorization", f"Bearer {stack.ext_token}")]

    def deleting(n: int) -> bool:
        return deletes and n % 4 == 3

    def make(n: int) -> bytes:
        method = "DELETE" if deleting(n) else "GET"
        return request_bytes(stack.target, method, f"/v1/ext_authz/orders/orders/{n % 1000}", auth)

    def judge(n: int, reply: Reply) -> str:
        if _shed(reply):
            return SHED
        if deleting(n):
            if reply.status == 200:
                return "ALLOWED_A_DENIED_DELETE"
            return "deny" if reply.status == 403 else _error(reply)
        ok = reply.status == 200 and "x-tether-decision-id" in reply.headers
        return "allow" if ok else _error(reply)

    return make, judge


def mcp_calls(stack: Stack) -> tuple[Make, Judge]:
    """``tools/call add(2, 3)`` round robin over the sessions; the answer must be 5."""

    def make(n: int) -> bytes:
        call = {"jsonrpc": "2.0", "id": n + 10, "method": "tools/call",
                "params": {"name": "add", "arguments": {"a": 2, "b": 3}}}  # fmt: skip
        headers = [("Authorization", f"Bearer {stack.mcp_token}"),
                   ("Content-Type", "application/json"),
                   ("Accept", "application/json, text/event-stream"),
                   ("mcp-session-id", stack.mcp_sessions[n % len(stack.mcp_sessions)]),
                   ("mcp-protocol-version", MCP_VERSION)]  # fmt: skip
        return request_bytes(stack.target, "POST", "/mcp/calc", headers, json.dumps(call).encode())

    def judge(n: int, reply: Reply) -> str:
        if _shed(reply):
            return SHED
        if reply.status != 200:
            return _error(reply)
        body = reply.body.decode(errors="replace")
        # one JSON body (a session that cannot be asked for input), or an SSE event's data
        data = [body] if body.startswith("{") else [
            line[5:] for line in body.splitlines() if line.startswith("data:")
        ]  # fmt: skip
        if not data:
            return _kept("error_body", reply)
        result = json.loads(data[0]).get("result") or {}
        text = "".join(p.get("text", "") for p in result.get("content", ()))
        ok = text == "5" and not result.get("isError")
        return "allow" if ok else _kept("error_result", reply)

    return make, judge


# -- the figures ------------------------------------------------------------------------------


def summary(title: str, records: Sequence[Record], seconds: float) -> dict[str, float]:
    outcomes = Counter(r.outcome for r in records)
    ok = [r.latency * 1000 for r in records if r.outcome in {"allow", "deny"}]
    errors = sum(n for o, n in outcomes.items() if o not in {"allow", "deny"})
    figures = {"count": len(records), "rate": len(records) / seconds, "errors": errors,
               "p50": percentile(ok, 0.5), "p99": percentile(ok, 0.99),
               "max": max(ok, default=0.0)}  # fmt: skip
    print(f"{title}: {len(records)} requests in {seconds:.0f} s ({figures['rate']:.0f}/s)")
    print(f"  outcomes       {dict(sorted(outcomes.items()))}")
    print(f"  latency ms     p50 {figures['p50']:.2f}  p99 {figures['p99']:.2f}  "
          f"max {figures['max']:.2f}  (from the time each was due)")  # fmt: skip
    for outcome in sorted(set(outcomes) & set(SAMPLES)):
        for answer in SAMPLES[outcome]:
            print(f"  {outcome}: {answer}")
    return figures


def aim(missed: list[str], name: str, value: float, limit: float, unit: str = "") -> None:
    met = value <= limit
    print(f"  aim {name:<26} {value:10.2f}{unit} <= {limit:g}{unit}  {'ok' if met else 'MISSED'}")
    if not met:
        missed.append(name)


def _latency_aims(missed: list[str], figures: dict[str, float], p50: float, p99: float) -> None:
    aim(missed, "errors", figures["errors"], 0)
    aim(missed, "p50", figures["p50"], p50, " ms")
    aim(missed, "p99", figures["p99"], p99, " ms")


# -- the runs ---------------------------------------------------------------------------------


def run_ext_authz(stack: Stack, rate: float, seconds: float, missed: list[str]) -> None:
    make, judge = ext_authz(stack, deletes=False)
    run(drive(stack.target, rate=rate, seconds=min(5.0, seconds), request=make, judge=judge))
    records = run(drive(stack.target, rate=rate, seconds=seconds, request=make, judge=judge))
    figures = summary(f"ext_authz at {rate:g}/s", records, seconds)
    _latency_aims(missed, figures, 5, 25)


def run_mcp(stack: Stack, rate: float, seconds: float, missed: list[str]) -> None:
    make, judge = mcp_calls(stack)
    run(drive(stack.target, rate=rate, seconds=min(5.0, seconds), request=make, judge=judge))
    records = run(drive(stack.target, rate=rate, seconds=seconds, request=make, judge=judge))
    figures = summary(f"MCP gateway tools/call at {rate:g}/s", records, seconds)
    _latency_aims(missed, figures, 10, 25)


def _sample(pid: int, port: int) -> tuple[int, int, int, float, float, float]:
    """The server's resident memory (KiB), open file descriptors, established connections,
    the CPU seconds used so far by the server's own process (not its audit writer process)
    and by the whole machine (every core), and the seconds the hypervisor kept this
    machine's cores waiting (steal)."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    connections = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                connections += int(local.rsplit(":", 1)[1], 16) == port and state == "01"
    tick = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    server = (int(stat[11]) + int(stat[12])) / tick  # utime, stime
    jiffies = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = jiffies[:8]
    machine = (user + nice + system + irq + softirq) / tick
    return rss, fds, connections, server, machine, steal / tick


#: t (s), RSS (KiB), fds, connections, CPU (s): server, machine, stolen.
Sample = tuple[float, int, int, int, float, float, float]


def _cpu(samples: Sequence[Sample], i: int) -> tuple[float, float, float]:
    """CPU use (% of one core) between samples i-1 and i: the server, the machine, stolen."""
    if i == 0:
        return 0.0, 0.0, 0.0
    (t0, *_, s0, m0, x0), (t1, *_, s1, m1, x1) = samples[i - 1], samples[i]
    return 100 * (s1 - s0) / (t1 - t0), 100 * (m1 - m0) / (t1 - t0), 100 * (x1 - x0) / (t1 - t0)


def _bad_windows(records: Sequence[Record], samples: Sequence[Sample], width: float = 60) -> None:
    """Each window of ``width`` seconds with an error, so their spread shows: bursts beside
    a busy machine point away from a leak."""
    windows: dict[int, list[Record]] = {}
    for r in records:
        windows.setdefault(int(r.due // width), []).append(r)
    right = {"allow", "deny"}
    bad = {w: rs for w, rs in windows.items() if any(r.outcome not in right for r in rs)}
    if not bad:
        return
    print(f"  windows of {width:g} s with errors: {len(bad)} of {len(windows)}")
    for w, rs in sorted(bad.items())[:30]:
        errors = sum(r.outcome not in right for r in rs)
        inside = [i for i, s in enumerate(samples) if w * width < s[0] <= (w + 1) * width]
        cpu = [_cpu(samples, i) for i in inside] or [(0.0, 0.0, 0.0)]
        print(f"    t {w * width:6.0f} s  errors {errors:4d}  p99 "
              f"{percentile([r.latency * 1000 for r in rs], 0.99):7.1f} ms  CPU % (most in 10 s): "
              f"server {max(c[0] for c in cpu):3.0f}  machine {max(c[1] for c in cpu):3.0f}  "
              f"stolen {max(c[2] for c in cpu):3.0f}")  # fmt: skip


async def _soak(stack: Stack, seconds: float) -> tuple[list[Record], list[Record], list[Sample]]:
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()
    start, done = loop.time(), asyncio.Event()

    def sample() -> None:
        samples.append((loop.time() - start, *_sample(stack.pid, stack.target.port)))

    async def sampler() -> None:
        while not done.is_set():
            sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), SAMPLE_EVERY)
        sample()

    watching = loop.create_task(sampler())
    ext_make, ext_judge = ext_authz(stack, deletes=False)
    mcp_make, mcp_judge = mcp_calls(stack)
    ext, mcp = await asyncio.gather(
        drive(stack.target, rate=150, seconds=seconds, request=ext_make, judge=ext_judge),
        drive(stack.target, rate=100, seconds=seconds, request=mcp_make, judge=mcp_judge),
    )
    done.set()
    await watching
    return ext, mcp, samples


def run_soak(stack: Stack, seconds: float, missed: list[str]) -> None:
    ext, mcp, samples = run(_soak(stack, seconds))
    for name, rate, records in (("ext_authz", 150, ext), ("MCP", 100, mcp)):
        figures = summary(f"soak: {name} at {rate}/s", records, seconds)
        aim(missed, f"{name} errors", figures["errors"], 0)
        _bad_windows(records, samples[:-1])  # the last sample: after the load
    # The last sample is taken after the load ended (its connections closed): shown apart.
    during, ended = samples[:-1], samples[-1]
    warm = min(300.0, seconds / 4)
    base = next((s for s in during if s[0] >= warm), during[0])
    last = during[-1]
    print(f"  samples (every {SAMPLE_EVERY:g} s): t s, RSS MiB, fds, connections, "
          "CPU % of a core in the 10 s before: server, machine, stolen")  # fmt: skip
    step = max(1, len(during) // 12)
    shown = [*range(0, len(during), step), *([len(during) - 1] if (len(during) - 1) % step else [])]
    for i in shown:
        t, rss, fds, conns, *_ = during[i]
        cpu = "".join(f" {c:6.0f}" for c in _cpu(during, i))
        print(f"    {t:7.0f} {rss / 1024:8.1f} {fds:6d} {conns:6d}{cpu}")
    print(f"  after the load: RSS {ended[1] / 1024:.1f} MiB, {ended[2]} fds, "
          f"{ended[3]} connections")  # fmt: skip
    print(f"  growth after the {warm:.0f} s warm-up (t={base[0]:.0f} s to t={last[0]:.0f} s):")
    aim(missed, "RSS growth", 100 * (last[1] - base[1]) / base[1], 10, " %")
    aim(missed, "fd growth", last[2] - base[2], max(16, base[2] / 10))
    aim(missed, "connection growth", last[3] - base[3], max(16, base[3] / 10))


def run_overload(stack: Stack, seconds: float, normal: float, missed: list[str]) -> None:
    make, judge = ext_authz(stack, deletes=True)
    probe = run(saturate(stack.target, seconds=5, request=make, judge=judge))
    capacity = sum(r.outcome in {"allow", "deny"} for r in probe) / 5
    print(f"capacity (closed loop, 32 connections, 5 s): {capacity:.0f} decisions/s")
    rate = 3 * capacity
    over = run(drive(stack.target, rate=rate, seconds=seconds, request=make, judge=judge,
                     connections=512))  # fmt: skip
    summary(f"overload at 3x = {rate:.0f}/s, a quarter of them denied deletes", over, seconds)
    outcomes = Counter(r.outcome for r in over)
    wrong = sum(n for o, n in outcomes.items() if o not in {"allow", "deny", SHED})
    print(f"  shed (503 overloaded + Retry-After, or 429): {outcomes[SHED]}")
    aim(missed, "denied deletes allowed", outcomes["ALLOWED_A_DENIED_DELETE"], 0)
    aim(missed, "answers not right or shed", wrong, 0)
    after = run(drive(stack.target, rate=normal, seconds=RECOVERY, request=make, judge=judge))
    summary(f"after the overload, at {normal:g}/s", after, RECOVERY)
    bad = [r for r in after if r.outcome not in {"allow", "deny"} or r.latency > PROXY_TIMEOUT]
    recovered = max((r.due for r in bad), default=0.0)
    aim(missed, "time to recover", recovered, 30, " s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", choices=["ext-authz", "mcp", "soak", "overload"])
    parser.add_argument("--rate", type=float, default=None, help="requests per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-in-flight", type=int, default=None)
    args = parser.parse_args(argv)
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}; loopback; open-loop generator")  # fmt: skip
    missed: list[str] = []
    runs: dict[str, Callable[[Stack], None]] = {
        "ext-authz": lambda s: run_ext_authz(s, args.rate or 300, args.seconds, missed),
        "mcp": lambda s: run_mcp(s, args.rate or 200, args.seconds, missed),
        "soak": lambda s: run_soak(s, args.seconds, missed),
        "overload": lambda s: run_overload(s, args.seconds, args.rate or 300, missed),
    }
    with tempfile.TemporaryDirectory() as tmp:
        mcp = args.run in {"mcp", "soak"}
        with tether(Path(tmp), mcp=mcp, max_in_flight=args.max_in_flight) as stack:
            runs[args.run](stack)
    print("all aims met" if not missed else f"aims missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
