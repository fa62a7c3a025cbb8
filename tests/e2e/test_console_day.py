"""The coordinator console open all day, in headless Chromium: it reconnects after the exchange restarts
and catches up, opens a document in place, says who acknowledged, counts and announces urgent alerts,
fits a 390 px phone, shows the tracking list with a distinct breached state, and records and corrects
pathway events from a pathway's details. Screenshots are kept under docs/screenshots/ (linked from the
README)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from lhcie.services import SPECS
from shared.config import Settings
from shared.edge import build_app
from tests.e2e.embedded import SCREENSHOTS, Exchange, browser, post_document, serving  # noqa: F401

pytestmark = pytest.mark.e2e
ROUTE_URL = "https://lhcie.london/fhir/StructureDefinition/cwt-referral-route"
COORDINATOR = {"mdt": "rj1-lung"}


@pytest.fixture
async def exchange(settings: Settings) -> AsyncIterator[Exchange]:
    """The embedded stack, which a test may stop and start again on the same port (a server blip)."""
    async with serving(Exchange(lambda: build_app(settings, list(SPECS.values())))) as served:
        yield served


async def open_console(browser: Browser, url: str, token: str, *, width: int = 1280) -> Page:
    page = await browser.new_page(
        viewport={"width": width, "height": 844 if width < 600 else 720}, accept_downloads=True
    )
    await page.goto(f"{url}/console/#token={token}")
    await page.wait_for_selector("#live:text('Live')")
    return page


async def test_the_console_reconnects_after_a_restart_and_catches_up(
    exchange: Exchange, browser: Browser, tokens: Any
) -> None:
    page = await open_console(browser, exchange.url, tokens("RJ1", "mdt-coordinator", **COORDINATOR))
    await exchange.stop()
    # Down for longer than the old single retry (2 s): the page keeps trying and says for how long.
    await page.wait_for_selector("#offline:text-matches('Offline for [3-9] s')", timeout=20000)
    assert await page.locator("#live").text_content() == "Reconnecting…"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-offline.png"), full_page=True)

    await exchange.start()
    # Posted while the page may not have reconnected yet: resuming from the last event number brings it in.
    await post_document(exchange.url, tokens("RJ1"))
    await page.locator("#alerts tr").first.wait_for(timeout=40000)
    await page.wait_for_selector("#live:text('Live')", timeout=40000)
    assert await page.locator("#offline").is_hidden()
    assert await page.locator("#alerts tr").count() == 1


async def test_a_document_opens_inside_the_console(exchange: Exchange, browser: Browser, tokens: Any) -> None:
    page = await open_console(browser, exchange.url, tokens("RJ1", "mdt-coordinator", **COORDINATOR))
    doc_id = await post_document(
        exchange.url, tokens("RJ1"), content=b"Histology: adenocarcinoma.\n", content_type="text/plain"
    )
    link = page.locator("#alerts tr a").first
    await link.wait_for(timeout=15000)
    await link.click()
    dialog = page.locator("#viewer")
    await dialog.wait_for(state="visible")
    await page.wait_for_selector("#viewer-text:text('Histology: adenocarcinoma.')", timeout=10000)
    assert await page.locator("#viewer-meta").text_content() != ""
    assert page.url.endswith("/console/")  # not navigated to a raw 401
    download = page.locator("#viewer-download")
    assert (await download.get_attribute("href") or "").startswith("blob:")
    assert await download.get_attribute("download") == doc_id
    await page.screenshot(path=str(SCREENSHOTS / "console-document.png"), full_page=True)
    await page.click("#viewer-close")
    await dialog.wait_for(state="hidden")


async def test_urgent_alerts_are_counted_announced_and_acknowledged_by_name(
    exchange: Exchange, browser: Browser, tokens: Any
) -> None:
    page = await open_console(browser, exchange.url, tokens("RJ1", "mdt-coordinator", **COORDINATOR))
    assert await page.title() == "MDT coordinator console · LHCIE"
    await post_document(exchange.url, tokens("RJ1"))
    await page.locator("#alerts tr").first.wait_for(timeout=15000)
    await expect(page).to_have_title("(1) MDT coordinator console · LHCIE")
    assert await page.locator("#announce").get_attribute("aria-live") == "assertive"
    await page.wait_for_selector("#announce:text-matches('New urgent alert for patient 9000000009')")

    await page.get_by_role("button", name="Acknowledge").first.click()
    await expect(page).to_have_title("MDT coordinator console · LHCIE")
    await page.select_option("#f-status", "")
    state = page.locator("#alerts tr td.state").first
    assert (await state.text_content() or "").startswith("Acknowledged by mdt-coordinator@RJ1, ")


async def test_the_console_fits_a_390_px_phone(exchange: Exchange, browser: Browser, tokens: Any) -> None:
    page = await open_console(browser, exchange.url, tokens("RJ1", "mdt-coordinator", **COORDINATOR), width=390)
    await post_document(exchange.url, tokens("RJ1"))
    await page.locator("#alerts tr").first.wait_for(timeout=15000)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert await page.locator("#alerts tr").first.evaluate("tr => getComputedStyle(tr).display") == "block"
    patient = page.locator("#alerts tr td[data-label='Patient']").first
    assert await patient.evaluate("td => getComputedStyle(td, '::before').content") == '"Patient: "'
    await page.screenshot(path=str(SCREENSHOTS / "console-390px.png"), full_page=True)


async def register(url: str, token: str, patient: str, started: date) -> dict[str, Any]:
    body = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": patient}},
        "team": [{"reference": "CareTeam/rj1-lung"}],
        "period": {"start": started.isoformat()},
        "extension": [{"url": ROUTE_URL, "valueCode": "urgent-suspected-cancer"}],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/fhir/EpisodeOfCare", json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 201, await response.text()
        return dict(await response.json())


async def test_the_tracking_list_tab_shows_buckets_breaches_a_legend_and_a_csv(
    exchange: Exchange, browser: Browser, tokens: Any, tmp_path: Path
) -> None:
    coordinator = tokens("RJ1", "mdt-coordinator", **COORDINATOR)
    today = date.today()
    late = await register(exchange.url, coordinator, "9434765919", today - timedelta(days=92))
    fresh = await register(exchange.url, coordinator, "9000000009", today - timedelta(days=3))
    page = await open_console(browser, exchange.url, coordinator)
    await page.get_by_role("tab", name="Tracking list").click()
    assert await page.get_by_role("tab", name="Tracking list").get_attribute("aria-selected") == "true"
    late_row = page.locator(f"#ptl-{late['id']}")
    await late_row.wait_for(timeout=10000)
    assert await late_row.get_attribute("data-state") == "breached"
    assert await late_row.locator(".breached-flag").text_content() == "BREACHED"
    assert await late_row.locator("td[data-label='62-day'] .clock").text_content() == "Breached: day 92 of 62"
    fresh_row = page.locator(f"#ptl-{fresh['id']}")
    assert await fresh_row.get_attribute("data-state") == "on-track"
    assert await fresh_row.locator(".breached-flag").count() == 0
    # Breached is drawn unlike at-risk or an urgent letter's colour: an outline and a warning sign.
    badge = late_row.locator(".clock.breached").first
    assert await badge.evaluate("b => getComputedStyle(b).outlineStyle") == "solid"
    assert await badge.evaluate("b => getComputedStyle(b, '::before').content") == '"⚠ "'
    buckets = {
        await r.get_attribute("data-bucket"): await r.locator("td").all_text_contents()
        for r in await page.locator("#ptl-buckets tbody tr").all()
    }
    assert buckets == {"0-28": ["0", "1"], "29-62": ["0", "0"], "63-104": ["0", "1"], "over-104": ["0", "0"]}
    legend = await page.locator("#legend").text_content() or ""
    for words in ("28-day", "31-day", "62-day", "At risk", "Breached"):
        assert words in legend
    await page.screenshot(path=str(SCREENSHOTS / "console-tracking-list.png"), full_page=True)

    async with page.expect_download() as waiting:
        await page.click("#ptl-csv")
    download = await waiting.value
    assert download.suggested_filename == f"ptl-rj1-lung-{today.isoformat()}.csv"
    saved = tmp_path / "ptl.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert [(r["patient"], r["day"], r["bucket"]) for r in rows] == [
        ("9434765919", "92", "63-104"),
        ("9000000009", "3", "0-28"),
    ]


async def test_pathway_events_are_recorded_and_corrected_from_the_console(
    exchange: Exchange, browser: Browser, tokens: Any
) -> None:
    coordinator = tokens("RJ1", "mdt-coordinator", **COORDINATOR)
    today = date.today()
    pathway = await register(exchange.url, coordinator, "9434765919", today - timedelta(days=10))
    page = await open_console(browser, exchange.url, coordinator)
    await page.get_by_role("tab", name="Tracking list").click()
    row = page.locator(f"#ptl-{pathway['id']}")
    await row.get_by_role("button", name="Pathway details and events for patient 9434765919").click()
    dialog = page.locator("#pathway")
    await dialog.wait_for(state="visible")
    await expect(page.locator("#pathway-title")).to_have_text("Pathway for patient 9434765919")
    await expect(page.locator("#pathway-clocks li[data-clock='fds'] .clock")).to_have_text("On track: day 10 of 28")
    assert await page.locator("#pathway-no-events").is_visible()

    # The patient was told three days ago.
    await page.select_option("#pe-event", "diagnosis-communicated")
    await page.fill("#pe-date", (today - timedelta(days=3)).isoformat())
    await page.click("#pe-submit")
    await expect(page.locator("#pathway-status")).to_have_text(re.compile("^Recorded: Diagnosis communicated"))
    await expect(page.locator("#pathway-clocks li[data-clock='fds'] .clock")).to_have_text(
        "Met: stopped on day 7 of 28"
    )
    assert await page.locator("#pathway-events tr").count() == 1
    # The tracking list behind the dialog follows.
    await expect(row.locator("td[data-label='28-day'] .clock")).to_have_text("Met: stopped on day 7 of 28")

    # It was five days ago: corrected, not recorded twice, and the clock recomputed.
    event = page.locator("#pathway-events tr[data-event='diagnosis-communicated']")
    await event.get_by_role("button", name=re.compile("^Correct the date of diagnosis-communicated")).click()
    assert await page.locator("#pe-event").is_disabled()
    assert await page.input_value("#pe-date") == (today - timedelta(days=3)).isoformat()
    await page.fill("#pe-date", (today - timedelta(days=5)).isoformat())
    await page.fill("#pe-reason", "the clinic letter's date")
    await page.click("#pe-submit")
    await expect(page.locator("#pathway-status")).to_have_text(re.compile("^Corrected: Diagnosis communicated"))
    await expect(page.locator("#pathway-clocks li[data-clock='fds'] .clock")).to_have_text(
        "Met: stopped on day 5 of 28"
    )
    assert await page.locator("#pathway-events tr").count() == 1
    await expect(event.locator(".corrected")).to_contain_text("corrected from")
    await expect(row.locator("td[data-label='28-day'] .clock")).to_have_text("Met: stopped on day 5 of 28")
    await page.screenshot(path=str(SCREENSHOTS / "console-pathway.png"), full_page=True)

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{exchange.url}/fhir/EpisodeOfCare/{pathway['id']}", headers={"Authorization": f"Bearer {coordinator}"}
        ) as response,
    ):
        stored = await response.json()
    [fds] = [
        e
        for e in stored["extension"]
        if e["url"].endswith("cwt-clock") and {"url": "clock", "valueCode": "fds"} in e["extension"]
    ]
    assert {"url": "stop", "valueDate": (today - timedelta(days=5)).isoformat()} in fds["extension"]

    # A refusal is shown with the exchange's words, not swallowed (the form is back to recording).
    assert await page.locator("#pe-cancel").is_hidden()
    await page.evaluate("document.getElementById('pe-event').add(new Option('x', 'not-an-event'))")
    await page.select_option("#pe-event", "not-an-event")
    await page.click("#pe-submit")
    await expect(page.locator("#pathway-status")).to_have_text(re.compile("^Not saved: event must be one of"))
    await page.click("#pathway-close")
    await dialog.wait_for(state="hidden")
