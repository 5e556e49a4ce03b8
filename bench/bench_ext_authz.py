"""The HTTP enforcement point behind nginx ``auth_request`` on loopback: checks per second and
latency at 16 connections, against the same nginx without ``auth_request``, in the same run.

* Tether: a real ``tether serve`` (uvicorn, SQLite, one worker) on 127.0.0.1 with the example
  route file (``examples/ext_authz/routes.toml``); an agent, ``order-bot``, registered with a
  key and a policy that lets it read orders; its JWT-SVID.
* nginx (Debian's): the example config (``examples/ext_authz/nginx.conf``, ports replaced),
  one worker, keep-alive connections to Tether and to the API; each request to
  ``GET /orders/42`` is first checked by Tether (``/v1/ext_authz/orders/orders/42``: the token
  verified, the route matched, the policy decided, the decision recorded durably).
* The baseline: the very same config without its ``auth_request`` lines (the same proxying
  to the same API), in its own nginx.
* The API: a third nginx answering ``return 200``.

``wrk`` (2 threads, 16 connections, a fixed time; closed loop) drives each proxy after
``WARM_UP`` seconds of the same load; then the same one request at a time (1 connection, half
the time), where the added latency is the check's own rather than queueing. Every answer must
be a 200 from the API, anything else counts as an error. Before timing, the proxy with Tether
must allow the agent's read and deny its delete. Everything shares the machine's cores. The
issue's aim: >= 1,000 checks/s with p99 <= 25 ms, and the added latency reported as a ratio.

Run: ``make bench`` or ``.venv/bin/python bench/bench_ext_authz.py [SECONDS]``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

import _report
from _agents import agent_token
from _procs import free_port, running, wait_listening, wait_ready

ROOT = "tto_" + "e" * 32
THREADS = 2
CONNECTIONS = 16
WARM_UP = 2
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "ext_authz"
#: The loopback ports the example files use: Tether, the API, nginx.
EXAMPLE_PORTS = {"tether": 8200, "api": 9000, "nginx": 8080}
POLICY = """
@id("order-bot-reads")
permit (principal == Tether::Agent::"order-bot", action == Tether::Action::"read", resource);
"""
API_CONF = """
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
    server {
        listen 127.0.0.1:%d;
        location / { return 200 "upstream"; }
    }
}
"""
_LUA = """
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer %s"
local errors = 0
response = function(status, headers, body)
  if status ~= 200 or body ~= "upstream" then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status + errors))
end
"""


def _binary(name: str, remedy: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"{name} is not installed: {remedy}")
    return found


def nginx_conf(ports: Mapping[str, int], *, checked: bool) -> str:
    """The example nginx config with ``ports``; without ``checked``, its auth_request lines
    (and the headers they set) taken out."""
    text = (EXAMPLES / "nginx.conf").read_text()
    for role, port in EXAMPLE_PORTS.items():
        text = re.sub(rf"(?<![0-9]){port}(?![0-9])", str(ports[role]), text)
    if not checked:
        text = "\n".join(
            line for line in text.splitlines() if not re.search(r"auth_request|\$tether_", line)
        )
    return text


@contextmanager
def nginx(directory: Path, conf: str, port: int) -> Iterator[None]:
    directory.mkdir(parents=True)
    (directory / "nginx.conf").write_text(conf)
    argv = [_binary("nginx", "apt-get install -y nginx"), "-p", str(directory),
            "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log"),
            "-g", f"daemon off; pid {directory / 'nginx.pid'};"]  # fmt: skip
    with running(argv, env=os.environ, log=directory / "out.log") as server:
        wait_listening(f"http://127.0.0.1:{port}/", server, "nginx")
        yield


def _load(
    url: str, token: str, seconds: float, *, connections: int = CONNECTIONS
) -> dict[str, Any]:
    wrk = _binary("wrk", "run `make bench-deps`, or apt-get install -y wrk")
    threads = min(THREADS, connections)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA % token)
    try:
        out = subprocess.run(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "5s",
             "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    count, duration, p50, p99, errors = (int(f) for f in fields)
    return {"count": count, "errors": errors, "rate": count / (duration / 1e6),
            "p50": p50 / 1000, "p99": p99 / 1000}  # fmt: skip


def _check_answers(base: str, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    read = httpx.get(f"{base}/orders/42", headers=auth, timeout=10)
    delete = httpx.delete(f"{base}/orders/42", headers=auth, timeout=10)
    if (read.status_code, read.text, delete.status_code) != (200, "upstream", 403):
        raise SystemExit(
            f"nginx + Tether did not allow the read and deny the delete: "
            f"{read.status_code} {read.text[:80]!r}, {delete.status_code}"
        )


def measure(seconds: float, tmp: Path) -> list[dict[str, Any]]:
    """Under load (16 connections), then one request at a time (1 connection, half the time):
    with Tether's check, then without — in that order."""
    ports = {"tether": free_port(), "api": free_port(), "nginx": free_port()}
    bare_port = free_port()
    addr = f"http://127.0.0.1:{ports['tether']}"
    argv = [sys.executable, "-m", "tether", "serve", "--host", "127.0.0.1",
            "--port", str(ports["tether"]), "--data-dir", str(tmp / "d")]  # fmt: skip
    env = {**os.environ, "TETHER_ROOT_TOKEN": ROOT,
           "TETHER_EXT_AUTHZ_ROUTES": str(EXAMPLES / "routes.toml")}  # fmt: skip
    with ExitStack() as stack:
        server = stack.enter_context(running(argv, env=env, log=tmp / "tether.log"))
        wait_ready(f"{addr}/readyz", server, "tether serve")
        token = agent_token(addr, root=ROOT, name="order-bot", policy=POLICY, instance="pod-1")
        stack.enter_context(nginx(tmp / "api", API_CONF % ports["api"], ports["api"]))
        stack.enter_context(nginx(tmp / "checked", nginx_conf(ports, checked=True),
                                  ports["nginx"]))  # fmt: skip
        bare = {**ports, "nginx": bare_port}
        stack.enter_context(nginx(tmp / "bare", nginx_conf(bare, checked=False), bare_port))
        checked_url = f"http://127.0.0.1:{ports['nginx']}"
        bare_url = f"http://127.0.0.1:{bare_port}"
        _check_answers(checked_url, token)
        results = []
        for connections, length in ((CONNECTIONS, seconds), (1, seconds / 2)):
            for url in (checked_url, bare_url):
                _load(f"{url}/orders/42", token, WARM_UP, connections=connections)
                results.append(_load(f"{url}/orders/42", token, length, connections=connections))
        return results


