"""The audit service on the embedded stack: the patient's access report, search with its access rules
(and its own audit trail), export, verification over HTTP, and no way to change a record."""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from services.audit.chain import GENESIS, hash_of
from services.audit.params import or_values
from services.audit.routes import AUDIT
from shared.app_keys import RUNTIME
from shared.events import Actor, CarerGrantState, DocumentFacts, DocumentStatusChanged, Event, RecordRead, RoutingKey
from tests.helpers import TEST_PATIENT, document_reference, eventually

FHIR = {"Content-Type": "application/fhir+json"}
NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"


async def post_document(stack: TestClient, tokens: Any, org: str) -> str:
    response = await stack.post(
        "/fhir/DocumentReference", json=document_reference(custodian=org), headers={**FHIR, **tokens.headers(org)}
    )
    assert response.status == 202, await response.text()
    doc_id = (await response.json())["id"]

    async def stored() -> bool:
        r = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers(org))
        return r.status == 200

    await eventually(stored)
    return doc_id


async def search(stack: TestClient, query: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await stack.get(f"/fhir/AuditEvent?{query}", headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]]


def event_codes(bundle: dict[str, Any]) -> list[str]:
    return [r["subtype"][1]["code"] for r in resources(bundle)]


async def scenario(stack: TestClient, tokens: Any) -> tuple[str, str]:
    """RJ1 and RRV each post a document about the test patient; RRV reads RJ1's; RAL is refused it."""
    rj1_doc = await post_document(stack, tokens, "RJ1")
    rrv_doc = await post_document(stack, tokens, "RRV")
    read = await stack.get(f"/fhir/Binary/{rj1_doc}", headers=tokens.headers("RRV", "clinician"))
    assert read.status == 200
    denied = await stack.get(f"/fhir/Binary/{rj1_doc}", headers=tokens.headers("RAL", "clinician"))
    assert denied.status == 403
    admin = tokens.headers("RJ1", "dcc-admin")

    async def both_recorded() -> bool:
        bundle = await search(stack, f"entity=DocumentReference/{rj1_doc}", admin)
        return {"document.retrieved", "access.denied"} <= set(event_codes(bundle))

    await eventually(both_recorded)
    return rj1_doc, rrv_doc


async def test_the_access_report_lists_exactly_the_holders_and_the_accesses(stack: TestClient, tokens: Any) -> None:
    rj1_doc, rrv_doc = await scenario(stack, tokens)
    patient = tokens.headers("RJ1", "patient", patient=TEST_PATIENT)

    response = await stack.get("/fhir/AuditEvent/$access-report", headers=patient)
    assert response.status == 200
    assert response.content_type == "application/fhir+json"
    report = await response.json()
    assert report["resourceType"] == "Bundle" and report["type"] == "collection"
    kinds = [e["resource"]["resourceType"] for e in report["entry"]]
    # The holders (with their counts), then RAL, which looked without holding anything: named too.
    assert kinds == ["Patient", "Organization", "Organization", "Organization", "AuditEvent", "AuditEvent"]
    assert report["entry"][0]["resource"] == {
        "resourceType": "Patient",
        "identifier": [{"system": NHS_SYSTEM, "value": TEST_PATIENT}],
    }
    holders = [e["resource"] for e in report["entry"][1:3]]
    assert [(h["id"], h["extension"][0]["valueInteger"]) for h in holders] == [("RJ1", 1), ("RRV", 1)]
    assert all(h.get("name") for h in holders)

    assert report["entry"][3]["resource"]["id"] == "RAL" and "extension" not in report["entry"][3]["resource"]
    accesses = [e["resource"] for e in report["entry"][4:]]
    assert "total" not in report  # bdl-1: a collection Bundle carries no total
    summary = [
        (
            a["subtype"][1]["code"],
            a["outcome"],
            next(ag["who"]["identifier"]["value"] for ag in a["agent"] if ag["type"]["coding"][0]["code"] == "PROV"),
            next(
                e["what"]["reference"]
                for e in a["entity"]
                if e["what"].get("reference", "").startswith("DocumentReference/")
            ),
        )
        for a in accesses
    ]
    assert summary == [
        ("document.retrieved", "0", "RRV", f"DocumentReference/{rj1_doc}"),
        ("access.denied", "4", "RAL", f"DocumentReference/{rj1_doc}"),
    ]
    # Staff network addresses are not part of the patient's copy.
    assert all("network" not in agent for a in accesses for agent in a["agent"])

    page = await stack.get("/fhir/AuditEvent/$access-report?_format=html", headers=patient)
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", html)
    orgs_held = [name for name, count in rows if count == "1"]
    assert len(orgs_held) == 2 and "(RJ1)" in orgs_held[0] and "(RRV)" in orgs_held[1]
    assert html.count('class="seen">seen<') == 1 and html.count('class="refused">refused<') == 1
    assert rrv_doc not in html.split("Every time")[1]  # nobody opened RRV's own document


