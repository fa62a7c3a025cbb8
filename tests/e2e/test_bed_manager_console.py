"""The alert console for a trust's bed managers in headless Chromium (issue 18): a repatriation requested
into their trust appears live, and is acknowledged with a click; the MDT's tracking list is not theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from lhcie.services import SPECS
from services.care import examples
from services.care.routes import CARE
from shared.config import Settings
from shared.edge import build_app
from tests.e2e.embedded import ARTEFACTS, Exchange, browser, post, serving  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Exchange]:
    monkeypatch.setenv("LHCIE_CARE_DEMO_DATA", "false")
    async with serving(Exchange(lambda: build_app(settings, list(SPECS.values())))) as exchange:
        yield exchange


async def test_a_repatriation_alerts_the_bed_managers_console_live(
    served: Exchange, browser: Browser, tokens: Any
) -> None:
    base, app = served.url, served.app
    await eventually(lambda: app[CARE].policy.agreements_between("RJ1", "RRV"))
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base}/console/#token={tokens('RRV', 'bed-manager')}")
    await page.wait_for_selector("#live:text('Live')")
    assert await page.locator("#who").text_content() == "bed-manager@RRV · RRV · Organization/RRV"
    assert await page.locator("#tab-tracking").is_hidden()
    assert await page.locator("#alerts tr").count() == 0

    await post(base, "/fhir/Task", tokens("RJ1", "clinician"), examples.repatriation("9000000017", "RRV"), status=201)

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
