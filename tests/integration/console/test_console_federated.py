"""Signing in to the console through an external OpenID provider: a second real Tether, at
``localhost`` (so the browser keeps the two servers' cookies apart), trusted here by issuer
URL as ``corp``. The person picks ``corp`` on the sign-in page, signs in there, and lands on
this console as the person ``<sub>@corp``; a console role given to that person applies."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.integration.live.conftest import Live, ServerProcess

from .conftest import DESKTOP, PASSWORD, open_console


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """This Tether (trusting ``corp``), with the provider running beside it."""
    home = tmp_path_factory.mktemp("console-federated")
    idp = ServerProcess(home / "idp", log=home / "idp.log")
    idp.addr = f"http://localhost:{idp.port}"
    idp.env = {"TETHER_ISSUER": idp.addr}
    here = ServerProcess(home / "here", log=home / "here.log")
    provider = {"name": "corp", "issuer": idp.addr, "audience": "tether-a"}
    here.env = {"TETHER_EXTERNAL_PROVIDERS": json.dumps([provider])}
    try:
        idp.start()
        with idp.ops() as ops:
            person = {"name": "carol", "password": PASSWORD, "email": "carol@corp.example"}
            assert ops.post("/v1/users", json=person).status_code == 201
            callback = f"{here.addr}/oauth2/authorize/federated/callback"
            client = {"client_id": "tether-a", "name": "Tether A", "redirect_uris": [callback]}
            assert ops.post("/v1/clients", json=client).status_code == 201
        here.start()
        yield Live(addr=here.addr, data_dir=here.data_dir, verify=True)
    finally:
        here.stop()
        idp.stop()


def _sign_in_with_corp(browser: Browser, server: Live) -> Iterator[str]:
    for console in open_console(browser, server, DESKTOP):
        console.open("/console")
        console.page.get_by_role("link", name="corp").click()
        console.page.get_by_label("User name").fill("carol")
        console.page.get_by_label("Password").fill(PASSWORD)
        console.page.get_by_role("button", name="Sign in").click()
        console.page.wait_for_url(re.compile(rf"^{re.escape(server.addr)}/console/?$"))
        console.shot("overview-federated")
        yield console.page.locator("header.top").inner_text()


def test_a_person_of_an_external_provider_signs_in_to_the_console(
    browser: Browser, server: Live
) -> None:
    [header] = list(_sign_in_with_corp(browser, server))
    assert "@corp" in header, "the person is this Tether's user for corp's subject"
    with server.ops() as ops:
        [carol] = [u for u in ops.get("/v1/users").json()["users"] if u["name"].endswith("@corp")]
        assert carol["issuer"].startswith("http://localhost:")
        given = ops.put(f"/v1/users/{carol['name']}/role", json={"role": "auditor"})
        assert given.status_code == 200, given.text
    [header] = list(_sign_in_with_corp(browser, server))
    assert "auditor" in header, "the console role given to the federated person applies"
