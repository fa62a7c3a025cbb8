"""Who sees which audit records: an organisation's DCC administrators and auditors see the records that
involve their own organisation; only the exchange operator sees the whole exchange, and every use of that
role is itself on the record."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import TEST_PATIENT, eventually
from tests.unit.test_audit_service import event_codes, post_document, resources, search

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
EVERYTHING = "/fhir/AuditEvent/$export?start=2000-01-01&end=2100-01-01"


async def rj1_shares_a_lung_cancer_document(stack: TestClient, tokens: Any) -> str:
    """RJ1 posts a document for its lung MDT (so an alert for CareTeam/rj1-lung is on the record too)."""
    doc_id = await post_document(stack, tokens, "RJ1")
    custodian = tokens.headers("RJ1", "dcc-admin")

    async def recorded() -> bool:
        codes = event_codes(await search(stack, f"patient.identifier={TEST_PATIENT}&_count=200", custodian))
        return {"document.stored", "alert.raised"} <= set(codes)

    await eventually(recorded)
    return doc_id


async def exported(stack: TestClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await stack.get(EVERYTHING, headers=headers)
    assert response.status == 200, await response.text()
    return [json.loads(line) for line in (await response.text()).splitlines()]


async def test_another_organisations_admin_and_auditor_see_none_of_rj1s_records(stack: TestClient, tokens: Any) -> None:
    doc_id = await rj1_shares_a_lung_cancer_document(stack, tokens)
    for role in ("dcc-admin", "auditor"):
        ral = tokens.headers("RAL", role)
        found = await search(stack, f"patient.identifier={NHS_SYSTEM}|{TEST_PATIENT}&_count=200", ral)
        # Only RAL's own searches (which name the NHS number RAL itself asked about).
        assert set(event_codes(found)) <= {"audit.searched"}, role
        assert all("@RAL" in json.dumps(r) for r in resources(found)), role
        everything = [
            r for r in resources(await search(stack, "_count=200", ral)) if r["subtype"][1]["code"] != "audit.searched"
        ]
        text = json.dumps(everything)
        assert TEST_PATIENT not in text and "rj1-lung" not in text and doc_id not in text, role
        lines = await exported(stack, ral)
        assert all("RAL" in line["orgs"] for line in lines), role
        text = json.dumps([line for line in lines if line["event_type"] != "audit.searched"])
        assert TEST_PATIENT not in text and "CareTeam/rj1-lung" not in text and doc_id not in text, role


async def test_an_organisations_admin_sees_its_own_records_and_only_those(stack: TestClient, tokens: Any) -> None:
    doc_id = await rj1_shares_a_lung_cancer_document(stack, tokens)
    rj1 = tokens.headers("RJ1", "dcc-admin")
    own = resources(await search(stack, f"patient.identifier={TEST_PATIENT}&_count=200", rj1))
    assert {"document.received", "document.stored", "alert.raised"} <= {r["subtype"][1]["code"] for r in own}
    lines = await exported(stack, rj1)
    assert lines and all("RJ1" in line["orgs"] for line in lines)
    assert any(f"DocumentReference/{doc_id}" in line["entities"] for line in lines)
    # Not RAL's own work: RAL's auditor searching leaves a record that involves RAL alone.
    await search(stack, "_count=1", tokens.headers("RAL", "auditor"))
    assert "audit.searched" not in [
        r["subtype"][1]["code"] for r in resources(await search(stack, "agent=RAL&_count=200", rj1))
    ]


async def test_the_exchange_operator_sees_everything_and_is_on_the_record(stack: TestClient, tokens: Any) -> None:
    doc_id = await rj1_shares_a_lung_cancer_document(stack, tokens)
    operator = tokens.headers("LHCIE", "exchange-operator")
    lines = await exported(stack, operator)
    assert {"RJ1", "RRV", "RAL"} <= {org for line in lines for org in line["orgs"]}
    assert any(f"DocumentReference/{doc_id}" in line["entities"] for line in lines)
    # The whole chain, so an archive of it re-verifies link by link.
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    uses = resources(await search(stack, "agent=LHCIE&_count=200", operator))
    kinds = [r["subtype"][1]["code"] for r in uses]
    assert "audit.searched" in kinds and "audit.exported" in kinds
    user = next(a for a in uses[kinds.index("audit.exported")]["agent"] if a["requestor"])
    assert user["role"][0]["coding"][0]["code"] == "exchange-operator"
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "HSYSADMIN"


async def test_the_chain_check_is_open_to_the_operator_and_search_stays_closed_to_clinical_roles(
    stack: TestClient, tokens: Any
) -> None:
    response = await stack.get("/fhir/AuditEvent/$verify", headers=tokens.headers("LHCIE", "exchange-operator"))
    assert response.status == 200
    for role in ("clinician", "system", "mdt-coordinator"):
        response = await stack.get(EVERYTHING, headers=tokens.headers("RJ1", role, mdt="rj1-lung"))
        assert response.status == 403, role
        assert (await response.json())["resourceType"] == "OperationOutcome"
