"""The walking skeleton on the embedded stack: post -> stored -> alerted -> retrievable -> audited."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from lhcie.services import SPECS
from shared.config import Settings
from shared.edge import build_app
from tests.helpers import PDF, TEST_PATIENT, document_reference, eventually

FHIR = {"Content-Type": "application/fhir+json"}


async def post_document(
    stack: TestClient, tokens: Any, resource: dict[str, Any] | None = None, org: str = "RJ1"
) -> str:
    response = await stack.post(
        "/fhir/DocumentReference",
        json=resource or document_reference(custodian=org),
        headers={**FHIR, **tokens.headers(org)},
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    assert response.headers["Location"] == str(stack.make_url(f"/fhir/DocumentReference/{body['id']}"))
    return body["id"]


async def stored(stack: TestClient, tokens: Any, doc_id: str, org: str = "RJ1") -> dict[str, Any] | None:
    response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers(org))
    return await response.json() if response.status == 200 else None


async def test_posted_document_is_stored_alerted_retrievable_and_audited(stack: TestClient, tokens: Any) -> None:
    doc_id = await post_document(stack, tokens)

    resource = await eventually(lambda: stored(stack, tokens, doc_id))
    assert resource["id"] == doc_id
    assert resource["status"] == "current"
    assert resource["content"][0]["attachment"] == {
        "contentType": "application/pdf",
        "url": str(stack.make_url(f"/fhir/Binary/{doc_id}")),
        "size": len(PDF),
    }

    coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")

    async def alerts() -> list[dict[str, Any]]:
        response = await stack.get("/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator)
        assert response.status == 200
        return (await response.json()).get("entry", [])

    [entry] = await eventually(alerts)
    alert = entry["resource"]
    assert alert["status"] == "in-progress"
    assert alert["priority"] == "urgent"
    assert alert["recipient"] == [{"reference": "CareTeam/rj1-lung"}]
    assert alert["about"] == [{"reference": f"DocumentReference/{doc_id}"}]
    assert alert["subject"]["identifier"]["value"] == TEST_PATIENT

    # Byte for byte, to the custodian and to a trust with an accepted ISA (RRV) ...
    for org in ("RJ1", "RRV"):
        response = await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers(org, "clinician"))
        assert response.status == 200
        assert response.content_type == "application/pdf"
        assert await response.read() == PDF
    # ... and refused to a trust without one (RAL).
    response = await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RAL", "clinician"))
    assert response.status == 403
    body = await response.json()
    assert body["issue"][0]["code"] == "forbidden"
    assert body["issue"][0]["diagnostics"] == (
        f"Access denied: not permitted by the sharing policy (reference {response.headers['X-Correlation-Id']})."
    )

    ack = await stack.post(f"/fhir/Communication/{alert['id']}/$acknowledge", headers=coordinator)
    assert ack.status == 200
    acknowledged = await ack.json()
    assert acknowledged["status"] == "completed"
    assert acknowledged["note"][0]["authorString"] == "mdt-coordinator@RJ1"

    admin = tokens.headers("RJ1", "dcc-admin")

    async def trail() -> list[str] | None:
        response = await stack.get(f"/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=admin)
        codes = [e["resource"]["subtype"][1]["code"] for e in (await response.json()).get("entry", [])]
        expected = {
            "document.received",
            "document.stored",
            "alert.raised",
            "document.retrieved",
            "access.denied",
            "alert.acknowledged",
        }
        return codes if expected <= set(codes) and codes.count("document.retrieved") == 2 else None

    codes = await eventually(trail)
    assert codes[:2] == ["document.received", "document.stored"]
    assert codes.count("document.retrieved") == 2

    verify = await stack.get("/fhir/AuditEvent/$verify", headers=admin)
    parameters = (await verify.json())["parameter"]
    assert parameters[0] == {"name": "intact", "valueBoolean": True}
    assert parameters[1]["name"] == "count" and parameters[1]["valueInteger"] >= len(codes)


async def test_search_by_patient_returns_only_what_the_caller_may_see(stack: TestClient, tokens: Any) -> None:
    doc_id = await post_document(stack, tokens)
    await eventually(lambda: stored(stack, tokens, doc_id))
    query = f"/fhir/DocumentReference?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{TEST_PATIENT}"

    response = await stack.get(query, headers=tokens.headers("RRV"))
    bundle = await response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == [doc_id]

    response = await stack.get(query, headers=tokens.headers("RAL"))
    assert (await response.json())["entry"] == []


async def test_document_for_another_trusts_mdt_alerts_only_with_an_isa(stack: TestClient, tokens: Any) -> None:
    # RRV refers to RJ1's lung MDT (ISA accepted) and RAL tries to (no ISA): only the first alerts.
    shared_id = await post_document(stack, tokens, document_reference(custodian="RRV"), org="RRV")
    unshared_id = await post_document(stack, tokens, document_reference(custodian="RAL"), org="RAL")
    await eventually(lambda: stored(stack, tokens, shared_id, "RRV"))
    await eventually(lambda: stored(stack, tokens, unshared_id, "RAL"))
    coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")

    async def alerted_documents() -> set[str]:
        response = await stack.get("/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator)
        return {e["resource"]["about"][0]["reference"] for e in (await response.json())["entry"]}

    assert await eventually(alerted_documents) == {f"DocumentReference/{shared_id}"}


async def test_content_not_matching_its_declared_type_is_refused_at_once(
    stack: TestClient, tokens: Any, settings: Any
) -> None:
    response = await stack.post(
        "/fhir/DocumentReference",
        json=document_reference(content=b"not a pdf at all"),
        headers={**FHIR, **tokens.headers()},
    )
    assert response.status == 422
    assert (await response.json())["issue"][0]["diagnostics"] == (
        "Declared application/pdf but the content is not a PDF."
    )
    staged = settings.data_dir / "objects" / "staging"
    assert not staged.exists() or not any(p.is_file() for p in staged.rglob("*"))


async def test_a_pending_document_answers_202_to_its_sender_only(settings: Settings, tokens: Any) -> None:
    # Without storage nothing is filed, so the document stays pending for as long as the test looks.
    app = build_app(settings, [spec for name, spec in SPECS.items() if name != "storage"])
    async with TestClient(TestServer(app)) as pending_stack:
        doc_id = await post_document(pending_stack, tokens)
        response = await pending_stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
        assert response.status == 202
        assert response.headers["Retry-After"] == "1"
        # Another trust, even one with an accepted ISA, does not learn that the submission exists.
        other = await pending_stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers("RRV"))
        assert other.status == 404
        assert (await other.json())["resourceType"] == "OperationOutcome"


async def test_alerts_are_only_for_the_mdts_own_staff(stack: TestClient, tokens: Any) -> None:
    response = await stack.get(
        "/fhir/Communication?recipient=CareTeam/rj1-lung",
        headers=tokens.headers("RRV", "mdt-coordinator", mdt="rrv-haematology"),
    )
    assert response.status == 403
    assert await response.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "forbidden",
                "details": {
                    "coding": [{"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "FORBIDDEN"}]
                },
                "diagnostics": "Only members of this MDT may see its alerts.",
            }
        ],
    }
