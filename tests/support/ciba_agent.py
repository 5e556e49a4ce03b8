"""An agent doing a bank transfer for its user through Tether, with raw HTTP only (httpx, and
``cryptography`` for its own key): no Tether library. Run as a script by the live tests:

    python ciba_agent.py ADDR AGENT_SPIFFE_ID KEY_PEM_FILE USER MODE [NOTIFY_PORT]

MODE ``poll`` or ``ping`` (then it listens on 127.0.0.1:NOTIFY_PORT, the notification
endpoint it was registered with). It asks for a decision on the transfer (``approval_required``
and the call's digest), asks its user to approve that call (CIBA), waits for the answer (polling,
or told by ping), redeems the approval, makes the call with it, tries it again, and tries a
substituted amount with a fresh approval; it prints what each step got as one JSON object.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

CIBA = "urn:openid:params:grant-type:ciba"
ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PING_TOKEN = "agent-ping-token-" + uuid.uuid4().hex


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion(key: ec.EllipticCurvePrivateKey, client_id: str, audience: str) -> str:
    """An RFC 7523 client assertion, ES256, signed by hand."""
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT"}
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
              "exp": now + 60, "jti": uuid.uuid4().hex}  # fmt: skip
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class Agent:
    def __init__(self, addr: str, client_id: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.addr, self.client_id, self.key = addr, client_id, key
        self.http = httpx.Client(base_url=addr, timeout=10)
        self.pinged: list[str] = []

    def auth(self) -> dict[str, str]:
        return {"client_assertion_type": ASSERTION, "instance_id": "pod-1",
                "client_assertion": assertion(self.key, self.client_id, self.addr)}  # fmt: skip

    def svid(self) -> str:
        issued = self.http.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                        **self.auth()})  # fmt: skip
        issued.raise_for_status()
        return str(issued.json()["access_token"])

    def decide(self, svid: str, amount: int, approval: str | None = None) -> dict[str, Any]:
        body = {
            "action": {"name": "call_tool",
                       "properties": {"arguments": {"amount": amount, "to": "bob"}}},
            "resource": {"type": "Tool", "id": "transfer",
                         "properties": {"name": "transfer", "data_class": "confidential",
                                        "state_changing": True}},
            "context": {"approval_token": approval} if approval else {},
        }  # fmt: skip
        answered = self.http.post("/access/v1/evaluation", json=body,
                                  headers={"Authorization": f"Bearer {svid}"})  # fmt: skip
        answered.raise_for_status()
        result: dict[str, Any] = answered.json()
        return result

    def ask(self, user: str, digest: str, amount: int, ping: bool) -> str:
        call = {
            "action": "call_tool",
            "resource": {"type": "Tool", "id": "transfer"},
            "arguments": {"amount": amount, "to": "bob"},
        }
        # The call itself, which Tether checks the digest against, and how a bank shows it.
        items = [{"type": "payment_initiation", "amount": f"{amount}.00", "creditor": "bob",
                  "call": call, "call_digest": digest}]  # fmt: skip
        form = {"login_hint": user, "scope": "openid", "binding_message": f"PAY-{amount}",
                "authorization_details": json.dumps(items), **self.auth()}  # fmt: skip
        if ping:
            form["client_notification_token"] = PING_TOKEN
        asked = self.http.post("/oauth2/bc-authorize", data=form)
        asked.raise_for_status()
        return str(asked.json()["auth_req_id"])

    def approval(self, auth_req_id: str, ping: bool) -> tuple[str, list[str]]:
        """The approval token, and the errors polling met on the way."""
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ping and auth_req_id not in self.pinged:
                time.sleep(0.1)  # told when the answer is in: no polling meanwhile
                continue
            answer = self.http.post("/oauth2/token", data={"grant_type": CIBA,
                                                            "auth_req_id": auth_req_id,
                                                            **self.auth()})  # fmt: skip
            if answer.status_code == 200:
                return str(answer.json()["access_token"]), seen
            seen.append(str(answer.json()["error"]))
            time.sleep(5.1 if seen[-1] in ("authorization_pending", "slow_down") else 0.1)
        raise SystemExit("no answer in time")

    def listen(self, port: int) -> None:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") == f"Bearer {PING_TOKEN}":
                    agent.pinged.append(str(json.loads(body)["auth_req_id"]))
                    self.send_response(204)
                else:
                    self.send_response(401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    addr, client_id, key_file, user, mode = sys.argv[1:6]
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    agent = Agent(addr, client_id, key)
    ping = mode == "ping"
    if ping:
        agent.listen(int(sys.argv[6]))
    svid = agent.svid()
    first = agent.decide(svid, 100)
    digest = first["context"]["call_digest"]
    token, polled = agent.approval(agent.ask(user, digest, 100, ping), ping)
    allowed = agent.decide(svid, 100, token)
    again = agent.decide(svid, 100, token)
    fresh, _ = agent.approval(agent.ask(user, digest, 100, ping), ping)
    substituted = agent.decide(svid, 10_000, fresh)
    print(json.dumps({
        "first": first["context"]["effect"], "polled": polled, "pinged": len(agent.pinged),
        "allowed": allowed["decision"], "again": again["decision"],
        "substituted": substituted["decision"],
        "fresh_still_good": agent.decide(svid, 100, fresh)["decision"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
