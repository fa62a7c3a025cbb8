"""The patient's view: which organisations hold records about them, and carers who see it on their behalf."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import TEST_PATIENT, document_reference, eventually

FHIR = {"Content-Type": "application/fhir+json"}
HOLDERS = "/fhir/Organization/$record-holders"
LOGIN = "https://lhcie.london/fhir/Id/login-subject"


async def holders(stack: TestClient, headers: dict[str, str], query: str = "") -> tuple[int, dict[str, Any]]:
    response = await stack.get(HOLDERS + query, headers=headers)
    return response.status, await response.json()


async def test_a_carer_sees_the_record_holders_only_while_the_grant_is_active(stack: TestClient, tokens: Any) -> None:
    for org in ("RJ1", "RRV"):
        response = await stack.post(
            "/fhir/DocumentReference",
            json=document_reference(custodian=org, related=()),
            headers={**FHIR, **tokens.headers(org)},
        )
        assert response.status == 202
    patient = tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)

    async def both() -> dict[str, Any] | None:
        _, bundle = await holders(stack, patient)
        return bundle if len(bundle["entry"]) == 2 else None

    bundle = await eventually(both)
    first = bundle["entry"][0]["resource"]
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["RJ1", "RRV"]
    assert first["name"] == "Guy's and St Thomas' NHS Foundation Trust"
    holding = first["extension"][0]
    assert holding["url"] == "https://lhcie.london/fhir/StructureDefinition/record-holding"
    assert holding["extension"][:2] == [
        {"url": "documents", "valueInteger": 1},
        {"url": "category", "valueCode": "pathology"},
    ]

    # The demo carer (T. Brown, the patient's daughter) holds an active grant.
    carer = tokens.headers("NHSLOGIN", "carer")
    status, seen = await holders(stack, carer, f"?patient={TEST_PATIENT}")
    assert (status, seen["entry"]) == (200, bundle["entry"])
    response = await stack.get(f"/fhir/RelatedPerson?patient={TEST_PATIENT}", headers=patient)
    [grant] = [e["resource"] for e in (await response.json())["entry"]]
    assert grant == {
        "resourceType": "RelatedPerson",
        "id": "grant-demo",
        "meta": {"versionId": "1"},
        "active": True,
        "identifier": [{"system": LOGIN, "value": "carer@NHSLOGIN"}],
        "patient": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": TEST_PATIENT}},
        "name": [{"text": "T. Brown"}],
        "relationship": [{"text": "daughter"}],
    }

    # Another carer without a grant, and the carer naming someone else, are refused.
    status, body = await holders(
        stack, tokens.headers("NHSLOGIN", "carer", subject="stranger@NHSLOGIN"), f"?patient={TEST_PATIENT}"
    )
    assert (status, body["issue"][0]["diagnostics"]) == (403, "Access denied: not permitted by the sharing policy.")
    # A clinician is not a patient-facing caller at all.
    status, body = await holders(stack, tokens.headers("RJ1", "clinician"), f"?patient={TEST_PATIENT}")
    assert (status, body["issue"][0]["diagnostics"]) == (403, "Access denied: not permitted by the sharing policy.")

    # Revoked: the carer is refused at once; a carer cannot revoke it themself.
    response = await stack.post("/fhir/RelatedPerson/grant-demo/$revoke", headers=carer)
    assert response.status == 403
    response = await stack.post("/fhir/RelatedPerson/grant-demo/$revoke", headers=patient)
    assert (response.status, (await response.json())["active"]) == (200, False)
    status, body = await holders(stack, carer, f"?patient={TEST_PATIENT}")
    assert (status, body["issue"][0]["diagnostics"]) == (403, "Access denied: not permitted by the sharing policy.")

    # Granted again (a new grant): visible again, and the patient sees both grants' histories.
    person = {
        "resourceType": "RelatedPerson",
        "identifier": [{"system": LOGIN, "value": "carer@NHSLOGIN"}],
        "name": [{"text": "Sam Carer"}],
        "relationship": [{"text": "daughter"}],
    }
    response = await stack.post("/fhir/RelatedPerson", json=person, headers={**FHIR, **patient})
    assert response.status == 201
    new_grant = await response.json()
    assert response.headers["Location"] == f"/fhir/RelatedPerson/{new_grant['id']}"
    status, seen = await holders(stack, carer, f"?patient={TEST_PATIENT}")
    assert (status, len(seen["entry"])) == (200, 2)
    response = await stack.get("/fhir/Consent", headers=patient)
    consents = [(e["resource"]["id"], e["resource"]["status"]) for e in (await response.json())["entry"]]
    assert sorted(consents) == sorted(
        [("preferences", "active"), ("grant-demo", "inactive"), (new_grant["id"], "active")]
    )


async def test_a_patient_sees_only_their_own_record_holders(stack: TestClient, tokens: Any) -> None:
    status, body = await holders(
        stack, tokens.headers("NHSLOGIN", "patient", patient="9000000017"), f"?patient={TEST_PATIENT}"
    )
    assert (status, body["issue"][0]["diagnostics"]) == (403, "Access denied: not permitted by the sharing policy.")
    status, body = await holders(stack, tokens.headers("NHSLOGIN", "carer"), "?patient=123")
    assert (status, body["issue"][0]["code"]) == (422, "value")
    status, body = await holders(stack, tokens.headers("NHSLOGIN", "carer"))
    assert (status, body["issue"][0]["expression"]) == (400, ["patient"])


async def test_a_carer_grant_is_validated(stack: TestClient, tokens: Any) -> None:
    patient = tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)
    response = await stack.post(
        "/fhir/RelatedPerson",
        json={"resourceType": "RelatedPerson", "period": {"end": "soon"}},
        headers={**FHIR, **patient},
    )
    assert response.status == 422
    # Not a FHIR dateTime at all: the typed check of the body refuses it before the grant is looked at.
    assert [i["expression"] for i in (await response.json())["issue"]] == [["RelatedPerson.period.end"]]
    response = await stack.post(
        "/fhir/RelatedPerson",
        json={"resourceType": "RelatedPerson", "period": {"end": "2020"}},
        headers={**FHIR, **patient},
    )
    assert response.status == 422
    assert [i["expression"] for i in (await response.json())["issue"]] == [
        ["RelatedPerson.identifier"],
        ["RelatedPerson.name"],
        ["RelatedPerson.period.end"],
    ]