def _show(title: str, result: Mapping[str, Any], *, aims: bool) -> None:
    print(title)
    print(f"  requests       {result['count']:8d}   errors {result['errors']}")
    print(f"  rate           {result['rate']:8.0f} /s" + ("   (aim >= 1,000/s)" if aims else ""))
    print(f"  latency p50    {result['p50']:8.2f} ms")
    print(f"  latency p99    {result['p99']:8.2f} ms" + ("   (aim <= 25 ms)" if aims else ""))


def _added(checked: Mapping[str, Any], bare: Mapping[str, Any]) -> None:
    print("Tether's check added")
    print(f"  p50            {checked['p50'] - bare['p50']:8.2f} ms   "
          f"(ratio {checked['p50'] / bare['p50']:.1f}x)")  # fmt: skip
    print(f"  p99            {checked['p99'] - bare['p99']:8.2f} ms   "
          f"(ratio {checked['p99'] / bare['p99']:.1f}x)")  # fmt: skip
    print(f"  rate ratio     {checked['rate'] / bare['rate']:8.2f}x   (with / without)")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        checked, bare, one_checked, one_bare = measure(seconds, Path(tmp))
    load = f"wrk -t{THREADS} -c{CONNECTIONS} -d{seconds:.0f}s"
    _show(f"nginx auth_request -> Tether ext_authz, GET /orders/42, {load}, loopback",
          checked, aims=True)  # fmt: skip
    _show("the same nginx without auth_request, same API, same load", bare, aims=False)
    _added(checked, bare)
    one = f"wrk -t1 -c1 -d{seconds / 2:.0f}s"
    _show(f"one request at a time ({one}): with auth_request", one_checked, aims=False)
    _show("one request at a time: without auth_request", one_bare, aims=False)
    _added(one_checked, one_bare)
    print("  Each checked request: the JWT-SVID verified, the route matched, the policy decided")
    print("  and the decision recorded durably (SQLite, group commit) before nginx goes on.")
    record(checked, bare, one_checked, one_bare)


def record(
    checked: Mapping[str, Any],
    bare: Mapping[str, Any],
    one_checked: Mapping[str, Any],
    one_bare: Mapping[str, Any],
) -> None:
    """The figures, for ``bench/report.py``."""
    floor = "the same nginx without auth_request"
    where = f"nginx auth_request → Tether, {CONNECTIONS} connections"
    _report.row(area="ext_authz", path=f"{where}: rate", figure=checked["rate"], unit="/s",
                better="higher", floor=bare["rate"], floor_name=floor,
                aim=_report.at_least(1000))  # fmt: skip
    _report.row(area="ext_authz", path=f"{where}: p99", figure=checked["p99"], unit="ms",
                better="lower", floor=bare["p99"], floor_name=floor,
                aim=_report.at_most(25))  # fmt: skip
    _report.row(area="ext_authz", path="nginx auth_request → Tether, one at a time: p50",
                figure=one_checked["p50"], unit="ms", better="lower", floor=one_bare["p50"],
                floor_name=floor)  # fmt: skip


if __name__ == "__main__":
    main()
