"""What the browser tests share: the exchange served in this process on a loopback port (a real aiohttp
server, so a browser can reach it), Debian's Chromium through Playwright, and where screenshots go.

A test module imports the ``browser`` fixture from here (pytest finds it by the parameter's name) and
builds its own stack fixture on ``serving``, choosing which services, settings and environment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from tests.helpers import document_reference, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "test-artefacts"
# The consoles' and pages' screenshots are kept in the repository (linked from the README), rewritten by
# each run.
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"  # Debian's (make chromium), never `playwright install`
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Exchange:
    """An app served on a loopback port chosen when this is made (so a sign-in provider can be told the
    callback URL before the app starts). A test may stop it and start it again on the same port (a
    server blip): each start builds a fresh app, as a restarted process would."""

    def __init__(self, build: Callable[[], web.Application]) -> None:
        self._build = build
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    @property
    def app(self) -> web.Application:
        assert self._runner is not None, "the exchange is not running"
        return self._runner.app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._build(), shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def serving(exchange: Exchange) -> AsyncIterator[Exchange]:
    """``exchange`` started, and stopped however the test ends."""
    await exchange.start()
    try:
        yield exchange
    finally:
        await exchange.stop()


async def post(url: str, path: str, token: str, resource: dict[str, Any], *, status: int) -> dict[str, Any]:
    """POST a FHIR resource to the served exchange as the token's caller, as a sender's system would while
    the page is open; the answer must have ``status``."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}{path}",
            json=resource,
            headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == status, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def post_document(url: str, token: str, **kw: Any) -> str:
    """Send a document (``tests.helpers.document_reference(**kw)``); its id."""
    return str((await post(url, "/fhir/DocumentReference", token, document_reference(**kw), status=202))["id"])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
