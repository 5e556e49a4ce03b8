"""Delegation against a real ``tether serve --dev``: a generic OAuth client (Authlib) signs a
person in, gets their consent and exchanges their token, using only discovery; and
``tether login`` signs a person in from the command line, by browser or by script.

The browser is played by an HTTP client that loads the pages and posts their forms, as a person
would, and follows the redirect to wherever it points (for ``tether login``: the command's own
loopback listener)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey

from tether.cli import exit_codes
from tether.crypto.assertion import generate_agent_key

from .conftest import TD, Live, _start

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
PASSWORD = "correct horse battery staple"
REDIRECT = "https://shop.example/callback"
POLICY = """
@id("shop-bot-reads-orders-for-its-user")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"read",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:read") };

@id("shop-bot-writes-orders-for-its-user")
permit (principal == Tether::Agent::"shop-bot", action == Tether::Action::"write",
        resource == Tether::Api::"orders")
when { context has user && context.scopes.contains("orders:write") };
"""
ORDERS = {"type": "Api", "id": "orders", "properties": {"name": "orders", "data_class": "internal"}}


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Live]:
    yield from _start(tmp_path, "--dev")


def _setup(server: Live) -> bytes:
    """shop-bot (with a key), its web client, alice, and the policy; the agent's key."""
    key = generate_agent_key()
    with server.ops() as ops:
        agent = {"name": "shop-bot", "owners": ["sam"], "declarations": {"resources": ["orders"]}}
        assert ops.post("/v1/agents", json=agent).status_code == 201
        added = ops.post("/v1/agents/shop-bot/keys", json={"jwk": key.public_jwk})
        assert added.status_code == 201, added.text
        client = {"client_id": "shop-web", "name": "Shop", "redirect_uris": [REDIRECT],
                  "agent": "shop-bot"}  # fmt: skip
        assert ops.post("/v1/clients", json=client).status_code == 201
        user = {"name": "alice", "password": PASSWORD}
        assert ops.post("/v1/users", json=user).status_code == 201
        assert ops.post("/v1/policies", json={"text": POLICY}).status_code == 201
    return key.private_pem


