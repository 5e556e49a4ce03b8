"""IBM ContextForge as a peer of Tether's MCP gateway in the benchmarks: start it, point it at an
upstream MCP server with an allow rule equivalent to Tether's, and stop it again.

* What: IBM ContextForge (``mcp-contextforge-gateway`` 1.1.0 on PyPI), an MCP gateway, started as
  ``mcpgateway`` (one uvicorn worker, SQLite in a temporary directory, JWT bearer auth) on a free
  loopback port. The upstream is registered as a ContextForge "gateway" (streamable HTTP) and a
  "virtual server" is created over it; its MCP endpoint is ``/servers/<id>/mcp``.
* Why Python 3.12: 1.1.0 declares ``Requires-Python >=3.12,<3.14``, and Tether's venv is 3.11, so
  ``make bench-contextforge`` (a dependency of ``make bench``) gives it a venv of its own in
  ``.bench-peers/contextforge-venv`` with the first Python 3.12 or 3.13 it finds. None found: it is
  not installed, ``contextforge_python()`` returns None and the benchmark reports it as not
  available.
* The equivalent allow rule: Tether's benchmark policy permits the agent to call the upstream's
  ``add`` and nothing else. ContextForge has no per-call policy language; what a client of a
  virtual server may call is the set of tools associated with it. So the virtual server exposes
  the upstream's ``add`` alone (the upstream also offers ``whoami``, ``transfer`` and
  ``delete_all``): ``add`` is allowed, every other tool is unknown to the caller.
* Settings (see ``/work/shared/notes/peers.md`` §1): secrets from the bundled generator (weak or
  default secrets abort the start); ``SSRF_ALLOW_LOCALHOST=true`` (the default SSRF policy blocks
  loopback upstreams); ``RATE_LIMITING_ENABLED=false`` (on by default, the MCP endpoint gets HTTP
  429 after about 120 calls a minute); UI off; logging at WARNING. Everything else is the
  default, TLS verification of upstreams included (it costs about half the time of a call: a new
  TLS context per call even for ``http://``). Only loopback addresses are used anywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _procs import free_port

CONTEXTFORGE_VERSION = "1.1.0"
PEERS = Path(__file__).resolve().parent.parent / ".bench-peers"
VENV = PEERS / "contextforge-venv"
#: Written by ``make bench-contextforge`` once the pip install succeeded.
STAMP = VENV / f".installed-{CONTEXTFORGE_VERSION}"
#: The first start runs migrations and a bootstrap: 15–20 s here.
START_TIMEOUT = 90.0
#: Seconds between SIGTERM and SIGKILL to the process group.
STOP_GRACE = 10.0
#: The name the upstream is registered under; ContextForge names its tools ``<name>-<tool>``.
UPSTREAM_NAME = "upstream"
ALLOWED_TOOL = "add"
ADMIN = "admin@example.com"


class ContextForgeFailed(RuntimeError):
    """ContextForge did not start, or refused a step of the setup (the message says which)."""


@dataclass(frozen=True)
class ContextForge:
    """A running ContextForge, set up in front of the upstream."""

    #: The virtual server's MCP endpoint (streamable HTTP): ``http://127.0.0.1:<port>/servers/<id>/mcp``.
    url: str
    #: The admin JWT to send as ``Authorization: Bearer <token>``.
    token: str
    #: The ``mcpgateway`` process, leader of its own process group.
    pid: int
    #: The name ContextForge lists the upstream's ``add`` under (``upstream-add``).
    tool: str
    #: Its output (stdout and stderr).
    log: Path
    #: Seconds from the start of the process to the first healthy ``/health``.
    start_seconds: float


def contextforge_python() -> Path | None:
    """The Python of ContextForge's venv, or None when ``make bench-contextforge`` did not
    install it (no Python 3.12/3.13 found, or the install failed)."""
    python = VENV / "bin" / "python"
    if STAMP.exists() and os.access(python, os.X_OK) and (VENV / "bin" / "mcpgateway").exists():
        return python
    return None


def _excerpt(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


def _run(argv: list[str], *, env: Mapping[str, str], cwd: Path, what: str) -> str:
    """Run one of ContextForge's command-line tools; its stdout, or a failure saying why."""
    try:
        done = subprocess.run(
            argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ContextForgeFailed(f"{what} did not finish within 120 s") from e
    if done.returncode != 0:
        tail = _excerpt((done.stderr or done.stdout)[-2000:])
        raise ContextForgeFailed(f"{what} exited with status {done.returncode}: {tail}")
    return done.stdout


def _environment(python: Path, tmp: Path, port: int) -> dict[str, str]:
    """Strong secrets from the bundled generator, then the settings; nothing is inherited but
    what a process needs to run (so no stray ``HOST``, ``PORT`` or ``DATABASE_URL``)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    secrets = tmp / ".env.secrets"
    argv = [str(python), "-m", "mcpgateway.scripts.init_secrets", "--output", str(secrets)]
    _run([*argv, "--force"], env=base, cwd=tmp, what="mcpgateway.scripts.init_secrets")
    env = {**base, "HOST": "127.0.0.1", "PORT": str(port)}
    for line in secrets.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    if not env.get("JWT_SECRET_KEY"):
        raise ContextForgeFailed(f"no JWT_SECRET_KEY in {secrets}")
    env.update(
        BASIC_AUTH_USER="admin",
        PLATFORM_ADMIN_EMAIL=ADMIN,
        DATABASE_URL=f"sqlite:///{tmp / 'mcp.db'}",
        MCPGATEWAY_UI_ENABLED="false",
        MCPGATEWAY_ADMIN_API_ENABLED="true",
        SSRF_ALLOW_LOCALHOST="true",  # the default SSRF policy refuses a loopback upstream
        RATE_LIMITING_ENABLED="false",  # on by default: 429 after ~120 calls, then a lockout
        LOG_LEVEL="WARNING",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def _wait_healthy(base: str, server: subprocess.Popen[bytes], log: Path) -> float:
    """Wait for ``/health`` to answer 200; the seconds it took."""
    start = time.monotonic()
    last = "no answer yet"
    while True:
        try:
            answer = httpx.get(f"{base}/health", timeout=2, trust_env=False)
            if answer.status_code == 200:
                return time.monotonic() - start
            last = f"HTTP {answer.status_code}: {_excerpt(answer.text, 200)}"
        except httpx.TransportError as e:
            last = repr(e)
        if server.poll() is not None:
            raise ContextForgeFailed(
                f"mcpgateway exited with status {server.returncode} before it was healthy; "
                f"the end of its output:\n{_log_tail(log)}"
            )
        if time.monotonic() - start > START_TIMEOUT:
            raise ContextForgeFailed(
                f"mcpgateway was not healthy within {START_TIMEOUT:.0f} s (last: {last}); "
                f"the end of its output:\n{_log_tail(log)}"
            )
        time.sleep(0.5)


def _mint_token(python: Path, env: Mapping[str, str], tmp: Path) -> str:
    """The admin's JWT, minted by ContextForge's own tool (valid 120 minutes). It carries no
    ``teams`` claim, so ContextForge treats it as public-only: hence ``visibility: public``."""
    argv = [str(python), "-m", "mcpgateway.utils.create_jwt_token", "--username", ADMIN]
    argv += ["--exp", "120", "--secret", env["JWT_SECRET_KEY"]]
    out = _run(argv, env=env, cwd=tmp, what="mcpgateway.utils.create_jwt_token")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines or lines[-1].count(".") != 2:
        raise ContextForgeFailed(f"create_jwt_token printed no JWT: {_excerpt(out)}")
    return lines[-1]


def _call(
    api: httpx.Client, method: str, path: str, what: str, body: Any = None, **params: str
) -> Any:
    """One REST call; its JSON, or a failure with the status and the start of the body."""
    try:
        answer = api.request(method, path, json=body, params=params or None)
    except httpx.HTTPError as e:
        raise ContextForgeFailed(f"{what}: {method} {path} failed: {e!r}") from e
    if answer.status_code not in (200, 201):
        raise ContextForgeFailed(
            f"{what}: {method} {path} answered HTTP {answer.status_code}: {_excerpt(answer.text)}"
        )
    return answer.json()


def _tool_id(api: httpx.Client, gateway_id: str) -> tuple[str, str]:
    """The id and name of the upstream's ``add`` as ContextForge registered it."""
    tools = _call(api, "GET", "/v1/tools", "listing the tools", gateway_id=gateway_id, limit="0")
    if isinstance(tools, dict):  # the paginated form
        tools = tools.get("tools") or tools.get("items") or []
    for tool in tools:
        if ALLOWED_TOOL in (tool.get("originalName"), tool.get("original_name")):
            return str(tool["id"]), str(tool["name"])
    names = [t.get("name") for t in tools]
    raise ContextForgeFailed(f"the upstream's {ALLOWED_TOOL!r} is not among its tools: {names}")


def _set_up(base: str, token: str, upstream_url: str) -> tuple[str, str]:
    """Register the upstream and create the virtual server exposing ``add`` alone (the allow
    rule, see the module's docstring); its MCP endpoint and the tool's name there."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60, trust_env=False) as api:
        gateway = {
            "name": UPSTREAM_NAME,
            "url": upstream_url,
            "transport": "STREAMABLEHTTP",
            "visibility": "public",
        }
        registered = _call(api, "POST", "/v1/gateways", "registering the upstream", gateway)
        gateway_id = str(registered["id"])
        tool_id, tool_name = _tool_id(api, gateway_id)
        server = {"name": "bench-vs", "associated_tools": [tool_id], "visibility": "public"}
        body = {"server": server, "visibility": "public"}
        created = _call(api, "POST", "/v1/servers", "creating the virtual server", body)
    return f"{base}/servers/{created['id']}/mcp", tool_name


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole process group, SIGKILL after ``STOP_GRACE`` s if anything is left;
    returns when no process of the group is left (or after a bounded wait)."""
    group = server.pid  # start_new_session: the leader's pid is the group's id
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        server.wait(timeout=STOP_GRACE)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:  # helpers may outlive the leader for a moment
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    server.wait()


@contextmanager
def running_contextforge(upstream_url: str, *, tmp: Path) -> Iterator[ContextForge | None]:
    """ContextForge on a free loopback port in front of ``upstream_url`` (an MCP server over
    streamable HTTP on loopback), its files in ``tmp``; None (saying why) when it is not
    installed. Raises ``ContextForgeFailed`` when it does not start or refuses the setup.
    Stopped on the way out, with every process it started, whatever happened."""
    tmp.mkdir(parents=True, exist_ok=True)
    python = contextforge_python()
    if python is None:
        print(
            f"IBM ContextForge {CONTEXTFORGE_VERSION} is not installed in {VENV} (it needs "
            "Python 3.12 or 3.13): run `make bench-contextforge`",
            file=sys.stderr,
        )
        yield None
        return
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _environment(python, tmp, port)
    log = tmp / "contextforge.log"
    argv = [str(VENV / "bin" / "mcpgateway"), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            argv, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        start_seconds = _wait_healthy(base, server, log)
        token = _mint_token(python, env, tmp)
        url, tool = _set_up(base, token, upstream_url)
        yield ContextForge(
            url=url, token=token, pid=server.pid, tool=tool, log=log, start_seconds=start_seconds
        )
    finally:
        _stop(server)
