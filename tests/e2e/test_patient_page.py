"""The patient's page and their carer's, in headless Chromium against the embedded exchange with its
sign-in: S. Brown (the patient) and T. Brown (their carer) sign in through OpenID Connect (the
development provider, standing in for NHS login). Organisations are named, document kinds are in words,
the carer's page speaks of "their" records, an NHS number is accepted with spaces and an old error is
cleared, and the access report lists searches, names the document and the time zone, and opens in full
when signed in (a plain link answered 401)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from tests.e2e.embedded import SCREENSHOTS, browser  # noqa: F401
from tests.e2e.people import errors, exchange, new_page, sign_in  # noqa: F401
from tests.helpers import TEST_PATIENT, document_reference, eventually

pytestmark = pytest.mark.e2e
FHIR = {"Content-Type": "application/fhir+json"}
NHS = "https://fhir.nhs.uk/Id/nhs-number"
UCLH = "University College London Hospitals NHS Foundation Trust"
GSTT = "Guy's and St Thomas' NHS Foundation Trust"


async def shared_and_looked_at(url: str, tokens: Any) -> str:
    """GSTT shares a pathology report; UCLH searches the patient's documents and opens it."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/fhir/DocumentReference",
            json=document_reference(related=()),
            headers={**FHIR, **tokens.headers("RJ1")},
        ) as response:
            assert response.status == 202, await response.text()
            doc_id = str((await response.json())["id"])

        async def stored() -> bool:
            async with http.get(f"{url}/fhir/DocumentReference/{doc_id}", headers=tokens.headers("RJ1")) as read:
                return read.status == 200

        await eventually(stored)
        async with http.get(
            f"{url}/fhir/DocumentReference?patient.identifier={NHS}|{TEST_PATIENT}",
            headers=tokens.headers("RRV", "clinician"),
        ) as found:
            assert found.status == 200
        async with http.get(f"{url}/fhir/Binary/{doc_id}", headers=tokens.headers("RRV", "clinician")) as read:
            assert read.status == 200
        patient = {**tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT), "Accept": "application/fhir+json"}

        async def reported() -> bool:
            async with http.get(f"{url}/fhir/AuditEvent/$access-report", headers=patient) as response:
                codes = {
                    e["resource"]["subtype"][1]["code"]
                    for e in (await response.json())["entry"]
                    if e["resource"]["resourceType"] == "AuditEvent"
                }
            return {"document.searched", "document.retrieved"} <= codes

        await eventually(reported)
    return doc_id


async def test_the_patient_signs_in_and_reads_their_records_in_plain_words(
    exchange: str, browser: Browser, tokens: Any
) -> None:
    url = exchange
    doc_id = await shared_and_looked_at(url, tokens)
    page = await new_page(browser)
    await page.goto(f"{url}/patient/")
    await expect(page.locator("#signin")).to_be_visible()
    # The old way in: a plain link to the report, which carried no token.
    async with aiohttp.ClientSession() as http, http.get(f"{url}/fhir/AuditEvent/$access-report") as plain:
        assert plain.status == 401

    await sign_in(page, url, "/patient/", "brown-s")
    await expect(page.locator("#who")).to_have_text("S. Brown")
    holder = page.locator("#holders tr[data-org='RJ1'] td")
    await holder.first.wait_for()
    assert [await holder.nth(i).text_content() for i in range(3)] == [GSTT, "1", "test results (pathology)"]
    assert "RJ1" not in (await page.locator("#holders").text_content() or "")
    await page.wait_for_selector("#carers tr[data-id='grant-demo']")
    assert await page.locator("#exceptions li").count() == 3
    # Opting out is by name: the organisations that hold records are listed.
    await expect(page.locator("#optout-orgs label.org")).to_have_count(1)
    assert [t.strip() for t in await page.locator("#optout-orgs label.org").all_text_contents()] == [GSTT]

    await page.click("#access-load")
    report = page.locator("#access-report li")
    await expect(report).to_have_count(2, timeout=10000)
    lines = [await report.nth(i).text_content() or "" for i in range(2)]
    zone = r"\d{1,2} \w{3} \d{4}, \d\d:\d\d (GMT|BST)"
    assert re.fullmatch(f"{zone} – {UCLH} – searched your documents", lines[0]), lines
    assert re.fullmatch(f"{zone} – {UCLH} – opened your pathology study", lines[1]), lines
    await expect(page.locator("#access-zone")).to_have_text("Times are UK time (GMT in winter, BST in summer).")

    # The full report opens signed in: fetched with the person's token, shown in the page.
    await page.click("#access-full")
    body = page.locator("#report-body")
    await expect(body).to_contain_text("Who has seen your records")
    await expect(body).to_contain_text(f"opened your pathology study (document {doc_id})")
    await expect(body).to_contain_text("searched your documents")
    await expect(body).to_contain_text("Times are UK time (GMT in winter, BST in summer).")
    assert (await page.get_attribute("#report-download", "href") or "").startswith("blob:")
    await page.click("#report-close")

    # Preferences: a kind of document in words and an organisation by name; saved, and shown back by name.
    await page.check("input[name='optout'][value='pathology']")
    await page.check("input[name='optout-org'][value='RJ1']")
    await page.fill("#pref-other", "rpy")
    await page.click("#pref-save")
    await expect(page.locator("#status")).to_have_text("Preferences saved.")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{url}/fhir/Consent/preferences", headers=tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)
        ) as response,
    ):
        denied = (await response.json())["provision"]["provision"]
    assert [r["actor"][0]["reference"]["identifier"]["value"] for r in denied if "actor" in r] == ["RJ1", "RPY"]
    assert denied[0]["class"][0]["code"] == "pathology"
    await expect(page.locator("#optout-orgs label.org")).to_have_count(2)
    assert [t.strip() for t in await page.locator("#optout-orgs label.org").all_text_contents()] == [
        GSTT,
        "The Royal Marsden NHS Foundation Trust",
    ]
    assert await page.locator("input[name='optout-org'][value='RPY']").is_checked()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "patient.png"), full_page=True)
    assert errors(page) == []