def _handle(page: httpx.Response) -> str:
    found = re.search(r'name="handle" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _person(url: str) -> str:
    """A person at a browser: signs in, allows, and returns where they were sent."""
    with httpx.Client() as browser:
        login = browser.get(url)
        assert login.status_code == 200, login.text
        base = url.split("/oauth2/", maxsplit=1)[0]
        form = {"handle": _handle(login), "username": "alice", "password": PASSWORD}
        page = browser.post(f"{base}/oauth2/authorize/login", data=form)
        if page.status_code == 200:  # the consent page
            decision = {"handle": _handle(page), "decision": "approve"}
            page = browser.post(f"{base}/oauth2/authorize/consent", data=decision)
        assert page.status_code == 303, page.text
        return page.headers["location"]


def test_a_generic_oauth_client_signs_in_gets_consent_and_exchanges_by_discovery(
    dev: Live,
) -> None:
    private_pem = _setup(dev)
    meta = httpx.get(f"{dev.addr}/.well-known/openid-configuration").json()
    with OAuth2Client(
        client_id="shop-web", redirect_uri=REDIRECT, scope="openid orders:read",
        code_challenge_method="S256",
    ) as app:  # fmt: skip
        verifier = "v" * 20 + os.urandom(24).hex()
        url, state = app.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier,
            purpose="track my orders", purpose_code="order-tracking",
        )  # fmt: skip
        back = _person(url)
        user = app.fetch_token(
            meta["token_endpoint"],
            authorization_response=back,
            code_verifier=verifier,
            state=state,
        )
    assert user["id_token"]
    assert TOKEN_EXCHANGE in meta["grant_types_supported"]
    spiffe_id = f"spiffe://{TD}/agent/shop-bot"
    with OAuth2Client(
        client_id=spiffe_id,
        client_secret=ECKey.import_key(private_pem),
        token_endpoint_auth_method=PrivateKeyJWT(meta["token_endpoint"], alg="ES256"),
    ) as agent:
        delegated = agent.fetch_token(
            meta["token_endpoint"],
            grant_type=TOKEN_EXCHANGE,
            subject_token=user["access_token"],
            subject_token_type="urn:ietf:params:oauth:token-type:access_token",
            instance_id="pod-1",
        )
    assert delegated["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert delegated["scope"] == "orders:read"
    assert _decide(dev, delegated["access_token"], "read") is True
    assert _decide(dev, delegated["access_token"], "write") is False  # not in the grant


def _decide(server: Live, token: str, action: str) -> bool:
    answer = httpx.post(
        f"{server.addr}/access/v1/evaluation",
        json={"action": {"name": action}, "resource": ORDERS},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    decision: bool = answer.json()["decision"]
    return decision


def _tether(
    server: Live, credentials: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TETHER_ADDR": server.addr, "TETHER_CREDENTIALS": str(credentials)}
    env.pop("TETHER_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_tether_login_by_script_stores_the_tokens_for_later_commands(
    dev: Live, tmp_path: Path
) -> None:
    _setup(dev)
    credentials = tmp_path / "home" / "credentials.json"
    done = _tether(dev, credentials, "login", "-u", "alice", "--password-stdin", "-o", "json",
                   stdin=PASSWORD + "\n")  # fmt: skip
    assert done.returncode == exit_codes.OK, done.stderr
    printed = json.loads(done.stdout)
    assert printed["user"] == "alice"
    assert PASSWORD not in done.stdout + done.stderr
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert json.loads(credentials.read_text())["access_token"] == printed["access_token"]
    # A later command, with no TETHER_TOKEN, acts as alice: her consent is hers.
    create = ("grant", "create", "--agent", "shop-bot", "--scope", "orders:read", "--purpose",
              "my orders", "--purpose-code", "order-tracking", "-o", "json")  # fmt: skip
    made = _tether(dev, credentials, *create)
    assert made.returncode == exit_codes.OK, made.stderr
    assert json.loads(made.stdout)["user"] == "alice"
    listed = _tether(dev, credentials, "grant", "list", "-o", "json")
    assert [g["user"] for g in json.loads(listed.stdout)] == ["alice"]


def test_tether_login_with_a_wrong_password_stores_nothing(dev: Live, tmp_path: Path) -> None:
    _setup(dev)
    credentials = tmp_path / "credentials.json"
    done = _tether(dev, credentials, "login", "-u", "alice", "--password-stdin",
                   stdin="not the password\n")  # fmt: skip
    assert done.returncode == exit_codes.AUTH, done.stderr
    assert not credentials.exists()


def test_tether_login_by_browser_receives_the_code_on_its_loopback_listener(
    dev: Live, tmp_path: Path
) -> None:
    _setup(dev)
    credentials = tmp_path / "credentials.json"
    env = {**os.environ, "TETHER_ADDR": dev.addr, "TETHER_CREDENTIALS": str(credentials)}
    env.pop("TETHER_TOKEN", None)
    command = [sys.executable, "-m", "tether", "login", "--no-browser", "-o", "json"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = line.split("Sign in at: ", 1)[1].strip()
        assert "code_challenge_method=S256" in url
        location = _person(url)
        assert location.startswith("http://127.0.0.1:")
        arrived = httpx.get(location)  # the browser follows the redirect to the command
        assert arrived.status_code == 200
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == exit_codes.OK, err
    assert json.loads(out)["user"] == "alice"
    assert credentials.exists()


def test_tether_login_needs_password_stdin_with_a_name(dev: Live, tmp_path: Path) -> None:
    done = _tether(dev, tmp_path / "c.json", "login", "-u", "alice")
    assert done.returncode == exit_codes.USAGE
