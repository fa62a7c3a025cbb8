"""The Data Controller Console and the patient page in headless Chromium (Debian's), against the whole
embedded stack: accept and reject pending ISAs, browse by organisation, see record holders, set
preferences, revoke a carer, and the carer losing sight of the record holders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Page, async_playwright

from shared.fhir.identifiers import ODS_CODE
from tests.helpers import TEST_PATIENT, document_reference, eventually

pytestmark = pytest.mark.e2e
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FHIR = {"Content-Type": "application/fhir+json"}


async def propose(stack: TestClient, tokens: Any, org: str, other: str, title: str) -> str:
    body = {"resourceType": "Contract", "title": title,
            "authority": [{"identifier": {"system": ODS_CODE, "value": other}}],
            "scope": {"coding": [{"code": "cancer-care"}]}}
    response = await stack.post("/fhir/Contract", json=body, headers={**FHIR, **tokens.headers(org, "dcc-admin")})
    assert response.status == 201
    return (await response.json())["id"]


async def contract_status(stack: TestClient, tokens: Any, isa: str) -> str:
    response = await stack.get(f"/fhir/Contract/{isa}", headers=tokens.headers("RAL", "dcc-admin"))
    return (await response.json())["status"]


async def open_page(browser: Any, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def test_the_dcc_accepts_and_rejects_pending_agreements(stack: TestClient, tokens: Any) -> None:
    from_uclh = await propose(stack, tokens, "RRV", "RAL", "UCLH and Royal Free haematology ISA")
    from_gstt = await propose(stack, tokens, "RJ1", "RAL", "GSTT and Royal Free lung ISA")
    base = str(stack.make_url("")).rstrip("/")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            # Without a token the page asks for one and shows nothing else.
            page = await open_page(browser, f"{base}/dcc/")
            assert await page.locator("#signin").is_visible()
            assert not await page.locator("#app").is_visible()
            await page.close()

            page = await open_page(browser, f"{base}/dcc/#token={tokens('RAL', 'dcc-admin')}")
            await page.wait_for_selector(f"#pending button[data-id='{from_gstt}']")
            assert "#token" not in page.url  # the token left the address bar (and history)
            assert await page.locator("#whoami").text_content() == "dcc-admin@RAL (dcc-admin, RAL)"
            assert await page.locator("#pending-org").text_content() == "RAL"
            rows = page.locator("#pending tbody tr")
            assert await rows.count() == 2
            titles = {await rows.nth(i).locator("td").first.text_content() for i in range(2)}
            assert titles == {"UCLH and Royal Free haematology ISA", "GSTT and Royal Free lung ISA"}

            await page.click(f"#pending button[data-action='accept'][data-id='{from_uclh}']")
            await page.wait_for_selector(f"#pending button[data-id='{from_uclh}']", state="detached")
            await page.click(f"#pending button[data-action='reject'][data-id='{from_gstt}']")
            await page.wait_for_selector("#pending-empty", state="visible")
            assert await contract_status(stack, tokens, from_uclh) == "executed"
            assert await contract_status(stack, tokens, from_gstt) == "rejected"

            # Agreements by organisation: RAL's own, with their new states and a revoke button on the live one.
            await page.wait_for_selector(f"#agreements tr[data-id='{from_uclh}'] td:nth-child(3):text('accepted')")
            assert await page.locator(f"#agreements tr[data-id='{from_gstt}'] td:nth-child(3)").text_content() == "rejected"
            assert await page.locator(f"#agreements tr[data-id='{from_uclh}'] button[data-action='revoke']").count() == 1
            await page.select_option("#org-select", "RJ1")
            await page.wait_for_selector("#agreements tr[data-id='isa-rj1-rpy']")
            assert await page.locator("#agreements tr[data-id='isa-rj1-rrv'] td:nth-child(3)").text_content() == "accepted"

            ARTEFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTEFACTS / "dcc-console.png"), full_page=True)
            assert page.errors == []  # type: ignore[attr-defined]
        finally:
            await browser.close()


async def test_the_patient_page_shows_holders_sets_preferences_and_revokes_a_carer(stack: TestClient, tokens: Any) -> None:
    response = await stack.post("/fhir/DocumentReference", json=document_reference(related=()),
                                headers={**FHIR, **tokens.headers("RJ1")})
    doc_id = (await response.json())["id"]

    async def stored() -> bool:
        return (await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers("RJ1"))).status == 200

    await eventually(stored)
    assert (await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RRV", "clinician"))).status == 200
    base = str(stack.make_url("")).rstrip("/")
    patient_token = tokens("NHSLOGIN", "patient", patient=TEST_PATIENT)

    async def disclosed() -> bool:
        response = await stack.get("/fhir/AuditEvent/$access-report", headers={
            "Authorization": f"Bearer {patient_token}", "Accept": "application/fhir+json"})
        return any(e["resource"]["resourceType"] == "AuditEvent" for e in (await response.json()).get("entry", []))

    await eventually(disclosed)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            # The carer first: they name the patient and see who holds records.
            carer = await open_page(browser, f"{base}/patient/#token={tokens('NHSLOGIN', 'carer')}")
            await carer.wait_for_selector("#patient-input")
            assert not await carer.locator("#pref-save").is_visible()
            await carer.fill("#patient-input", TEST_PATIENT)
            await carer.click("#patient-load")
            await carer.wait_for_selector("#holders tr[data-org='RJ1']")

            page = await open_page(browser, f"{base}/patient/#token={patient_token}")
            holder = page.locator("#holders tr[data-org='RJ1'] td")
            await holder.first.wait_for()
            assert [await holder.nth(i).text_content() for i in range(4)] == [
                "Guy's and St Thomas' NHS Foundation Trust", "RJ1", "1", "pathology"]
            await page.wait_for_selector("#carers tr[data-id='grant-demo']")
            assert await page.locator("#exceptions li").count() == 3
            assert await page.get_attribute("#access-link", "href") == "/fhir/AuditEvent/$access-report"
            await page.click("#access-load")
            report = page.locator("#access-report li")
            await report.first.wait_for()
            assert (await report.first.text_content() or "").endswith(" - RRV - opened one of your documents")

            await page.check("input[name='optout'][value='pathology']")
            await page.fill("#pref-orgs", "rpy")
            await page.click("#pref-save")
            await page.wait_for_selector("#status:text('Preferences saved.')")
            response = await stack.get("/fhir/Consent/preferences",
                                       headers={"Authorization": f"Bearer {patient_token}"})
            assert (await response.json())["provision"]["provision"] == [
                {"type": "deny", "class": [{"system": "https://lhcie.london/fhir/CodeSystem/document-category",
                                            "code": "pathology"}]},
                {"type": "deny", "actor": [{"role": {"text": "recipient"},
                                            "reference": {"reference": "Organization/RPY",
                                                          "identifier": {"system": ODS_CODE, "value": "RPY"}}}]},
            ]

            await page.click("#carers button[data-action='revoke-carer'][data-id='grant-demo']")
            await page.wait_for_selector("#carers tr[data-id='grant-demo'] td:nth-child(4):text('revoked')")
            ARTEFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTEFACTS / "patient-page.png"), full_page=True)

            # The carer's next look is refused, and the holders they saw are gone from the page.
            await carer.click("#patient-load")
            await carer.wait_for_selector("#status:text('Access denied: not permitted by the sharing policy.')")
            assert await carer.locator("#holders tbody tr").count() == 0
            assert page.errors == [] and carer.errors == []  # type: ignore[attr-defined]
        finally:
            await browser.close()


async def test_the_dcc_shows_who_a_template_admits_and_its_owner_approves_a_join(stack: TestClient, tokens: Any) -> None:
    template = {"resourceType": "Contract", "title": "RJ1 standard ISA", "scope": {"coding": [{"code": "direct-care"}]},
                "extension": [
                    {"url": "https://lhcie.london/fhir/StructureDefinition/template-agreement", "valueBoolean": True},
                    {"url": "https://lhcie.london/fhir/StructureDefinition/template-admits-organisation-type",
                     "valueCode": "hospice"}]}
    response = await stack.post("/fhir/Contract", json=template, headers={**FHIR, **tokens.headers("RJ1", "dcc-admin")})
    tid = (await response.json())["id"]
    base = str(stack.make_url("")).rstrip("/")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            # RAL (an acute trust, not a hospice) asks to join from its console and waits.
            page = await open_page(browser, f"{base}/dcc/#token={tokens('RAL', 'dcc-admin')}")
            await page.click(f"#templates button[data-action='join'][data-id='{tid}']")
            await page.wait_for_selector("#templates span:text('waiting for RJ1 to approve')")
            row = page.locator("#templates tbody tr", has_text="RJ1 standard ISA")
            assert await row.locator("td").nth(3).text_content() == "any hospice at once; others on approval"
            await page.close()
            # RJ1 sees the request as a pending item and approves it.
            page = await open_page(browser, f"{base}/dcc/#token={tokens('RJ1', 'dcc-admin')}")
            await page.click(f"#pending button[data-action='approve-join'][data-id='{tid}'][data-org='RAL']")
            await page.wait_for_selector(f"#pending button[data-id='{tid}']", state="detached")
            response = await stack.get(f"/fhir/Contract/{tid}", headers=tokens.headers("RJ1", "dcc-admin"))
            assert [a["identifier"]["value"] for a in (await response.json())["authority"]] == ["RJ1", "RAL"]
            assert page.errors == []  # type: ignore[attr-defined]
        finally:
            await browser.close()
