"""Headless Chromium for the browser tests: one browser, a fresh context (profile) per page.

Chromium is the system's `/usr/bin/chromium` (Playwright cannot download its own here), with fake
camera and microphone. Set `SFU_BROWSER_TEST_URL=http://host:port` to run against a server that is
already running instead of the `sfu_server` fixture's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

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
