"""Issue 16's two shapes in the people's area, through the independent R4 validator (Medplum's): every
Contract names when each party signed (Signature.when is required), including the demo agreements and
one ended with a recorded reason, and the patient's access report (a collection Bundle) carries no
``total`` (bdl-1)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.fhir.identifiers import ODS_CODE
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import TEST_PATIENT, document_reference, eventually

pytestmark = pytest.mark.usefixtures("validated_answers")
FHIR = {"Content-Type": "application/fhir+json"}


async def test_contracts_name_when_each_party_signed_and_why_one_ended(
    stack: TestClient, tokens: Any, validated_answers: list[str]
) -> None:
    demo = await (await stack.get("/fhir/Contract/isa-rj1-rrv", headers=tokens.headers("RJ1", "dcc-admin"))).json()
    assert [s["signature"][0]["when"] for s in demo["signer"]] == ["2026-01-01T00:00:00+00:00"] * 2

    body = {
        "resourceType": "Contract",
        "title": "GSTT and Royal Free lung ISA",
        "authority": [{"identifier": {"system": ODS_CODE, "value": "RAL"}}],
        "scope": {"coding": [{"code": "cancer-care"}]},
        "term": [{"asset": [{"type": [{"coding": [{"code": "pathology"}]}]}]}],
    }
    made = await (
        await stack.post("/fhir/Contract", json=body, headers={**FHIR, **tokens.headers("RJ1", "dcc-admin")})
    ).json()
    assert made["term"][0]["asset"][0]["type"][0]["coding"][0]["display"] == "test results (pathology)"
    reason = {
        "resourceType": "Parameters",
        "parameter": [{"name": "reason", "valueString": "Not needed: see the network ISA"}],
    }
    response = await stack.post(
        f"/fhir/Contract/{made['id']}/$reject",
        json=reason,
        headers={**FHIR, **tokens.headers("RAL", "dcc-admin", name="M. Jones")},
    )
    assert response.status == 200
    rejected = await response.json()
    assert rejected["status"] == "rejected"
    decision = {
        p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in rejected["extension"][-1]["extension"]
    }
    assert decision["action"] == "reject" and decision["reason"] == "Not needed: see the network ISA"
    assert decision["organization"]["identifier"]["value"] == "RAL" and decision["person"] == "M. Jones"
    assert rejected["signer"][0]["signature"][0]["when"]
    # A revoke without a body still works (API clients of before); an over-long reason is a 4xx OperationOutcome.
    too_long = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "x" * 501}]}
    refused = await stack.post(
        "/fhir/Contract/isa-rj1-rpy/$revoke", json=too_long, headers={**FHIR, **tokens.headers("RJ1", "dcc-admin")}
    )
    assert refused.status == 422 and (await refused.json())["resourceType"] == "OperationOutcome"
    assert (await (await stack.get("/fhir/Contract/isa-rj1-rpy", headers=tokens.headers("RJ1", "dcc-admin"))).json())[
        "status"
    ] == "executed"  # nothing half-written
    plain = await stack.post("/fhir/Contract/isa-rj1-rpy/$revoke", headers=tokens.headers("RJ1", "dcc-admin"))
    assert plain.status == 200 and (await plain.json())["status"] == "revoked"
    assert validated_answers == []


async def test_the_access_report_is_a_valid_collection_without_a_total(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers("RJ1")}
    )
    doc_id = (await response.json())["id"]

    async def read() -> bool:
        return (await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RRV", "clinician"))).status == 200

    await eventually(read)
    patient = {**tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT), "Accept": "application/fhir+json"}

    async def listed() -> dict[str, Any] | None:
        report = await (await stack.get("/fhir/AuditEvent/$access-report", headers=patient)).json()
        return report if any(e["resource"]["resourceType"] == "AuditEvent" for e in report["entry"]) else None

    report = await eventually(listed)
    assert report["type"] == "collection" and "total" not in report
