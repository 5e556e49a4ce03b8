"""A person answering approval requests, with raw HTTP only (httpx): no Tether library. Run as
a script by the live tests:

    python ciba_user.py ADDR USER COUNT   (the password on standard input)

It signs in through Tether's built-in OpenID provider as a browser would (authorization code
with PKCE, the sign-in form in its JSON form), then approves the first COUNT requests that
reach its inbox (each once it has read it for READING seconds), and prints their ids as a
JSON list.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sys
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

CLIENT_ID = "tether-cli"  # the first-party public client of `tether login`
REDIRECT = "http://127.0.0.1:9/callback"
READING = 2.0  # seconds between seeing a request and answering it


def sign_in(http: httpx.Client, user: str, password: str) -> str:
    """The person's own access token (the account scope: what answering needs)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT,
             "scope": "openid tether:account", "state": secrets.token_urlsafe(16),
             "code_challenge": challenge.rstrip(b"=").decode(),
             "code_challenge_method": "S256"}  # fmt: skip
    page = http.get(f"/oauth2/authorize?{urlencode(query)}", headers={"Accept": "application/json"})
    page.raise_for_status()
    form = {"handle": page.json()["handle"], "username": user, "password": password}
    posted = http.post(page.json().get("action", "/oauth2/authorize/login"), data=form)
    assert posted.status_code == 303, posted.text
    code = parse_qs(urlsplit(posted.headers["location"]).query)["code"][0]
    token = http.post("/oauth2/token", data={"grant_type": "authorization_code", "code": code,
                                              "redirect_uri": REDIRECT, "client_id": CLIENT_ID,
                                              "code_verifier": verifier})  # fmt: skip
    token.raise_for_status()
    return str(token.json()["access_token"])


def main() -> None:
    addr, user, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    password = sys.stdin.readline().rstrip("\n")
    http = httpx.Client(base_url=addr, timeout=10)
    me = {"Authorization": f"Bearer {sign_in(http, user, password)}"}
    answered: list[str] = []
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 90
    while len(answered) < count and time.monotonic() < deadline:
        inbox = http.get("/v1/approvals", params={"state": "pending"}, headers=me)
        inbox.raise_for_status()
        for request in inbox.json()["approvals"]:
            # A person reads the request before answering: the agent's first poll, made as
            # soon as it asked, finds it pending.
            if time.monotonic() - seen.setdefault(request["id"], time.monotonic()) < READING:
                continue
            approved = http.post(f"/v1/approvals/{request['id']}/approve", json={}, headers=me)
            approved.raise_for_status()
            answered.append(request["id"])
        time.sleep(0.2)
    print(json.dumps(answered))


if __name__ == "__main__":
    main()