async def test_a_withdrawn_document_is_no_longer_held_but_its_accesses_stay_listed(
    stack: TestClient, tokens: Any
) -> None:
    _, rrv_doc = await scenario(stack, tokens)
    # RRV withdraws its only document (as the intake service would announce it).
    facts = DocumentFacts(
        document_id=rrv_doc,
        patient_nhs_number=TEST_PATIENT,
        custodian="RRV",
        content_type="application/pdf",
        size=1,
        sha256="0" * 64,
    )
    withdrawn = DocumentStatusChanged(
        document=facts, status="entered-in-error", actor=Actor(org="RRV", role="system", subject="system@RRV")
    )
    await stack.server.app[AUDIT].record(
        Event.new(RoutingKey.DOCUMENT_WITHDRAWN, withdrawn, source="urn:lhcie:service:intake")
    )
    response = await stack.get(
        "/fhir/AuditEvent/$access-report", headers=tokens.headers("RJ1", "patient", patient=TEST_PATIENT)
    )
    report = await response.json()
    holders = [
        e["resource"].get("id")
        for e in report["entry"]
        if e["resource"]["resourceType"] == "Organization" and "extension" in e["resource"]
    ]
    assert holders == ["RJ1"]  # RRV still appears, named, as an organisation that looked
    assert len([e for e in report["entry"] if e["resource"]["resourceType"] == "AuditEvent"]) == 2


async def test_the_access_report_is_for_the_patient_and_their_authorised_carers(stack: TestClient, tokens: Any) -> None:
    other = await stack.get(
        "/fhir/AuditEvent/$access-report?patient=9434765919",
        headers=tokens.headers("RJ1", "patient", patient=TEST_PATIENT),
    )
    assert other.status == 403
    clinician = await stack.get(
        f"/fhir/AuditEvent/$access-report?patient={TEST_PATIENT}", headers=tokens.headers("RJ1", "clinician")
    )
    assert clinician.status == 403

    carer = tokens.headers("RJ1", "carer", subject="carer-sam")
    refused = await stack.get(f"/fhir/AuditEvent/$access-report?patient={TEST_PATIENT}", headers=carer)
    assert refused.status == 403
    assert (await refused.json())["issue"][0]["diagnostics"] == (
        f"Access denied: not permitted by the sharing policy (reference {refused.headers['X-Correlation-Id']})."
    )

    grant = CarerGrantState(
        grant_id="grant-1", patient_nhs_number=TEST_PATIENT, carer_subject="carer-sam", carer_name="Sam", version=1
    )
    await stack.server.app[RUNTIME].ports.bus.publish(
        Event.new(RoutingKey.POLICY_CONSENT_CARER_GRANTED, grant, source="urn:lhcie:service:agreements")
    )

    async def allowed() -> dict[str, Any] | None:
        r = await stack.get(f"/fhir/AuditEvent/$access-report?patient={TEST_PATIENT}", headers=carer)
        return await r.json() if r.status == 200 else None

    report = await eventually(allowed)
    assert report["entry"][0]["resource"]["identifier"][0]["value"] == TEST_PATIENT

    # Both decisions are on record as BALP Consent Authorized Decisions, refused then permitted.
    bundle = await search(stack, "subtype=AuthZ-Consent", tokens.headers("RJ1", "dcc-admin"))
    decisions = [(r["outcome"], r["entity"][1]["what"]["display"]) for r in resources(bundle)]
    assert decisions[0] == ("4", "no active carer grant from this patient")
    assert decisions[-1] == ("0", "carer grant grant-1 is active")
    bad = await stack.get("/fhir/AuditEvent/$access-report?patient=123", headers=carer)
    assert bad.status == 400