async def test_the_carer_reads_their_records_and_loses_sight_when_revoked(
    exchange: str, browser: Browser, tokens: Any
) -> None:
    url = exchange
    await shared_and_looked_at(url, tokens)
    carer = await new_page(browser)
    await sign_in(carer, url, "/patient/", "carer@NHSLOGIN")
    await expect(carer.locator("#who")).to_have_text("T. Brown · carer")
    # Their records, not "your".
    await expect(carer.locator("#page-title")).to_have_text("Their records on the London exchange")
    await expect(carer.locator("#holders-title")).to_have_text("Organisations that hold records about them")
    await expect(carer.locator("#access-title")).to_have_text("Who has looked at their records")
    assert not await carer.locator("#pref-save").is_visible()
    assert " your " not in f" {await carer.locator('#app').inner_text()} ".replace("\n", " ")

    # A mistyped number is refused with a plain error; the right one, written with spaces, clears it.
    await carer.fill("#patient-input", "900 000 009")
    await carer.click("#patient-load")
    await expect(carer.locator("#status")).to_have_text("An NHS number has 10 digits, for example 900 000 0009.")
    await carer.fill("#patient-input", "900 000 0009")
    await carer.click("#patient-load")
    await carer.wait_for_selector("#holders tr[data-org='RJ1']")
    await expect(carer.locator("#status")).to_have_text("")
    assert await carer.locator("#holders tr[data-org='RJ1'] td").first.text_content() == GSTT
    await carer.click("#access-load")
    report = carer.locator("#access-report li")
    await expect(report.filter(has_text=f"{UCLH} – opened their pathology study")).to_have_count(1)
    await expect(report.filter(has_text=f"{UCLH} – searched their documents")).to_have_count(1)
    # The carer's own looks are on the patient's record too, by person, not by a pseudo-organisation.
    await expect(report.filter(has_text="a carer (T. Brown) – looked at their records").first).to_be_visible()
    await carer.click("#access-full")
    await expect(carer.locator("#report-body")).to_contain_text("Who has seen their records")
    await expect(carer.locator("#report-body")).to_contain_text("opened their pathology study")
    await carer.click("#report-close")
    await carer.screenshot(path=str(SCREENSHOTS / "carer.png"), full_page=True)

    # The patient revokes the carer's access; the carer's next look is refused and nothing stale stays.
    patient = await new_page(browser)
    await sign_in(patient, url, "/patient/", "brown-s")
    await patient.click("#carers button[data-action='revoke-carer'][data-id='grant-demo']")
    await patient.wait_for_selector("#carers tr[data-id='grant-demo'] td:nth-child(4):text('revoked')")
    await carer.click("#patient-load")
    await expect(carer.locator("#status")).to_have_text("Access denied: not permitted by the sharing policy.")
    assert await carer.locator("#holders tbody tr").count() == 0
    assert await carer.locator("#access-report li").count() == 0
    assert errors(carer) == [] and errors(patient) == []
