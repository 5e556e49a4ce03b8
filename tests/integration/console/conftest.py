"""The console in a real browser: Debian's Chromium (``/usr/bin/chromium``) driven by
Playwright against a real ``tether serve`` on loopback. Playwright never downloads a browser
here (``playwright install`` is never run).

Every page a test opens is checked for JavaScript errors (a console message of type ``error``
or an uncaught exception fails the test), and :meth:`Console.shot` writes a screenshot to
``test-artifacts/console/`` (or ``$TETHER_TEST_ARTIFACTS/console/``) to be looked at."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.integration.live.conftest import Live, _start

CHROMIUM = "/usr/bin/chromium"
#: Chromium as a test browser on a closed network: no background connections, no sandbox
#: (tests run as root), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
PASSWORD = "correct horse battery staple"
ARTIFACTS = Path(os.environ.get("TETHER_TEST_ARTIFACTS", "test-artifacts")) / "console"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One ``tether serve`` for a module's tests (each test uses names of its own)."""
    yield from _start(tmp_path_factory.mktemp("console"))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver for one module: its event loop must be gone before the async
    tests of other modules run (pytest-asyncio's loops and Playwright's do not mix)."""
    assert Path(CHROMIUM).exists(), f"the console tests need Debian's chromium at {CHROMIUM}"
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


@dataclass
class Console:
    """One person's browser on the console."""

    server: Live
    page: Page
    errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.server.addr}{path}"

    def open(self, path: str) -> Page:
        self.page.goto(self.url(path))
        return self.page

    def sign_in(self, user: str, password: str = PASSWORD) -> None:
        """Through the built-in provider's sign-in page, as a person would."""
        self.open("/console")
        self.page.get_by_label("User name").fill(user)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r".*/console/?$"))

    def shot(self, name: str) -> Path:
        """A full-page screenshot, kept as a test artifact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(target), full_page=True)
        return target


def _watch(page: Page, errors: list[str]) -> None:
    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} ({message.location.get('url')})")

    def on_error(error: Any) -> None:
        errors.append(f"page error: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_error)


def open_console(browser: Browser, server: Live, viewport: dict[str, int]) -> Iterator[Console]:
    """A fresh browser profile on ``server``; its JavaScript errors fail the test."""
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        console = Console(server=server, page=page)
        _watch(page, console.errors)
        yield console
        assert console.errors == [], "JavaScript errors on the console's pages"
    finally:
        context.close()


@pytest.fixture
def console(browser: Browser, server: Live) -> Iterator[Console]:
    yield from open_console(browser, server, DESKTOP)


@pytest.fixture
def phone(browser: Browser, server: Live) -> Iterator[Console]:
    yield from open_console(browser, server, PHONE)


def add_person(server: Live, name: str, role: str | None = None) -> None:
    """A person of the built-in provider, with a console role or none."""
    with server.ops() as ops:
        added = ops.post("/v1/users", json={"name": name, "password": PASSWORD, "role": role})
        assert added.status_code == 201, added.text