async def test_search_is_for_dcc_administrators_and_the_organisations_own_auditors(
    stack: TestClient, tokens: Any
) -> None:
    rj1_doc, rrv_doc = await scenario(stack, tokens)
    admin = tokens.headers("RJ1", "dcc-admin")

    everything = await search(stack, f"patient.identifier={NHS_SYSTEM}|{TEST_PATIENT}&_count=200", admin)
    assert {"document.received", "document.stored", "document.retrieved", "access.denied"} <= set(
        event_codes(everything)
    )

    # RAL's auditor sees its refused attempt, and nothing about RRV's read or RRV's own document.
    ral = await search(stack, "_count=200", tokens.headers("RAL", "auditor"))
    assert "access.denied" in event_codes(ral)
    assert [r["subtype"][1]["code"] for r in resources(ral) if "RAL" not in json.dumps(r)] == []
    assert f"DocumentReference/{rrv_doc}" not in json.dumps(ral)

    by_agent = await search(stack, "agent=RRV&subtype=read", admin)
    # RRV read RJ1's content (document.retrieved); RRV's reads of its own submission (record.read) do not
    # involve RJ1, so RJ1's admin does not see them.
    assert event_codes(by_agent) == ["document.retrieved"]
    refused = await search(stack, f"entity=DocumentReference/{rj1_doc}&outcome=4", admin)
    assert event_codes(refused) == ["access.denied"]
    disclosed = await search(stack, "type=110106", admin)
    assert [r["entity"][0]["what"]["reference"] for r in resources(disclosed)] == [f"DocumentReference/{rj1_doc}"]
    assert (await search(stack, "date=lt2000-01-01", admin))["entry"] == []
    today = everything["entry"][0]["resource"]["recorded"][:10]
    assert len((await search(stack, f"date=ge{today}&date=le{today}&_count=200", admin))["entry"]) >= 4

    first = await search(stack, "_count=2", admin)
    assert len(first["entry"]) == 2
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = await search(stack, next_url.split("?", 1)[1], admin)
    assert second["entry"][0]["resource"]["id"] != first["entry"][1]["resource"]["id"]

    for org, role in (("RJ1", "clinician"), ("RJ1", "system"), ("RJ1", "patient")):
        response = await stack.get("/fhir/AuditEvent", headers=tokens.headers(org, role, patient=TEST_PATIENT))
        assert response.status == 403
    for bad in ("patient.identifier=123", "entity=nonsense", "date=yesterday", "outcome=2", "_count=0"):
        response = await stack.get(f"/fhir/AuditEvent?{bad}", headers=admin)
        assert response.status == 400, bad
        assert (await response.json())["resourceType"] == "OperationOutcome"


async def test_one_requests_records_across_services_are_found_by_its_request_id(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/fhir/DocumentReference",
        json=document_reference(),
        headers={**FHIR, **tokens.headers("RJ1"), "X-Request-Id": "submission-42"},
    )
    assert response.status == 202
    # The audit key is the id the server chose (X-Correlation-Id), never the client's X-Request-Id.
    request_id = response.headers["X-Correlation-Id"]
    assert request_id != "submission-42"
    admin = tokens.headers("RJ1", "dcc-admin")

    async def trail() -> list[str] | None:
        codes = event_codes(await search(stack, f"request-id={request_id}", admin))
        return codes if {"document.received", "document.stored"} <= set(codes) else None

    codes = await eventually(trail)
    assert codes[:2] == ["document.received", "document.stored"]
    records = resources(await search(stack, f"request-id={request_id}", admin))
    assert {r["source"]["observer"]["display"] for r in records} >= {
        "urn:lhcie:service:intake",
        "urn:lhcie:service:storage",
    }
    assert all(
        {
            "what": {"identifier": {"value": request_id}},
            "type": {
                "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                "code": "XrequestId",
                "display": "X-Request-Id",
            },
        }
        in r["entity"]
        for r in records
    )
    assert event_codes(await search(stack, "request-id=submission-42", admin)) == []


