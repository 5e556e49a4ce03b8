"""``tether demo``: start a dev server, register an example agent with a key, get it a token,
and have the checkpoint decide its calls.

Everything on the embedded defaults (SQLite in a throwaway data directory), driven over HTTP
exactly as a user or an agent would: identity (registration, key, JWT-SVID, a replay refused),
then decisions (a policy applied, a permitted tool call allowed, an unpermitted one denied, the
token revoked and refused, every decision on record). It exits 0 only if every step behaved as
expected; ``--serve`` keeps the server running afterwards. What the server answers is printed
as text (:func:`_ok`, :func:`_say`): never markup, every character a terminal would act on
shown as ``<U+XXXX>``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.text import Text

from tether._internal.ids import new_secret
from tether.audit.bundle import BundleInvalid, verify_bundle
from tether.cli.output import printable
from tether.crypto.assertion import generate_agent_key, sign_client_assertion
from tether.identity.client_auth import ASSERTION_TYPE

console = Console()


class DemoFailed(Exception):
    pass


def _ok(message: str) -> None:
    """A step that behaved: ``✔`` and ``message`` (which may hold the server's words) as text."""
    console.print(Text.assemble(("✔", "green"), " ", printable(message)))


def _say(message: str) -> None:
    """``message`` (which may hold the server's words) as text."""
    console.print(Text(printable(message)))


def _failed(exc: DemoFailed) -> None:
    """Why the demo failed (often the server's answer), as text."""
    console.print(Text.assemble(("demo failed:", "bold red"), " ", printable(exc)))


def demo(
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the server running afterwards")
    ] = False,
    port: Annotated[int, typer.Option(help="Port (0: any free one)")] = 0,
) -> None:
    """Run the demo on the embedded defaults."""
    port = port or _free_port()
    addr = f"http://127.0.0.1:{port}"
    root = "tto_" + new_secret(24)
    env = {**os.environ, "TETHER_ROOT_TOKEN": root}
    cmd = [sys.executable, "-m", "tether", "serve", "--dev", "--port", str(port)]
    console.rule("[bold]Tether demo")
    console.print(f"starting [cyan]tether serve --dev[/] on {addr}")
    # The server's banner repeats what the demo prints; its log (JSON lines: the alerts the
    # demo provokes among them) goes to a file, kept and shown in part if the demo fails.
    fd, log = tempfile.mkstemp(prefix="tether-demo-", suffix=".log")
    with os.fdopen(fd, "w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=out, text=True)  # noqa: S603
    try:
        _wait_ready(addr, server)
        _play(addr, root)
        console.print("[bold green]demo passed[/]")
        if serve:
            console.print(f"server running: export TETHER_ADDR={addr} TETHER_TOKEN={root}")
            console.print(f"server log: {log} (removed on exit); press Ctrl-C to stop")
            server.wait()
    except DemoFailed as exc:
        _failed(exc)
        _say(f"the server's log ({log}), last lines:\n" + _tail(Path(log)))
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        server.wait(timeout=15)
    Path(log).unlink()  # kept when the demo failed (it exits above), gone when it passed


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(addr: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DemoFailed(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{addr}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise DemoFailed("the server did not become ready within 30 s")


def _expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise DemoFailed(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    _ok(what)
    return response.json()


def _play(addr: str, root: str) -> None:
    ops = httpx.Client(base_url=addr, headers={"Authorization": f"Bearer {root}"}, timeout=10)
    with ops:
        body = {
            "name": "faq-bot",
            "owners": ["alice"],
            "description": "answers customers' questions from the FAQ database",
            "declarations": {
                "tools": ["search_faq"],
                "resources": ["postgres:faq"],
                "data_classes": ["public"],
            },
        }
        agent = _expect(ops.post("/v1/agents", json=body), 201, "registered agent faq-bot")
        _say(
            f"  {agent['spiffe_id']} risk {agent['risk']['score']} ({agent['risk']['tier']}),"
            f" state {agent['state']}"
        )
        pair = generate_agent_key()
        key = _expect(
            ops.post("/v1/agents/faq-bot/keys", json={"jwk": pair.public_jwk}),
            201,
            "registered the agent's public key",
        )
        _say(f"  kid {key['kid']} ({key['alg']}); the private key never leaves the agent")
        meta = _expect(ops.get("/.well-known/oauth-authorization-server"), 200, "read discovery")
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": sign_client_assertion(
                pair.private_pem,
                client_id=agent["spiffe_id"],
                audience=meta["token_endpoint"],
                now=int(time.time()),
            ),
            "instance_id": "pod-1",
        }
        issued = _expect(httpx.post(meta["token_endpoint"], data=form), 200, "got a JWT-SVID")
        _say(f"  expires in {issued['expires_in']} s")
        replay = httpx.post(meta["token_endpoint"], data=form)
        if replay.status_code != 401 or replay.json().get("error") != "invalid_client":
            raise DemoFailed("a replayed assertion was not refused")
        _ok("a replayed assertion is refused (invalid_client)")
        instances = _expect(
            ops.get("/v1/agents/faq-bot/instances"), 200, "the instance is on record"
        )["instances"]
        _say(f"  {instances[0]['spiffe_id']} first seen {instances[0]['first_seen']}")
        _decisions(ops, issued["access_token"])
        _monitoring(ops, addr, agent["spiffe_id"])


#: What faq-bot may do: search the FAQ, a tool of the support knowledge base's MCP server.
DEMO_POLICY = """
@id("faq-bot-searches-the-faq")
permit (principal == Tether::Agent::"faq-bot", action == Tether::Action::"call_tool",
        resource in Tether::McpServer::"support-kb");
"""


def _tool_call(name: str, server: str) -> dict[str, Any]:
    return {
        "action": {"name": "call_tool", "properties": {"arguments": {"q": "business hours"}}},
        "resource": {
            "type": "Tool",
            "id": name,
            "properties": {
                "name": name,
                "data_class": "public",
                "state_changing": name != "search_faq",
                "parents": [{"type": "McpServer", "id": server}],
            },
        },
    }


def _decide(ops: httpx.Client, token: str, tool: str, server: str) -> dict[str, Any]:
    answer = ops.post(
        "/access/v1/evaluation?explain=true",
        json=_tool_call(tool, server),
        headers={"Authorization": f"Bearer {token}"},
    )
    if answer.status_code != 200:
        raise DemoFailed(f"decision on {tool}: HTTP {answer.status_code} {answer.text[:300]}")
    decided: dict[str, Any] = answer.json()
    return decided


def _decisions(ops: httpx.Client, token: str) -> None:
    applied = _expect(ops.post("/v1/policies", json={"text": DEMO_POLICY}), 201, "applied a policy")
    _say(f"  version {applied['version']}: faq-bot may call the tools of support-kb")
    allowed = _decide(ops, token, "search_faq", "support-kb")
    if allowed["decision"] is not True:
        raise DemoFailed(f"search_faq was not allowed: {allowed['context']}")
    _ok(
        f"search_faq is allowed by {allowed['context']['policy_ids']} "
        f"(decision {allowed['context']['id']}, recorded before the answer)"
    )
    denied = _decide(ops, token, "drop_tables", "admin-db")
    if denied["decision"] is not False:
        raise DemoFailed("drop_tables (of admin-db) was allowed")
    _ok(f"drop_tables (of admin-db) is denied: {denied['context']['reasons'][0]}")
    revoke = {"agent": "faq-bot", "instance": "pod-1", "reason": "demo"}
    _expect(ops.post("/v1/svid/revocations", json=revoke), 201, "revoked pod-1's tokens")
    refused = _decide(ops, token, "search_faq", "support-kb")
    if refused["decision"] is not False:
        raise DemoFailed("a revoked token was still allowed")
    _ok(f"the revoked token is refused: {refused['context']['reasons'][0]}")
    listed = ops.get("/v1/audit", params={"type_prefix": "decision", "limit": 10})
    records = listed.json()["records"] if listed.status_code == 200 else []
    if len(records) != 3:
        raise DemoFailed(f"{len(records)} decision records on record, not 3")
    _ok("every decision is on record")
    for record in records:
        details = record["details"]
        _say(f"  {details['decision_id']} {details['effect']!s:<5} {details['resource']}")
    _proof(ops, records[0]["id"])


def _proof(ops: httpx.Client, record_id: str) -> None:
    """The log verifies, and the first decision's proof checks offline with the public key."""
    deadline = time.monotonic() + 5
    while (proof := ops.get(f"/v1/audit/records/{record_id}/proof")).status_code == 503:
        if time.monotonic() > deadline:  # a checkpoint is signed within a second
            raise DemoFailed("no signed checkpoint covered the decision within 5 s")
        time.sleep(0.2)
    bundle = _expect(proof, 200, "proved the first decision's record")
    key = _expect(ops.get("/v1/audit/key"), 200, "read the log's verifier key")["verifier_key"]
    try:
        verify_bundle(bundle, verifier_key=key)
    except BundleInvalid as exc:
        raise DemoFailed(f"the proof bundle does not verify: {exc}") from exc
    _ok(
        f"the bundle checks offline with the public key alone: entry "
        f"{bundle['index']} of {bundle['log']}, in the tree of {bundle['size']} signed"
    )
    report = _expect(ops.get("/v1/audit/verify"), 200, "verified the audit log")
    if not report["ok"]:
        raise DemoFailed(f"the audit log does not verify: {report['logs']}")
    sizes = ", ".join(f"{log['size']} entries" for log in report["logs"])
    _say(f"  hash chain and Merkle tree intact, every checkpoint's signature good ({sizes})")


def _monitoring(ops: httpx.Client, addr: str, spiffe_id: str) -> None:
    """An unregistered caller knocks; the monitor raises its alerts, and the posture report
    names exactly the problems planted in this environment: that caller, and the resource
    faq-bot declared but never used."""
    ghost = spiffe_id.replace("/agent/faq-bot", "/agent/ghost-bot") + "/i/1"
    forged = sign_client_assertion(
        generate_agent_key().private_pem, client_id=ghost, audience=addr, now=int(time.time())
    )
    refused = _decide(ops, forged, "search_faq", "support-kb")
    if refused["decision"] is not False:
        raise DemoFailed("a token of an unregistered agent was allowed")
    _ok("a token of an unregistered agent (ghost-bot) is refused")
    planted = {
        ("unregistered_caller", ghost),
        ("unused_declaration", "faq-bot: resources postgres:faq"),
    }
    report = _posture_naming(ops, planted)
    alerts = _expect(ops.get("/v1/alerts"), 200, "the monitor raised its alerts")["alerts"]
    for alert in sorted(alerts, key=lambda a: str(a["kind"])):
        _say(f"  {alert['severity']:<8} {alert['kind']}: {alert['summary']}")
    _ok("tether posture names exactly the planted problems:")
    for problem in report["problems"]:
        _say(f"  {problem['kind']}: {problem['subject']} ({problem['summary']})")
    for agent in report["unused_permissions"]:
        if agent.get("suggested_policy"):
            _say(f"  least privilege for {agent['agent']}, from what it used:")
            _say("    " + agent["suggested_policy"].replace("\n", "\n    "))


def _posture_naming(ops: httpx.Client, planted: set[tuple[str, str]]) -> dict[str, Any]:
    """The posture report, once it names exactly the planted problems (the monitor works in
    the background, writing what agents used every few seconds: within 30 s); DemoFailed if
    it does not in time."""
    deadline = time.monotonic() + 30
    while True:
        answer = ops.get("/v1/posture")
        if answer.status_code != 200:
            raise DemoFailed(f"posture: HTTP {answer.status_code} {answer.text[:300]}")
        report: dict[str, Any] = answer.json()
        named = {(p["kind"], p["subject"]) for p in report["problems"]}
        if named == planted:
            return report
        if time.monotonic() > deadline:
            raise DemoFailed(f"posture names {sorted(named)}, planted {sorted(planted)}")
        time.sleep(0.2)
