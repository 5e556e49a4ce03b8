"""Alice, as the demo plays her: at a browser, and at her phone.

Her browser signs in through Tether's built-in OpenID provider exactly as a person's would
(authorization code with PKCE, the sign-in page, then the consent page that names the agent,
the scopes and the purpose), on behalf of an agent's web client; what comes back is her own
access token for that client, which the agent exchanges for a delegated one. Her phone signs in
on its own (the first-party ``tether-cli`` client, the account scope) and reads her approval
inbox — what the console's inbox and a push notification show her.

Only HTTP here (httpx), no Tether internals: what any browser or app could do.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

__all__ = ["Browser", "PeopleFailed", "Phone"]

#: The first-party public client of ``tether login`` (and of the phone here).
CLI_CLIENT = "tether-cli"
_HANDLE = re.compile(r'name="handle" value="([^"]+)"')


class PeopleFailed(RuntimeError):
    """A page did not answer as a person's browser expects; the message says which."""


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _handle(page: httpx.Response, what: str) -> str:
    found = _HANDLE.search(page.text)
    if page.status_code != 200 or found is None:
        raise PeopleFailed(f"{what}: HTTP {page.status_code} {page.text[:200]}")
    return found.group(1)


def _code(answer: httpx.Response, what: str) -> str:
    if answer.status_code != 303:
        raise PeopleFailed(f"{what}: HTTP {answer.status_code} {answer.text[:200]}")
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    if "code" not in query:
        raise PeopleFailed(f"{what}: sent back without a code: {query.get('error')}")
    return query["code"][0]


def _redeem(http: httpx.Client, client_id: str, redirect_uri: str, code: str, verifier: str) -> str:
    """The access token the authorization code gives the (public, PKCE) client."""
    token = http.post("/oauth2/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": client_id, "code_verifier": verifier})  # fmt: skip
    if token.status_code != 200:
        raise PeopleFailed(f"the code for {client_id}: HTTP {token.status_code} {token.text[:200]}")
    return str(token.json()["access_token"])


class Browser:
    """Alice at a browser (its cookies are her sign-in session)."""

    def __init__(self, addr: str, user: str, password: str) -> None:
        self.addr = addr
        self.user = user
        self._password = password
        self._http = httpx.Client(base_url=addr, timeout=10)

    def close(self) -> None:
        self._http.close()

    def consent(
        self, *, client_id: str, redirect_uri: str, scope: str, purpose: str, purpose_code: str
    ) -> tuple[str, list[str]]:
        """Sign in (unless signed in already) and allow the client's agent ``scope`` for
        ``purpose``: her access token for the client, and what the consent page showed her."""
        verifier, challenge = _pkce()
        query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                 "scope": f"openid {scope}", "state": secrets.token_urlsafe(16),
                 "code_challenge": challenge, "code_challenge_method": "S256",
                 "purpose": purpose, "purpose_code": purpose_code}  # fmt: skip
        page = self._http.get(f"/oauth2/authorize?{urlencode(query)}")
        if 'name="password"' in page.text:
            form = {"handle": _handle(page, "the sign-in page"), "username": self.user,
                    "password": self._password}  # fmt: skip
            page = self._http.post("/oauth2/authorize/login", data=form)
        shown = _shown(page.text)
        decision = {"handle": _handle(page, "the consent page"), "decision": "approve"}
        code = _code(self._http.post("/oauth2/authorize/consent", data=decision), "consenting")
        return _redeem(self._http, client_id, redirect_uri, code, verifier), shown


def _shown(html: str) -> list[str]:
    """The consent page's words, tags stripped, one line each (what she reads)."""
    text = re.sub(r"<(head|script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    text = re.sub(r"</?(strong|span|em|b|i)\b[^>]*>", "", text)  # inline: the words stay joined
    lines = (
        re.sub(r"\s+", " ", line).strip() for line in re.sub(r"<[^>]+>", "\n", text).split("\n")
    )
    return [line for line in lines if line]


class Phone:
    """Alice's phone: her own sign-in (account scope) and her approval inbox."""

    def __init__(self, addr: str, user: str, password: str) -> None:
        self._http = httpx.Client(base_url=addr, timeout=10)
        self._me = {"Authorization": f"Bearer {self._sign_in(user, password)}"}

    def close(self) -> None:
        self._http.close()

    def _sign_in(self, user: str, password: str) -> str:
        redirect = "http://127.0.0.1:9/callback"
        verifier, challenge = _pkce()
        query = {"response_type": "code", "client_id": CLI_CLIENT, "redirect_uri": redirect,
                 "scope": "openid tether:account", "state": secrets.token_urlsafe(16),
                 "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
        page = self._http.get(f"/oauth2/authorize?{urlencode(query)}",
                              headers={"Accept": "application/json"})  # fmt: skip
        if page.status_code != 200:
            raise PeopleFailed(f"the phone's sign-in: HTTP {page.status_code} {page.text[:200]}")
        form = {"handle": page.json()["handle"], "username": user, "password": password}
        code = _code(self._http.post("/oauth2/authorize/login", data=form), "the phone's sign-in")
        return _redeem(self._http, CLI_CLIENT, redirect, code, verifier)

    def inbox(self) -> list[dict[str, Any]]:
        """The approval requests waiting for her."""
        listed = self._http.get("/v1/approvals", params={"state": "pending"}, headers=self._me)
        if listed.status_code != 200:
            raise PeopleFailed(f"her inbox: HTTP {listed.status_code} {listed.text[:200]}")
        found: list[dict[str, Any]] = listed.json()["approvals"]
        return found

    def show(self, approval_id: str) -> dict[str, Any]:
        answer = self._http.get(f"/v1/approvals/{approval_id}", headers=self._me)
        if answer.status_code != 200:
            raise PeopleFailed(f"approval {approval_id}: HTTP {answer.status_code}")
        found: dict[str, Any] = answer.json()
        return found

    def answer(self, approval_id: str, verb: str) -> None:
        done = self._http.post(f"/v1/approvals/{approval_id}/{verb}", json={}, headers=self._me)
        if done.status_code != 200:
            raise PeopleFailed(f"{verb} {approval_id}: HTTP {done.status_code} {done.text[:200]}")
