"""The care views in headless Chromium: the printable plan view (the crew's questions first) and the bed
managers' live list of pending transfers, on the embedded run with its demo plan and repatriation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from services.agreements.app import SPEC as AGREEMENTS
from services.audit.app import SPEC as AUDIT
from services.care import examples, views
from services.care.app import SPEC as CARE
from services.care.demo import DEMO_PATIENT
from services.care.questionnaires import END_OF_LIFE
from shared.config import Settings
from shared.edge import build_app
from tests.e2e.embedded import ARTEFACTS, Exchange, browser, post, serving  # noqa: F401
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
async def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setattr(views, "REFRESH_SECONDS", 1)
    async with serving(Exchange(lambda: build_app(settings, [AGREEMENTS, AUDIT, CARE]))) as exchange:
        yield exchange.url


async def demo_seeded(url: str, token: str) -> bool:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/fhir/Task?owner=RRV", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status == 200 and (await response.json())["total"] == 1


async def test_the_plan_view_shows_the_crews_questions_first_and_prints(
    served: str, browser: Browser, tokens: Any
) -> None:
    rrv = tokens("RRV", "clinician")
    await eventually(lambda: demo_seeded(served, rrv), timeout=30)
    page = await browser.new_page(viewport={"width": 900, "height": 1200})
    await page.goto(f"{served}/care/plan/#token={rrv}&patient={DEMO_PATIENT}")
    await page.wait_for_selector("#cpr .answer")
    assert await page.locator("#cpr .answer").text_content() == "CPR attempts NOT recommended"
    ids = await page.eval_on_selector_all("#plan section", "nodes => nodes.map(n => n.id)")
    assert ids == [item.link_id for item in END_OF_LIFE.items]
    assert ids[:4] == ["cpr", "emergency-recommendations", "preference", "if-deteriorates"]
    assert await page.locator("#clinician .answer").text_content() == (
        "Dr A Clinician, consultant in palliative medicine, GMC 7123456"
    )
    assert await page.locator("#preferred-place-of-death .answer").text_content() == "Home"
    facts = await page.locator("#facts").text_content()
    assert facts is not None and f"NHS number {DEMO_PATIENT}" in facts and "custodian RJ1" in facts
    assert await page.locator("#status").text_content() == ""
    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / "care-plan.png"), full_page=True)
    # Printable: the print button and the coloured banner are not printed.
    await page.emulate_media(media="print")
    assert not await page.locator("#print").is_visible()
    pdf = await page.pdf()
    assert pdf.startswith(b"%PDF")

    # A trust without an ISA learns nothing of the plan (whether one exists is itself sensitive);
    # the refusal is on the record for the patient's report.
    page = await browser.new_page()
    await page.goto(f"{served}/care/plan/#token={tokens('RAL', 'clinician')}&patient={DEMO_PATIENT}")
    await page.wait_for_selector("#status:not(:empty)")
    assert await page.locator("#status").text_content() == "No current end-of-life care plan for this patient."
    assert await page.locator("#plan section").count() == 0


async def test_the_transfers_list_is_live_and_longest_waiting_first(served: str, browser: Browser, tokens: Any) -> None:
    rrv = tokens("RRV", "clinician")
    await eventually(lambda: demo_seeded(served, rrv), timeout=30)
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await page.goto(f"{served}/care/transfers/#token={rrv}")
    rows = page.locator("#transfers tbody tr")
    await rows.first.wait_for()
    assert await page.locator("#org").text_content() == "RRV"
    cells = await rows.first.locator("td").all_text_contents()
    assert cells[:4] == [DEMO_PATIENT, "RJ1", "Major trauma", "consultant identified"]
    assert float(cells[4]) >= 0 and cells[5] == ""

    # A new request appears without a reload, below the one waiting longer.
    await post(served, "/fhir/Task", tokens("RJ1", "clinician"), examples.repatriation("9000000025", "RRV"), status=201)
    await rows.nth(1).wait_for(timeout=10000)
    assert await rows.count() == 2
    assert await rows.nth(1).locator("td").first.text_content() == "9000000025"
    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / "care-transfers.png"), full_page=True)