async def test_searches_are_themselves_audited(stack: TestClient, tokens: Any) -> None:
    auditor = tokens.headers("RRV", "auditor")
    await search(stack, f"patient.identifier={TEST_PATIENT}", auditor)
    searches = resources(await search(stack, "subtype=audit.searched", tokens.headers("RRV", "dcc-admin")))
    first = searches[0]
    assert first["action"] == "E" and first["subtype"][0]["code"] == "search"
    user = next(a for a in first["agent"] if a["requestor"])
    assert user["who"]["identifier"]["value"] == "auditor@RRV"
    query = next(e for e in first["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == f"patient.identifier={TEST_PATIENT}"
    assert any(e["what"].get("identifier", {}).get("value") == TEST_PATIENT for e in first["entity"])


async def test_export_a_date_range_as_ndjson_that_still_verifies(
    stack: TestClient, tokens: Any, tmp_path: Path
) -> None:
    await scenario(stack, tokens)
    admin = tokens.headers("LHCIE", "exchange-operator")
    response = await stack.get("/fhir/AuditEvent/$export?start=2000-01-01&end=2999-12-31", headers=admin)
    assert response.status == 200 and response.content_type == "application/x-ndjson"
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1))
    assert all(r["resource"]["resourceType"] == "AuditEvent" for r in lines)
    assert lines[0]["prev_hash"] == GENESIS
    assert all(hash_of(r) == r["hash"] for r in lines)
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))

    empty = await stack.get("/fhir/AuditEvent/$export?start=2000-01-01&end=2000-01-02", headers=admin)
    assert await empty.text() == ""
    assert (await stack.get("/fhir/AuditEvent/$export?start=2000-01-01", headers=admin)).status == 400
    assert (
        await stack.get(
            "/fhir/AuditEvent/$export?start=2000-01-01&end=2999-01-01", headers=tokens.headers("RJ1", "clinician")
        )
    ).status == 403


async def test_verify_over_http_whole_and_since_a_checkpoint(stack: TestClient, tokens: Any) -> None:
    await scenario(stack, tokens)
    admin = tokens.headers("RJ1", "dcc-admin")
    response = await stack.get("/fhir/AuditEvent/$verify", headers=admin)
    params = {p["name"]: p for p in (await response.json())["parameter"]}
    assert params["intact"] == {"name": "intact", "valueBoolean": True}
    assert (await stack.get("/fhir/AuditEvent/$verify?since=1", headers=admin)).status == 200
    missing = await (await stack.get("/fhir/AuditEvent/$verify?since=99999", headers=admin)).json()
    assert {"name": "problem", "valueString": "there is no checkpoint at record 99999"} in missing["parameter"]
    assert (await stack.get("/fhir/AuditEvent/$verify?since=x", headers=admin)).status == 400
    assert (await stack.get("/fhir/AuditEvent/$verify", headers=tokens.headers("RJ1", "clinician"))).status == 403


async def test_records_cannot_be_changed_or_removed(stack: TestClient, tokens: Any) -> None:
    admin = {**FHIR, **tokens.headers("RJ1", "dcc-admin")}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await stack.request(method, "/fhir/AuditEvent", headers=admin, data=b"{}")
        assert response.status == 405, method
        assert (await response.json())["resourceType"] == "OperationOutcome"
    # Nor is there such a path in the audit module: its records are held through an append-only view.
    audit_package = Path(__file__).resolve().parents[2] / "services" / "audit"
    modules = sorted(audit_package.glob("*.py"))
    assert len(modules) > 3, audit_package  # the scan below must have read the real package
    source = "".join(p.read_text() for p in modules)
    assert not re.search(r"_(records|checkpoints)\.(update|replace|delete)\(", source)
    chain = stack.server.app[AUDIT].chain
    assert not any(hasattr(chain._records, verb) for verb in ("update", "replace", "delete"))


