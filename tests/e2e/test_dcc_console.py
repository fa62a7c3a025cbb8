"""The Data Controller Console in headless Chromium (Debian's), against the embedded exchange with its
sign-in: a data controller signs in through OpenID Connect (the development provider), reads a proposal's
signed PDF before accepting it, rejects and revokes with a confirmation that says what will stop and a
recorded reason, uploads a countersigned copy, registers an organisation, and reads purposes and document
categories in words. The session renews silently and the page says plainly when it cannot."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from shared.fhir.identifiers import ODS_CODE
from tests.e2e.embedded import SCREENSHOTS, browser  # noqa: F401
from tests.e2e.people import errors, exchange, new_page, sign_in  # noqa: F401

pytestmark = pytest.mark.e2e
FHIR = {"Content-Type": "application/fhir+json"}
DECISION = "https://lhcie.london/fhir/StructureDefinition/agreement-decision"
PROPOSAL_PDF = b"%PDF-1.4\n% proposal signed by UCLH\n%%EOF\n"
COUNTERSIGNED_PDF = b"%PDF-1.4\n% countersigned by UCLH and the Royal Free\n%%EOF\n"


async def call(method: str, url: str, headers: dict[str, str], **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, **kw) as response:
        body = await response.read()
        kind = response.headers.get("Content-Type", "")
        return response.status, (await response.json(content_type=None)) if "json" in kind else body


async def propose(url: str, tokens: Any, org: str, other: str, title: str, *, categories: tuple[str, ...] = ()) -> str:
    body: dict[str, Any] = {
        "resourceType": "Contract",
        "title": title,
        "authority": [{"identifier": {"system": ODS_CODE, "value": other}}],
        "scope": {"coding": [{"code": "cancer-care"}]},
    }
    if categories:
        body["term"] = [{"asset": [{"type": [{"coding": [{"code": c} for c in categories]}]}]}]
    status, made = await call("POST", f"{url}/fhir/Contract", {**FHIR, **tokens.headers(org, "dcc-admin")}, json=body)
    assert status == 201, made
    return str(made["id"])


async def contract(url: str, tokens: Any, isa: str) -> dict[str, Any]:
    status, body = await call("GET", f"{url}/fhir/Contract/{isa}", tokens.headers("RAL", "dcc-admin"))
    assert status == 200
    return dict(body)


def decision(resource: dict[str, Any]) -> dict[str, Any]:
    found = [e for e in resource.get("extension", []) if e["url"] == DECISION][-1]
    return {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in found["extension"]}


async def test_a_data_controller_signs_in_and_decides_with_reasons(
    exchange: str, browser: Browser, tokens: Any
) -> None:
    url = exchange
    from_uclh = await propose(
        url, tokens, "RRV", "RAL", "UCLH and Royal Free haematology ISA", categories=("pathology", "imaging")
    )
    status, _ = await call(
        "PUT",
        f"{url}/fhir/Contract/{from_uclh}/$document",
        {"Content-Type": "application/pdf", **tokens.headers("RRV", "dcc-admin")},
        data=PROPOSAL_PDF,
    )
    assert status == 200
    from_gstt = await propose(url, tokens, "RJ1", "RAL", "GSTT and Royal Free lung ISA")

    page = await new_page(browser)
    # Not signed in: the page offers the sign-in and shows nothing else (no token box).
    await page.goto(f"{url}/dcc/")
    await expect(page.locator("#signin")).to_be_visible()
    assert not await page.locator("#app").is_visible()
    assert await page.locator("textarea, #token-input").count() == 1  # only the decision dialog's reason box
    assert await page.get_by_role("link", name="Sign in").get_attribute("href") == "/signin?next=%2Fdcc%2F"

    await sign_in(page, url, "/dcc/", "jones-m")
    await expect(page.locator("#who")).to_have_text(
        "M. Jones · data controller, Royal Free London NHS Foundation Trust"
    )
    await page.wait_for_selector(f"#pending tr[data-id='{from_gstt}']")
    uclh = page.locator(f"#pending tr[data-id='{from_uclh}'] td")
    # Parties, purposes and categories in words, not codes.
    assert await uclh.nth(1).text_content() == (
        "University College London Hospitals NHS Foundation Trust, Royal Free London NHS Foundation Trust"
    )
    assert await uclh.nth(2).text_content() == "cancer care"
    assert await uclh.nth(3).text_content() == "test results (pathology); imaging reports (X-ray, CT, MRI)"

    # The signed PDF, read before accepting: fetched with the person's token and shown in place.
    await page.click(f"#pending button[data-action='document'][data-id='{from_uclh}']")
    await expect(page.locator("#viewer")).to_be_visible()
    await expect(page.locator("#viewer-meta")).to_contain_text(
        "Attached by University College London Hospitals NHS Foundation Trust"
    )
    assert (await page.get_attribute("#viewer-frame", "src") or "").startswith("blob:")
    await page.click("#viewer-close")
    await page.click(f"#pending button[data-action='accept'][data-id='{from_uclh}']")
    await page.wait_for_selector(f"#pending tr[data-id='{from_uclh}']", state="detached")
    assert (await contract(url, tokens, from_uclh))["status"] == "executed"

    # Reject: the dialog says what stops, and will not go without a reason.
    await page.click(f"#pending button[data-action='reject'][data-id='{from_gstt}']")
    await expect(page.locator("#decide-effect")).to_contain_text("nothing will be shared under it")
    await page.click("#decide-confirm")
    await expect(page.locator("#decide-error")).to_contain_text("Give a reason")
    assert (await contract(url, tokens, from_gstt))["status"] == "offered"
    await page.fill("#decide-reason", "Superseded by the network-wide lung ISA")
    await page.click("#decide-confirm")
    await page.wait_for_selector("#pending-empty", state="visible")
    rejected = await contract(url, tokens, from_gstt)
    assert rejected["status"] == "rejected"
    assert decision(rejected)["reason"] == "Superseded by the network-wide lung ISA"
    assert decision(rejected)["person"] == "M. Jones"

    # A countersigned copy replaces the proposal's PDF on the live agreement.
    await page.set_input_files(
        f"#agreements input[data-action='countersigned-file'][data-id='{from_uclh}']",
        files=[{"name": "countersigned.pdf", "mimeType": "application/pdf", "buffer": COUNTERSIGNED_PDF}],
    )
    await page.click(f"#agreements button[data-action='countersign'][data-id='{from_uclh}']")
    await expect(page.locator("#status")).to_have_text(
        "Countersigned copy of “UCLH and Royal Free haematology ISA” uploaded."
    )
    status, pdf = await call("GET", f"{url}/fhir/Contract/{from_uclh}/$document", tokens.headers("RRV", "dcc-admin"))
    assert status == 200 and pdf == COUNTERSIGNED_PDF
    attachment = (await contract(url, tokens, from_uclh))["legallyBindingAttachment"]
    assert attachment["extension"][0]["valueReference"]["identifier"]["value"] == "RAL"

    # Revoke: what will stop is said before it happens; the reason shows beside the new state.
    await page.click(f"#agreements button[data-action='revoke'][data-id='{from_uclh}']")
    effect = await page.locator("#decide-effect").text_content() or ""
    assert effect.startswith(
        "From now on University College London Hospitals NHS Foundation Trust, Royal Free "
        "London NHS Foundation Trust can no longer share test results (pathology); imaging "
        "reports (X-ray, CT, MRI) for cancer care under this agreement"
    )
    await page.fill("#decide-reason", "The haematology service moved to UCLH")
    await page.click("#decide-confirm")
    status_cell = page.locator(f"#agreements tr[data-id='{from_uclh}'] td:nth-child(3)")
    await expect(status_cell).to_have_text(
        "revokedrevoked by Royal Free London NHS Foundation Trust (M. Jones): The haematology service moved to UCLH"
    )
    revoked = await contract(url, tokens, from_uclh)
    assert revoked["status"] == "revoked" and decision(revoked)["action"] == "revoke"
    assert all(s["signature"][0].get("when") for s in revoked["signer"])

    # Register an organisation; it is then offered as a party.
    await page.fill("#register-ods", "r1k")
    await page.fill("#register-name", "London North West University Healthcare NHS Trust")
    await page.select_option("#register-kind", "acute-trust")
    await page.fill("#register-contact", "A. Khan")
    await page.fill("#register-email", "dcc@lnwh.nhs.example")
    await page.click("#register-submit")
    await expect(page.locator("#status")).to_have_text(
        "Registered London North West University Healthcare NHS Trust (R1K)."
    )
    await expect(page.locator("#propose-party option[value='R1K']")).to_have_count(1)
    status, org = await call("GET", f"{url}/fhir/Organization/R1K", tokens.headers("RAL", "dcc-admin"))
    assert status == 200 and org["contact"][0]["name"]["text"] == "A. Khan"
    # A bad registration says why, and the next good action clears the old error.
    await page.fill("#register-ods", "R1K")
    await page.fill("#register-name", "Again")
    await page.select_option("#register-kind", "hospice")
    await page.click("#register-submit")
    await expect(page.locator("#status")).to_contain_text("R1K is already registered")
    await page.select_option("#org-select", "RJ1")
    await expect(page.locator("#status")).to_have_text("")
    await page.wait_for_selector("#agreements tr[data-id='isa-rj1-rpy']")

    # The propose form offers purposes and document kinds in words.
    assert "cancer care" in (await page.locator("#propose-purposes").text_content() or "")
    assert "discharge summaries" in (await page.locator("#propose-categories").text_content() or "")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("document.getElementById('register').reset()")
    await page.select_option("#org-select", "RAL")
    await page.wait_for_selector(f"#agreements tr[data-id='{from_uclh}']")
    await page.screenshot(path=str(SCREENSHOTS / "dcc.png"), full_page=True)

    # The session renews silently; when the sign-in ends on the server, the page says so plainly.
    await expect(page.locator("body")).to_have_attribute("data-renewals", re.compile(r"^[1-9]\d*$"), timeout=20000)
    await page.evaluate("fetch('/signin/signout', {method: 'POST'})")
    banner = page.locator("#session-ended")
    await banner.wait_for(state="visible", timeout=20000)
    assert (await banner.text_content() or "").startswith("Your sign-in could not be renewed")
    assert await banner.get_by_role("link", name="Sign in again").get_attribute("href") == "/signin?next=%2Fdcc%2F"
    assert errors(page) == []


async def test_the_dcc_shows_who_a_template_admits_and_its_owner_approves_a_join(
    exchange: str, browser: Browser, tokens: Any
) -> None:
    url = exchange
    template = {
        "resourceType": "Contract",
        "title": "RJ1 standard ISA",
        "scope": {"coding": [{"code": "direct-care"}]},
        "extension": [
            {"url": "https://lhcie.london/fhir/StructureDefinition/template-agreement", "valueBoolean": True},
            {
                "url": "https://lhcie.london/fhir/StructureDefinition/template-admits-organisation-type",
                "valueCode": "hospice",
            },
        ],
    }
    status, made = await call(
        "POST", f"{url}/fhir/Contract", {**FHIR, **tokens.headers("RJ1", "dcc-admin")}, json=template
    )
    assert status == 201
    tid = made["id"]
    # RAL (an acute trust, not a hospice) asks to join from its console and waits.
    page = await new_page(browser)
    await sign_in(page, url, "/dcc/", "jones-m")
    await page.click(f"#templates button[data-action='join'][data-id='{tid}']")
    await page.wait_for_selector(
        "#templates span:text(\"waiting for Guy's and St Thomas' NHS Foundation Trust to approve\")"
    )
    row = page.locator("#templates tbody tr", has_text="RJ1 standard ISA")
    assert await row.locator("td").nth(3).text_content() == "any hospice at once; others on approval"
    assert await row.locator("td").nth(2).text_content() == "direct care (all sub-purposes)"
    # RJ1's data controller sees the request as a pending item and approves it.
    owner = await new_page(browser)
    await sign_in(owner, url, "/dcc/", "evans-j")
    await owner.click(f"#pending button[data-action='approve-join'][data-id='{tid}'][data-org='RAL']")
    await owner.wait_for_selector(f"#pending button[data-id='{tid}']", state="detached")
    status, joined = await call("GET", f"{url}/fhir/Contract/{tid}", tokens.headers("RJ1", "dcc-admin"))
    assert [a["identifier"]["value"] for a in joined["authority"]] == ["RJ1", "RAL"]
    assert errors(page) == [] and errors(owner) == []


async def test_a_person_who_is_not_a_data_controller_is_told_so(exchange: str, browser: Browser) -> None:
    page = await new_page(browser)
    await page.goto(f"{exchange}/dcc/")
    await page.get_by_role("link", name="Sign in").click()
    await page.click("button[name=person][value='brown-s']")
    await page.wait_for_url(f"{exchange}/dcc/")
    await expect(page.locator("#signin-message")).to_have_text(
        "You are signed in, but not as a data controller: this console is for your organisation's data controllers."
    )
    assert not await page.locator("#app").is_visible()


async def test_the_dcc_warns_of_an_agreement_that_can_never_apply(exchange: str, browser: Browser, tokens: Any) -> None:
    url = exchange
    body = {
        "resourceType": "Contract",
        "title": "End-of-life ISA for imaging",
        "authority": [{"identifier": {"system": ODS_CODE, "value": "RAL"}}],
        "scope": {"coding": [{"code": "end-of-life-care"}]},
        "term": [
            {
                "asset": [
                    {
                        "type": [
                            {
                                "coding": [
                                    {
                                        "system": "https://lhcie.london/fhir/CodeSystem/document-category",
                                        "code": "imaging",
                                    }
                                ]
                            }
                        ]
                    }
                ],
                "offer": {"text": "documents"},
            }
        ],
    }
    status, made = await call("POST", f"{url}/fhir/Contract", {**FHIR, **tokens.headers("RJ1", "dcc-admin")}, json=body)
    assert status == 201, made
    never = made["id"]
    fine = await propose(url, tokens, "RJ1", "RAL", "GSTT and Royal Free lung ISA")
    page = await new_page(browser)
    await sign_in(page, url, "/dcc/", "jones-m")
    await page.wait_for_selector(f"#pending button[data-id='{fine}']")
    warning = page.locator(f"#pending .never-applies[data-id='{never}']")
    assert await warning.text_content() == (
        "\u26a0 This agreement can never apply: its purposes "
        "(end-of-life-care) admit none of its document categories (imaging)."
    )
    assert await page.locator(f"#pending .never-applies[data-id='{fine}']").count() == 0
    await page.wait_for_selector(f"#agreements .never-applies[data-id='{never}']")
    assert errors(page) == []
