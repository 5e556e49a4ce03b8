"""Signing in to the console over HTTP, in process: the console is an OpenID client of the
provider beside it (``tether-console``), and the attacks on that flow — a foreign redirect, a
code injected into another browser, a forged ``state``, an open redirect through ``next``, a
session outliving its user — each fail."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tether.config import Settings

from .conftest import ISSUER, ROOT, TRUST_DOMAIN

PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        issuer=ISSUER,
        trust_domain=TRUST_DOMAIN,
        root_token=ROOT,
        password_memory_kib=32,
        password_time_cost=1,
    )


@pytest.fixture
async def person(client: httpx.AsyncClient) -> str:
    added = await client.post(
        "/v1/users", json={"name": "olga", "password": PASSWORD, "role": "security-admin"}
    )
    assert added.status_code == 201, added.text
    return "olga"


def _browser(app: httpx.AsyncClient) -> httpx.AsyncClient:
    """A browser on the same app: no operator token, cookies of its own, no redirects
    followed."""
    return httpx.AsyncClient(transport=app._transport, base_url=ISSUER)


async def _to_callback(browser: httpx.AsyncClient, next_path: str = "/console") -> str:
    """From the console's sign-in link to the provider's answer: the callback URL."""
    started = await browser.get("/console/login", params={"next": next_path})
    assert started.status_code == 303
    answered = await browser.get(started.headers["location"])
    if answered.status_code == 200:  # the sign-in page (no provider session in this browser)
        found = re.search(r'name="handle" value="([^"]+)"', answered.text)
        assert found
        form = {"handle": found.group(1), "username": "olga", "password": PASSWORD}
        answered = await browser.post("/oauth2/authorize/login", data=form)
    assert answered.status_code == 303, answered.text
    location: str = answered.headers["location"]
    assert location.startswith(f"{ISSUER}/console/callback?")
    return location


async def test_signing_in_to_the_console_goes_through_the_provider_and_starts_a_session(
    client: httpx.AsyncClient, person: str
) -> None:
    async with _browser(client) as browser:
        assert (await browser.get("/console")).headers["location"].startswith("/console/login")
        signed_in = await browser.get(await _to_callback(browser))
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/console"
        overview = await browser.get("/console")
        assert overview.status_code == 200
        assert "olga · security-admin" in overview.text


async def test_the_console_client_is_redirected_only_to_its_own_callback(
    client: httpx.AsyncClient,
) -> None:
    query = {"response_type": "code", "client_id": "tether-console",
             "redirect_uri": "https://evil.example/console/callback", "scope": "openid",
             "code_challenge": "x" * 43, "code_challenge_method": "S256"}  # fmt: skip
    async with _browser(client) as browser:
        shown = await browser.get("/oauth2/authorize", params=query)
    assert shown.status_code == 400, "shown as an error page, never redirected"
    assert "evil.example" not in shown.headers.get("location", "")


async def test_the_console_client_cannot_be_registered_again_or_removed(
    client: httpx.AsyncClient,
) -> None:
    body = {"client_id": "tether-console", "name": "x", "redirect_uris": ["https://a.example/"]}
    assert (await client.post("/v1/clients", json=body)).status_code == 400
    assert (await client.delete("/v1/clients/tether-console")).status_code == 404


async def test_a_code_injected_into_another_browser_starts_no_session(
    client: httpx.AsyncClient, person: str
) -> None:
    async with _browser(client) as victim, _browser(client) as attacker:
        callback = await _to_callback(attacker)
        answered = await victim.get(callback)
        assert answered.status_code == 401
        assert "tether_console" not in answered.cookies
        assert (await victim.get("/console")).status_code == 303, "still not signed in"


async def test_a_callback_with_another_state_is_refused(
    client: httpx.AsyncClient, person: str
) -> None:
    async with _browser(client) as browser:
        callback = await _to_callback(browser)
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        params["state"] = "forged"
        answered = await browser.get("/console/callback", params=params)
        assert answered.status_code == 401
        assert "state" in answered.text


async def test_next_cannot_send_the_person_off_the_console(
    client: httpx.AsyncClient, person: str
) -> None:
    async with _browser(client) as browser:
        for target in ("https://evil.example/", "//evil.example/console", "/oauth2/token"):
            signed_in = await browser.get(await _to_callback(browser, target))
            assert signed_in.headers["location"] == "/console", target


async def test_disabling_a_person_ends_their_console_session(
    client: httpx.AsyncClient, person: str
) -> None:
    async with _browser(client) as browser:
        await browser.get(await _to_callback(browser))
        assert (await browser.get("/console")).status_code == 200
        disabled = await client.post(f"/v1/users/{person}/disable", json={})
        assert disabled.status_code == 200, disabled.text
        assert (await browser.get("/console")).status_code == 303, "sent to sign in again"


async def test_a_console_error_is_a_page_and_the_apis_stay_json(client: httpx.AsyncClient) -> None:
    async with _browser(client) as browser:
        page = await browser.get("/console/callback", params={"state": "x", "code": "y"})
    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    api = await client.get("/v1/agents/nobody")
    assert api.headers["content-type"].startswith("application/json")
