"""The alert console for a trust's bed managers in headless Chromium (issue 18): a repatriation requested
into their trust appears live, and is acknowledged with a click; the MDT's tracking list is not theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import async_playwright, expect

from lhcie.services import SPECS
from services.care import examples
from services.care.routes import CARE
from shared.config import Settings
from shared.edge import build_app
from tests.helpers import eventually, free_port

pytestmark = pytest.mark.e2e
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, web.Application]]:
    monkeypatch.setenv("LHCIE_CARE_DEMO_DATA", "false")
    app = build_app(settings, list(SPECS.values()))
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()


async def test_a_repatriation_alerts_the_bed_managers_console_live(
    served: tuple[str, web.Application], tokens: Any
) -> None:
    base, app = served
    await eventually(lambda: app[CARE].policy.agreements_between("RJ1", "RRV"))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/console/#token={tokens('RRV', 'bed-manager')}")
            await page.wait_for_selector("#live:text('Live')")
            assert await page.locator("#who").text_content() == "bed-manager@RRV · RRV · Organization/RRV"
            assert await page.locator("#tab-tracking").is_hidden()
            assert await page.locator("#alerts tr").count() == 0

            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{base}/fhir/Task",
                    json=examples.repatriation("9000000017", "RRV"),
                    headers={
                        "Content-Type": "application/fhir+json",
                        "Authorization": f"Bearer {tokens('RJ1', 'clinician')}",
                    },
                ) as response,
            ):
                assert response.status == 201, await response.text()

            row = page.locator("#alerts tr")
            await row.first.wait_for(timeout=15000)  # no reload: it arrives over the stream
            assert await row.count() == 1
            assert await row.first.get_attribute("class") == "p-urgent new"
            assert "Repatriation requested from RJ1 (south-london-trauma)" in (await row.first.text_content() or "")
            ARTEFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTEFACTS / "console-bed-manager.png"), full_page=True)
            await row.first.get_by_role("button", name="Acknowledge").click()
            await expect(page.locator("#alerts tr")).to_have_count(0)
            assert errors == []
        finally:
            await browser.close()
