"""The coordinator console in headless Chromium: a posted document's alert appears live, is acknowledged
with a click, and a screenshot is kept under test-artefacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from lhcie.services import SPECS
from shared.config import Settings
from shared.edge import build_app
from tests.e2e.embedded import ARTEFACTS, SCREENSHOTS, Exchange, browser, post_document, serving  # noqa: F401

pytestmark = pytest.mark.e2e


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[str]:
    async with serving(Exchange(lambda: build_app(settings, list(SPECS.values())))) as exchange:
        yield exchange.url


async def test_an_alert_appears_live_and_is_acknowledged_with_a_click(
    served: str, browser: Browser, tokens: Any
) -> None:
    coordinator = tokens("RJ1", "mdt-coordinator", mdt="rj1-lung")
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await page.goto(f"{served}/console/#token={coordinator}")
    await page.wait_for_selector("#live:text('Live')")
    assert await page.locator("#alerts tr").count() == 0

    doc_id = await post_document(served, tokens("RJ1"))

    row = page.locator("#alerts tr")
    await row.first.wait_for(timeout=15000)  # no reload: it arrives over the stream
    assert await row.count() == 1
    assert await row.first.get_attribute("class") == "p-urgent new"
    link = row.first.locator("a")
    assert await link.get_attribute("href") == f"/fhir/DocumentReference/{doc_id}"
    assert await link.text_content() == "New Histopathology report from RJ1"

    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-alerts.png"), full_page=True)
    await row.first.get_by_role("button", name="Acknowledge").click()
    # Acknowledged alerts leave the "Open" view; the "All" view shows it done.
    # Polled by locator, not wait_for_function: the console's CSP forbids the eval that would need.
    await expect(page.locator("#alerts tr")).to_have_count(0)
    await page.select_option("#f-status", "")
    done = page.locator("#alerts tr").first
    assert await done.get_attribute("data-status") == "completed"
    await page.screenshot(path=str(SCREENSHOTS / "console-acknowledged.png"), full_page=True)
