"""Headless Chromium for the browser tests: one browser, a fresh context (profile) per page.

Chromium is the system's `/usr/bin/chromium` (Playwright cannot download its own here), with fake
camera and microphone. Set `SFU_BROWSER_TEST_URL=http://host:port` to run against a server that is
already running instead of the `sfu_server` fixture's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.pages import HARNESS, PageLog, Participant
from tests.conftest import ServerProcess, start_server

CHROMIUM = os.environ.get("SFU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


@dataclass
class ExternalServer:
    """A server the test did not start (SFU_BROWSER_TEST_URL); its log is not available."""

    url: str

    def log(self) -> str:
        return "(external server: no log)"


@pytest.fixture
def demo_server(request: pytest.FixtureRequest) -> Any:
    """The server whose demo page the browsers load: `sfu_server`, or SFU_BROWSER_TEST_URL."""
    url = os.environ.get("SFU_BROWSER_TEST_URL")
    if url:
        return ExternalServer(url.rstrip("/"))
    return request.getfixturevalue("sfu_server")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A headless Chromium; tests open one `new_context()` (a fresh profile) per participant."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} not found: the browser tests need a system Chromium")
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000,
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def jwt_secret() -> str:
    return "browser-test-secret-0123456789abcdef"


@pytest.fixture
def auth_server(tmp_path: Path, jwt_secret: str) -> Iterator[ServerProcess]:
    """A server that admits only joins with an access token."""
    server = start_server(tmp_path, "--no-dev-mode", env={"SFU_AUTH__JWT_SECRET": jwt_secret})
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-4000:]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Any:
    """The server of the test: `auth_server` when the test asks for it, else `demo_server`."""
    if "auth_server" in request.fixturenames:
        return request.getfixturevalue("auth_server")
    return request.getfixturevalue("demo_server")


@pytest.fixture
async def open_client(browser: Any, server: Any) -> Any:
    """Opens participants (bare client pages, tests/browser/pages.py HARNESS) in a room:
    `await open_client(name, room, token=None, quality={maxWidth, maxHeight}, hold_offers=False)`.
    Prints their consoles and the server log's tail afterwards (shown on failure or with -rP)."""
    opened: list[Participant] = []
    ws_url = server.url.replace("http", "ws", 1) + "/ws"

    async def open_one(name: str, room: str, token: str | None = None, *,
                       quality: dict[str, int] | None = None, hold_offers: bool = False) -> Participant:
        context = await browser.new_context()
        page = await context.new_page()
        log = PageLog(name)
        log.attach(page)
        participant = Participant(page, log)
        opened.append(participant)
        await page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        await page.goto(server.url + "/healthz", timeout=60_000)  # any page of the origin
        participant.id = await page.evaluate(HARNESS, {
            "wsUrl": ws_url, "room": room, "name": name, "token": token, "quality": quality,
            "holdOffers": hold_offers})
        return participant

    try:
        yield open_one
    finally:
        for p in opened:
            print(p.log.report())
            await p.page.context.close()
        print("--- server log (tail)\n" + server.log()[-4000:])