async def test_a_redelivered_event_is_recorded_once(stack: TestClient, tokens: Any) -> None:
    audit = stack.server.app[AUDIT]
    grant = CarerGrantState(
        grant_id="grant-9", patient_nhs_number=TEST_PATIENT, carer_subject="carer-x", carer_name="X", version=1
    )
    event = Event.new(RoutingKey.POLICY_CONSENT_CARER_GRANTED, grant, source="urn:lhcie:service:agreements")
    before = await audit.chain.search({"event_id": event.id}, limit=10, skip=0)
    for _ in range(3):
        await audit.record(event)
    after = await audit.chain.search({"event_id": event.id}, limit=10, skip=0)
    assert (len(before), len(after)) == (0, 1)


async def test_the_access_report_lists_reads_of_the_patients_records_in_plain_words(
    stack: TestClient, tokens: Any
) -> None:
    audit = stack.server.app[AUDIT]
    reader = Actor(org="RRV", role="clinician", subject="dr.okafor@RRV")
    for resource, action in (
        ("DocumentReference/doc-9", "read"),
        ("Communication/alert-9", "read"),
        ("EpisodeOfCare/ep-9", "read"),
        ("DocumentReference", "search"),
    ):
        read = RecordRead(
            actor=reader,
            resource=resource,
            action=action,
            patient_nhs_number=TEST_PATIENT,
            query="patient.identifier=9000000009" if action == "search" else None,
            rule="isa",
        )
        await audit.record(Event.new(RoutingKey.RECORD_READ, read, source="urn:lhcie:service:intake"))
    # A read about someone else is not in this patient's report.
    other = RecordRead(actor=reader, resource="DocumentReference/doc-x", action="read", patient_nhs_number="9434765919")
    await audit.record(Event.new(RoutingKey.RECORD_READ, other, source="urn:lhcie:service:intake"))
    patient = tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)
    report = await (await stack.get("/fhir/AuditEvent/$access-report", headers=patient)).json()
    reads = [e["resource"] for e in report["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    assert [(r["subtype"][1]["code"], r["action"]) for r in reads] == [("record.read", "R")] * 3 + [
        ("record.read", "E")
    ]
    html = await (await stack.get("/fhir/AuditEvent/$access-report?_format=html", headers=patient)).text()
    for words in (
        "opened document doc-9",
        "looked at an alert about you",
        "looked at your care pathway",
        "searched your records",
    ):
        assert words in html, words
    assert "doc-x" not in html and html.count('class="seen">seen<') == 4


async def test_the_access_report_names_the_document_the_time_zone_and_lists_searches(
    stack: TestClient, tokens: Any
) -> None:
    rj1_doc = await post_document(stack, tokens, "RJ1")
    # RRV searches the patient's documents through ITI-67, then opens the one RJ1 holds.
    found = await stack.get(
        f"/fhir/DocumentReference?patient.identifier={NHS_SYSTEM}|{TEST_PATIENT}",
        headers=tokens.headers("RRV", "clinician"),
    )
    assert found.status == 200
    assert (await stack.get(f"/fhir/Binary/{rj1_doc}", headers=tokens.headers("RRV", "clinician"))).status == 200
    patient = tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)

    async def both_listed() -> list[dict[str, Any]] | None:
        report = await (await stack.get("/fhir/AuditEvent/$access-report", headers=patient)).json()
        events = [e["resource"] for e in report["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
        codes = {e["subtype"][1]["code"] for e in events}
        return events if {"document.searched", "document.retrieved"} <= codes else None

    events = await eventually(both_listed)
    opened = next(e for e in events if e["subtype"][1]["code"] == "document.retrieved")
    shown = next(e["what"] for e in opened["entity"] if e["what"].get("reference") == f"DocumentReference/{rj1_doc}")
    assert shown["display"] == "Pathology study"  # the patient's copy says what kind of document it was
    html = await (await stack.get("/fhir/AuditEvent/$access-report?_format=html", headers=patient)).text()
    assert f"opened your pathology study (document {rj1_doc})" in html
    assert "searched your documents" in html
    assert "Times are UK time (GMT in winter, BST in summer)" in html
    assert re.search(r"<tr><td>\d\d \w{3} \d{4} \d\d:\d\d (GMT|BST)</td>", html)


async def test_comma_separated_values_are_any_of_them_and_sequence_reads_from_a_record_on(
    stack: TestClient, tokens: Any
) -> None:
    """FHIR's OR (``entity=A,B``, ``subtype=x,y``) and the ``sequence`` parameter a client tailing the log
    pages with (``sequence=gt<the last id it read>``)."""
    rj1_doc, rrv_doc = await scenario(stack, tokens)
    operator = tokens.headers("LHCIE", "exchange-operator")
    both = f"entity=DocumentReference/{rj1_doc},DocumentReference/{rrv_doc}"
    pipeline = "subtype=document.received,https://lhcie.london/fhir/CodeSystem/event-type|document.stored"

    async def trail(query: str, headers: dict[str, str]) -> set[tuple[str, str]]:
        found = set()
        for r in resources(await search(stack, f"{query}&_count=200", headers)):
            for e in r["entity"]:
                if e["what"].get("reference", "").startswith("DocumentReference/"):
                    found.add((e["what"]["reference"].removeprefix("DocumentReference/"), r["subtype"][1]["code"]))
        return found

    assert await trail(f"{both}&{pipeline}", operator) == {
        (doc, code) for doc in (rj1_doc, rrv_doc) for code in ("document.received", "document.stored")
    }
    # An organisation's DCC admin (whose scope is itself an OR, RJ1 being party to agreements) sees only
    # its own document's part of the same search.
    assert await trail(f"{both}&{pipeline}", tokens.headers("RJ1", "dcc-admin")) == {
        (rj1_doc, "document.received"),
        (rj1_doc, "document.stored"),
    }

    everything = resources(await search(stack, "_count=200", operator))
    ids = [int(r["id"]) for r in everything]
    assert ids == sorted(ids) and len(ids) >= 6
    low, high = ids[1], ids[4]
    ranged = await search(stack, f"sequence=gt{low}&sequence=le{high}", operator)
    assert [int(r["id"]) for r in resources(ranged)] == ids[2:5]
    assert [r["id"] for r in resources(await search(stack, f"sequence={high}", operator))] == [str(high)]
    assert [int(r["id"]) for r in resources(await search(stack, f"sequence=ge{low}&sequence=lt{high}", operator))] == (
        ids[1:4]
    )
    without = await search(stack, f"sequence=ge{low}&sequence=le{high}&sequence=ne{ids[2]}", operator)
    assert [int(r["id"]) for r in resources(without)] == [ids[1], *ids[3:5]]
    # The next page searches the same range: both sequence values travel in its link.
    first = await search(stack, f"sequence=gt{low}&sequence=le{high}&_count=1", operator)
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = await search(stack, next_url.split("?", 1)[1], operator)
    assert [int(r["id"]) for r in resources(second)] == [ids[3]]

    too_many = ",".join(f"DocumentReference/d{i}" for i in range(101))
    for bad in (
        "sequence=after5",
        "sequence=gt-1",
        "sequence=gt1,2",
        f"entity=DocumentReference/{rj1_doc},nonsense",
        f"entity={too_many}",
        f"patient.identifier={TEST_PATIENT},{TEST_PATIENT}",
    ):
        response = await stack.get(f"/fhir/AuditEvent?{bad}", headers=operator)
        assert response.status == 400, bad
        assert (await response.json())["issue"][0]["expression"] == [bad.split("=", 1)[0]], bad


def test_a_backslash_keeps_a_comma_inside_one_value() -> None:
    assert or_values("a,b\\,c,d\\\\") == ["a", "b,c", "d\\"]
    assert or_values("single") == ["single"]
    assert or_values("a\\|b") == ["a\\|b"]  # other escapes are left for the parameter's own parsing
