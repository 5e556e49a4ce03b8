"""Signing in to the console through Tether's own OpenID provider, its session, its headers
and its CSRF rule, in Debian's Chromium."""

from __future__ import annotations

import re

import httpx

from tests.integration.live.conftest import Live

from .conftest import Console, add_person


def test_a_person_signs_in_through_the_provider_and_lands_on_the_overview(
    console: Console, server: Live
) -> None:
    add_person(server, "olga", "security-admin")
    console.sign_in("olga")
    assert console.page.get_by_role("heading", name="Overview").is_visible()
    assert console.page.get_by_text("olga · security-admin").is_visible()
    console.shot("overview")


def test_a_page_asked_for_before_signing_in_is_shown_after_it(
    console: Console, server: Live
) -> None:
    add_person(server, "pia", "auditor")
    console.open("/console/signed-out?x=1")
    console.open("/console?from=link")
    assert "/oauth2/authorize" in console.page.url
    console.shot("sign-in")
    console.page.get_by_label("User name").fill("pia")
    console.page.get_by_label("Password").fill("correct horse battery staple")
    console.page.get_by_role("button", name="Sign in").click()
    console.page.wait_for_url(re.compile(r".*/console\?from=link$"))


def test_signing_out_ends_the_console_session(console: Console, server: Live) -> None:
    add_person(server, "quinn")
    console.sign_in("quinn")
    console.page.get_by_role("button", name="Sign out").click()
    console.page.wait_for_url(re.compile(r".*/console/signed-out$"))
    console.shot("signed-out")
    console.open("/console")
    assert "/oauth2/authorize" in console.page.url, "no session left: sent to sign in"


def test_every_console_page_forbids_inline_script_and_framing(server: Live) -> None:
    page = httpx.get(f"{server.addr}/console/signed-out")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"


def test_a_console_form_without_the_csrf_token_is_refused(console: Console, server: Live) -> None:
    add_person(server, "rosa")
    console.sign_in("rosa")
    cookies = {c["name"]: c["value"] for c in console.page.context.cookies()}
    with httpx.Client(base_url=server.addr, cookies=cookies) as forged:
        answer = forged.post("/console/logout", data={"csrf": "guessed"})
        assert answer.status_code == 403
        assert "csrf_refused" in answer.text
        other_site = forged.post(
            "/console/logout", headers={"Origin": "https://evil.example"}, data={}
        )
        assert other_site.status_code == 403
    console.open("/console")
    assert console.page.get_by_role("heading", name="Overview").is_visible(), "still signed in"


def test_a_console_session_cookie_is_http_only_and_kept_to_the_console(
    console: Console, server: Live
) -> None:
    add_person(server, "sami")
    console.sign_in("sami")
    [session] = [c for c in console.page.context.cookies() if c["name"] == "tether_console"]
    assert session["httpOnly"] is True
    assert session["path"] == "/console"
    assert session["sameSite"] == "Lax"


def _tab_to(console: Console, name: str, limit: int = 40) -> None:
    """Press Tab until the focused element is the link or button named ``name``."""
    for _ in range(limit):
        console.page.keyboard.press("Tab")
        focused = console.page.evaluate("document.activeElement.textContent.trim()")
        if focused == name:
            return
    raise AssertionError(f"{name!r} is not reachable with Tab")


def test_the_console_is_used_by_keyboard_alone(console: Console, server: Live) -> None:
    add_person(server, "tove", "auditor")
    console.open("/console")
    # The user name field takes the focus on arrival. Chromium runs `autofocus` at its next
    # rendering step, which may come after the load event: typing earlier would go nowhere.
    console.page.wait_for_function("document.activeElement?.id === 'username'", timeout=5000)
    console.page.keyboard.type("tove")
    console.page.keyboard.press("Tab")
    console.page.keyboard.type("correct horse battery staple")
    console.page.keyboard.press("Enter")
    console.page.wait_for_url(re.compile(r".*/console/?$"))
    console.page.keyboard.press("Tab")
    skip = console.page.evaluate("document.activeElement.textContent.trim()")
    assert skip == "Skip to content", "the first stop skips the navigation"
    _tab_to(console, "Agents")
    console.page.keyboard.press("Enter")
    console.page.wait_for_url(re.compile(r".*/console/agents$"))
    _tab_to(console, "Sign out")
    console.page.keyboard.press("Enter")
    console.page.wait_for_url(re.compile(r".*/console/signed-out$"))
