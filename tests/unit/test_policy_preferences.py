"""A patient's opt-outs are enforced by every service that moves a document: retrieval, search and alerts."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from services.notification.routes import NOTIFICATION
from services.storage.routes import STORAGE
from shared.fhir.identifiers import ODS_CODE
from tests.helpers import TEST_PATIENT, document_reference, eventually

FHIR = {"Content-Type": "application/fhir+json"}
CATEGORY_SYSTEM = "https://lhcie.london/fhir/CodeSystem/document-category"
SEARCH = f"/fhir/DocumentReference?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{TEST_PATIENT}"


def preferences(*denials: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Consent", "status": "active", "provision": {"type": "permit", "provision": list(denials)}}


async def set_preferences(stack: TestClient, tokens: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = await stack.put(
        "/fhir/Consent/preferences",
        json=body,
        headers={**FHIR, **tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)},
    )
    assert response.status == 200, await response.text()
    consent = await response.json()
    version = int(consent["meta"]["versionId"])

    async def everywhere() -> bool:
        # Wait until the services that decide have the new preferences (the bus is asynchronous).
        for key in (STORAGE, NOTIFICATION):
            seen = await stack.server.app[key].policy.preferences(TEST_PATIENT)
            if seen is None or seen.version < version:
                return False
        return True

    await eventually(everywhere)
    return consent


async def post(stack: TestClient, tokens: Any, type_code: str, related: tuple[str, ...]) -> str:
    response = await stack.post(
        "/fhir/DocumentReference",
        json=document_reference(type_code=type_code, related=related),
        headers={**FHIR, **tokens.headers("RJ1")},
    )
    assert response.status == 202
    doc_id = (await response.json())["id"]

    async def stored() -> bool:
        return (await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers("RJ1"))).status == 200

    await eventually(stored)
    return doc_id


async def alerted(stack: TestClient, tokens: Any, org: str, mdt: str) -> set[str]:
    response = await stack.get(
        f"/fhir/Communication?recipient=CareTeam/{mdt}", headers=tokens.headers(org, "mdt-coordinator", mdt=mdt)
    )
    assert response.status == 200
    return {
        e["resource"]["about"][0]["reference"].removeprefix("DocumentReference/")
        for e in (await response.json())["entry"]
    }


async def test_a_category_opt_out_stops_retrieval_search_and_alerts_but_not_the_custodian(
    stack: TestClient, tokens: Any
) -> None:
    consent = await set_preferences(
        stack, tokens, preferences({"type": "deny", "class": [{"system": CATEGORY_SYSTEM, "code": "pathology"}]})
    )
    assert consent["provision"] == {
        "type": "permit",
        "provision": [
            {
                "type": "deny",
                "class": [{"system": CATEGORY_SYSTEM, "code": "pathology", "display": "test results (pathology)"}],
            }
        ],
    }

    # A pathology report (opted out) and a discharge summary (not), each for RJ1's and UCLH's MDTs.
    teams = ("CareTeam/rj1-lung", "CareTeam/rrv-haematology")
    withheld = await post(stack, tokens, "11526-1", teams)
    shared = await post(stack, tokens, "18842-5", teams)

    # The custodian's own MDT is alerted to both; UCLH's only to the discharge summary.
    assert await eventually(lambda: _when(alerted(stack, tokens, "RJ1", "rj1-lung"), {withheld, shared}))
    assert await eventually(lambda: _when(alerted(stack, tokens, "RRV", "rrv-haematology"), {shared}))
    assert await alerted(stack, tokens, "RRV", "rrv-haematology") == {shared}

    response = await stack.get(f"/fhir/Binary/{withheld}", headers=tokens.headers("RRV", "clinician"))
    assert response.status == 403
    assert await response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "forbidden",
                "details": {
                    "coding": [{"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "ACCESS_DENIED"}]
                },
                "diagnostics": denied(response),
            }
        ],
    }
    assert (await stack.get(f"/fhir/Binary/{shared}", headers=tokens.headers("RRV", "clinician"))).status == 200
    assert (await stack.get(f"/fhir/Binary/{withheld}", headers=tokens.headers("RJ1", "clinician"))).status == 200

    response = await stack.get(SEARCH, headers=tokens.headers("RRV"))
    assert [e["resource"]["id"] for e in (await response.json())["entry"]] == [shared]

    # Withdrawing the opt-out restores sharing (the replicas converge on the newest version).
    await set_preferences(stack, tokens, preferences())
    assert (await stack.get(f"/fhir/Binary/{withheld}", headers=tokens.headers("RRV", "clinician"))).status == 200


async def test_an_organisation_opt_out_withholds_everything_from_that_organisation(
    stack: TestClient, tokens: Any
) -> None:
    await set_preferences(
        stack,
        tokens,
        preferences(
            {
                "type": "deny",
                "actor": [
                    {"role": {"text": "recipient"}, "reference": {"identifier": {"system": ODS_CODE, "value": "RPY"}}}
                ],
            }
        ),
    )
    doc_id = await post(stack, tokens, "18842-5", ())
    response = await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RPY", "clinician"))
    assert response.status == 403
    assert (await response.json())["issue"][0]["diagnostics"] == denied(response)
    assert (await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RRV", "clinician"))).status == 200


def denied(response: Any) -> str:
    return f"Access denied: not permitted by the sharing policy (reference {response.headers['X-Correlation-Id']})."


async def test_a_refusal_does_not_tell_the_caller_what_the_patient_chose_but_the_record_does(
    stack: TestClient, tokens: Any
) -> None:
    await set_preferences(
        stack,
        tokens,
        preferences(
            {
                "type": "deny",
                "actor": [
                    {"role": {"text": "recipient"}, "reference": {"identifier": {"system": ODS_CODE, "value": "RPY"}}}
                ],
            }
        ),
    )
    doc_id = await post(stack, tokens, "18842-5", ())
    refused = []
    for path in (f"/fhir/Binary/{doc_id}", f"/fhir/DocumentReference/{doc_id}"):
        response = await stack.get(path, headers=tokens.headers("RPY", "clinician"))
        body = await response.text()
        assert response.status == 403 and "preference" not in body and "opt-out" not in body, path
        assert (await response.json())["issue"][0]["diagnostics"] == denied(response)
        refused.append(response.headers["X-Correlation-Id"])
    # The reference finds the audit record, which names the rule and the reason.
    for reference in refused:

        async def recorded(reference: str = reference) -> list[dict[str, Any]]:
            r = await stack.get(
                f"/fhir/AuditEvent?request-id={reference}&subtype=access.denied",
                headers=tokens.headers("LHCIE", "exchange-operator"),
            )
            return [e["resource"] for e in (await r.json())["entry"]]

        records = await eventually(recorded)
        assert any("organisation opt-out" in r.get("outcomeDesc", "") for r in records)
    # And the patient's own access report says why, in words.
    page = await stack.get(
        "/fhir/AuditEvent/$access-report?_format=html",
        headers=tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT),
    )
    assert "you asked for your records not to be shared with this organisation" in await page.text()


async def test_preferences_are_validated_and_only_the_patient_sets_them(stack: TestClient, tokens: Any) -> None:
    body = preferences({"type": "deny", "class": [{"code": "genomics"}]}, {"type": "permit"})
    response = await stack.put(
        "/fhir/Consent/preferences",
        json=body,
        headers={**FHIR, **tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)},
    )
    assert response.status == 422
    assert [(i["diagnostics"], i["expression"]) for i in (await response.json())["issue"]] == [
        (
            "category must be one of care-plan, clinic-letter, discharge-summary, end-of-life-care, imaging, pathology, "
            "referral, transfer-of-care, other",
            ["Consent.provision.provision[0].class[0]"],
        ),
        ("each rule must be a deny rule", ["Consent.provision.provision[1]"]),
    ]
    # A carer may see the preferences but not change them (and has no Consent write scope at all).
    response = await stack.put(
        f"/fhir/Consent/preferences?patient={TEST_PATIENT}",
        json=preferences(),
        headers={**FHIR, **tokens.headers("NHSLOGIN", "carer")},
    )
    assert response.status == 403
    response = await stack.get(
        f"/fhir/Consent/preferences?patient={TEST_PATIENT}", headers=tokens.headers("NHSLOGIN", "carer")
    )
    assert response.status == 200
    # Another patient may not even read them; the answer says nothing about whether they exist.
    response = await stack.get(
        f"/fhir/Consent/preferences?patient={TEST_PATIENT}",
        headers=tokens.headers("NHSLOGIN", "patient", patient="9000000017"),
    )
    assert (response.status, (await response.json())["issue"][0]["diagnostics"]) == (
        403,
        "Access denied: not permitted by the sharing policy.",
    )


async def _when(probe: Any, expected: set[str]) -> bool:
    return await probe == expected
