"""IHE MHD intake: the three submission forms, idempotency, replacement, withdrawal and ITI-67 search."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from shared.config import Settings
from shared.fhir.identifiers import NHS_NUMBER
from tests.conftest import make_settings
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import PDF, TEST_PATIENT, document_reference, eventually, settled

# Every FHIR answer these tests read is checked by an independent R4 validator (tests/fhir_validation.py).
pytestmark = pytest.mark.usefixtures("validated_answers")

FHIR = {"Content-Type": "application/fhir+json"}
SEARCH = f"/fhir/DocumentReference?patient.identifier={NHS_NUMBER}|{TEST_PATIENT}"


async def stored(stack: TestClient, tokens: Any, doc_id: str) -> dict[str, Any] | None:
    response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
    return await response.json() if response.status == 200 else None


async def search(stack: TestClient, tokens: Any, query: str = "", org: str = "RJ1") -> dict[str, Any]:
    response = await stack.get(SEARCH + query, headers=tokens.headers(org))
    assert response.status == 200, await response.text()
    return await response.json()


def multipart(resource: dict[str, Any], content: bytes, subtype: str = "form-data") -> aiohttp.MultipartWriter:
    writer = aiohttp.MultipartWriter(subtype)
    meta = writer.append(json.dumps(resource), {"Content-Type": "application/fhir+json"})
    document = writer.append(io.BytesIO(content), {"Content-Type": "application/pdf"})
    if subtype == "form-data":
        meta.set_content_disposition("form-data", name="resource")
        document.set_content_disposition("form-data", name="content", filename="report.pdf")
    return writer


def streamed_reference() -> dict[str, Any]:
    resource = document_reference()
    del resource["content"][0]["attachment"]["data"]
    return resource


async def test_multipart_upload_is_streamed_and_stored_byte_for_byte(stack: TestClient, tokens: Any) -> None:
    content = b"%PDF-1.7\n" + os.urandom(3 * 1024 * 1024 + 17)
    for subtype in ("form-data", "related"):
        response = await stack.post(
            "/fhir/DocumentReference", data=multipart(streamed_reference(), content, subtype), headers=tokens.headers()
        )
        assert response.status == 202, await response.text()
        doc_id = (await response.json())["id"]
        resource = await eventually(lambda doc_id=doc_id: stored(stack, tokens, doc_id))
        assert resource["content"][0]["attachment"]["size"] == len(content)
        binary = await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers())
        assert hashlib.sha256(await binary.read()).hexdigest() == hashlib.sha256(content).hexdigest()


async def test_multipart_with_declared_hash_that_does_not_match_is_refused(
    stack: TestClient, tokens: Any, settings: Any
) -> None:
    resource = streamed_reference()
    resource["content"][0]["attachment"]["hash"] = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    resource["content"][0]["attachment"]["size"] = 3
    response = await stack.post("/fhir/DocumentReference", data=multipart(resource, PDF), headers=tokens.headers())
    assert response.status == 422
    assert [i["expression"][0] for i in (await response.json())["issue"]] == [
        "DocumentReference.content[0].attachment.size",
        "DocumentReference.content[0].attachment.hash",
    ]
    staging = settings.data_dir / "objects" / "staging"
    assert not staging.exists() or not any(p.is_file() for p in staging.rglob("*"))


async def test_xml_document_reference_is_accepted(stack: TestClient, tokens: Any) -> None:
    from fhir.resources.R4B.documentreference import DocumentReference

    xml = DocumentReference.model_validate(document_reference()).model_dump_xml()
    response = await stack.post(
        "/fhir/DocumentReference", data=xml, headers={"Content-Type": "application/fhir+xml", **tokens.headers()}
    )
    assert response.status == 202, await response.text()
    doc_id = (await response.json())["id"]
    await eventually(lambda doc_id=doc_id: stored(stack, tokens, doc_id))


async def test_xml_with_a_dtd_is_refused(stack: TestClient, tokens: Any) -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><DocumentReference xmlns="http://hl7.org/fhir"/>'
    response = await stack.post(
        "/fhir/DocumentReference", data=bomb, headers={"Content-Type": "application/fhir+xml", **tokens.headers()}
    )
    assert response.status == 400
    assert (await response.json())["issue"][0]["diagnostics"] == (
        "The XML body is not accepted: XML with a DTD is not accepted."
    )


def provide_bundle(*documents: dict[str, Any], folder: bool = False) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:submission-set",
            "resource": {
                "resourceType": "List",
                "status": "current",
                "mode": "working",
                "code": {
                    "coding": [
                        {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}
                    ]
                },
            },
            "request": {"method": "POST", "url": "List"},
        }
    ]
    for i, doc in enumerate(documents):
        doc = json.loads(json.dumps(doc))
        data = doc["content"][0]["attachment"].pop("data")
        doc["content"][0]["attachment"]["url"] = f"urn:uuid:binary-{i}"
        entries.append(
            {"fullUrl": f"urn:uuid:doc-{i}", "resource": doc, "request": {"method": "POST", "url": "DocumentReference"}}
        )
        entries.append(
            {
                "fullUrl": f"urn:uuid:binary-{i}",
                "resource": {"resourceType": "Binary", "contentType": "application/pdf", "data": data},
                "request": {"method": "POST", "url": "Binary"},
            }
        )
    if folder:
        entries.append(
            {
                "fullUrl": "urn:uuid:folder",
                "request": {"method": "POST", "url": "List"},
                "resource": {
                    "resourceType": "List",
                    "status": "current",
                    "mode": "working",
                    "code": {"coding": [{"code": "folder"}]},
                },
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def test_provide_document_bundle_answers_when_every_document_is_stored(stack: TestClient, tokens: Any) -> None:
    bundle = provide_bundle(document_reference(), document_reference(type_code="57133-1"), folder=True)
    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created"] * len(bundle["entry"])
    locations = [e["response"].get("location", "") for e in body["entry"]]
    first, second = locations[1].removeprefix("DocumentReference/"), locations[3].removeprefix("DocumentReference/")
    assert locations[:5] == [
        f"List/{locations[0].removeprefix('List/')}",
        f"DocumentReference/{first}",
        f"Binary/{first}",
        f"DocumentReference/{second}",
        f"Binary/{second}",
    ]
    # The Folder is kept (no PartialFolderContentNotProcessed any more): its entry has its own List.
    assert "outcome" not in body["entry"][0]["response"]
    assert locations[5].startswith("List/") and locations[5] != locations[0]
    for location in locations:
        resolved = await stack.get(f"/fhir/{location}", headers=tokens.headers())
        assert resolved.status == 200, location  # stored before the answer, as MHD requires
    submission_set = await (await stack.get(f"/fhir/{locations[0]}", headers=tokens.headers())).json()
    assert [e["item"]["reference"] for e in submission_set["entry"]] == [locations[1], locations[3]]


async def test_bundle_with_one_invalid_document_stores_nothing(stack: TestClient, tokens: Any, settings: Any) -> None:
    bundle = provide_bundle(document_reference(), document_reference(patient="9000000008"), document_reference())
    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})
    assert response.status == 422
    body = await response.json()
    assert [i["expression"][0] for i in body["issue"]] == ["Bundle.entry[3].resource.subject.identifier.value"]
    assert (await search(stack, tokens))["entry"] == []
    objects = settings.data_dir / "objects"
    assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))


async def test_bundle_with_respond_async_gets_a_status_url(stack: TestClient, tokens: Any) -> None:
    appended = document_reference()
    appended["relatesTo"] = [{"code": "appends", "target": {"reference": "DocumentReference/elsewhere"}}]
    response = await stack.post(
        "/fhir",
        json=provide_bundle(appended, document_reference()),
        headers={**FHIR, **tokens.headers(), "Prefer": "respond-async"},
    )
    assert response.status == 202
    status_url = URL(response.headers["Content-Location"]).path_qs

    async def done() -> dict[str, Any] | None:
        polled = await stack.get(status_url, headers=tokens.headers())
        assert polled.status in (200, 202)
        return await polled.json() if polled.status == 200 else None

    body = await eventually(done)
    assert body["type"] == "transaction-response"
    # Entry for entry what the synchronous answer gives: the SubmissionSet, each document and its Binary,
    # and the relatesTo warning MHD requires on the SubmissionSet's entry.
    responses = [e["response"] for e in body["entry"]]
    assert [r["location"].split("/")[0] for r in responses] == [
        "List",
        "DocumentReference",
        "Binary",
        "DocumentReference",
        "Binary",
    ]
    assert [i["diagnostics"] for i in responses[0]["outcome"]["issue"]] == ["PartialAppendContentNotProcessed"]
    assert responses[0]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.relatesTo[0]"]
    other = await stack.get(status_url, headers=tokens.headers("RRV"))
    assert other.status == 404


async def test_malformed_bundles_get_every_problem(stack: TestClient, tokens: Any) -> None:
    bundle = provide_bundle(document_reference())
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["url"] = "urn:uuid:missing"
    bundle["entry"].append({"resource": {"resourceType": "Patient"}, "request": {"method": "PUT"}})
    bundle["entry"].append({"resource": {"resourceType": "Observation"}, "request": {"method": "POST"}})
    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})
    assert response.status == 422
    expressions = [i["expression"][0] for i in (await response.json())["issue"]]
    assert expressions == [
        "Bundle.entry[3].request",
        "Bundle.entry[4].resource.resourceType",
        "Bundle.entry[3].resource.identifier",
        "Bundle.entry[1].resource.content[0].attachment.url",
    ]
    response = await stack.post(
        "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": []}, headers={**FHIR, **tokens.headers()}
    )
    assert response.status == 422


async def test_resubmission_with_same_master_identifier_returns_the_original(stack: TestClient, tokens: Any) -> None:
    resource = document_reference()
    resource["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4.5"}
    first = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
    assert first.status == 202
    doc_id = (await first.json())["id"]
    again = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
    assert again.status == 200
    assert (await again.json())["id"] == doc_id
    changed = document_reference(content=PDF + b"% changed\n")
    changed["masterIdentifier"] = resource["masterIdentifier"]
    conflict = await stack.post("/fhir/DocumentReference", json=changed, headers={**FHIR, **tokens.headers()})
    assert conflict.status == 409
    assert (await conflict.json())["issue"][0]["expression"] == ["DocumentReference.masterIdentifier"]
    # The same bytes under the same identifier with other metadata is not a repeat either.
    retyped = {**resource, "type": document_reference(type_code="57133-1")["type"]}
    conflict = await stack.post("/fhir/DocumentReference", json=retyped, headers={**FHIR, **tokens.headers()})
    assert conflict.status == 409
    assert "different metadata" in (await conflict.json())["issue"][0]["diagnostics"]
    # Filed with the first submission's type once storage has it (a 202 promises filing, not that it is done).
    original = await eventually(lambda: stored(stack, tokens, doc_id))
    assert original["type"]["coding"][0]["code"] == "11526-1"


async def test_a_fhir_document_bundle_gets_mhds_error_code(stack: TestClient, tokens: Any) -> None:
    document = {"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Composition"}}]}
    response = await stack.post("/fhir", json=document, headers={**FHIR, **tokens.headers()})
    assert response.status == 422
    [issue] = (await response.json())["issue"]
    assert issue["diagnostics"].startswith("FHIRDocumentNotSupported")
    assert (issue["code"], issue["expression"]) == ("not-supported", ["Bundle.type"])


async def test_transaction_response_in_xml(stack: TestClient, tokens: Any) -> None:
    from fhir.resources.R4B.bundle import Bundle

    response = await stack.post(
        "/fhir",
        json=provide_bundle(document_reference()),
        headers={**FHIR, **tokens.headers(), "Accept": "application/fhir+xml"},
    )
    assert (response.status, response.content_type) == (200, "application/fhir+xml")
    answer = Bundle.model_validate_xml(await response.read())
    assert answer.type == "transaction-response"
    assert [e.response.location.split("/")[0] for e in answer.entry] == ["List", "DocumentReference", "Binary"]


async def test_concurrent_duplicates_create_one_document_and_one_alert(
    stack: TestClient, tokens: Any, settings: Settings
) -> None:
    resource = document_reference()
    resource["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4.6"}
    responses = await asyncio.gather(
        *(stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()}) for _ in range(6))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 5 + [202]
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")

    async def alerts() -> list[Any]:
        response = await stack.get("/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator)
        return (await response.json())["entry"]

    assert len(await eventually(alerts)) == 1
    await settled(settings.data_dir)  # every event handled: a second alert would be there now
    assert len(await alerts()) == 1


async def test_idempotency_key_protects_clients_without_master_identifier(stack: TestClient, tokens: Any) -> None:
    headers = {**FHIR, **tokens.headers(), "Idempotency-Key": "batch-42-item-1"}
    first = await stack.post("/fhir/DocumentReference", json=document_reference(), headers=headers)
    again = await stack.post("/fhir/DocumentReference", json=document_reference(), headers=headers)
    assert (first.status, again.status) == (202, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    other = await stack.post("/fhir/DocumentReference", json=document_reference(content=PDF + b"%x\n"), headers=headers)
    assert other.status == 409


async def test_replacement_supersedes_the_old_document(stack: TestClient, tokens: Any) -> None:
    first = await stack.post("/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers()})
    old_id = (await first.json())["id"]
    await eventually(lambda: stored(stack, tokens, old_id))
    replacement = document_reference(content=PDF + b"% corrected\n")
    replacement["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{old_id}"}}]
    second = await stack.post("/fhir/DocumentReference", json=replacement, headers={**FHIR, **tokens.headers()})
    assert second.status == 202
    new_id = (await second.json())["id"]

    async def superseded() -> bool:
        doc = await stored(stack, tokens, old_id)
        return bool(doc and doc["status"] == "superseded")

    await eventually(superseded)
    assert [e["resource"]["id"] for e in (await search(stack, tokens))["entry"]] == [new_id]
    assert [e["resource"]["id"] for e in (await search(stack, tokens, "&status=superseded"))["entry"]] == [old_id]
    again = await stack.post("/fhir/DocumentReference", json=replacement, headers={**FHIR, **tokens.headers()})
    assert again.status == 409  # a superseded document cannot be replaced twice

    admin = tokens.headers("RJ1", "dcc-admin")

    async def audited() -> bool:
        response = await stack.get(f"/fhir/AuditEvent?entity=DocumentReference/{old_id}", headers=admin)
        codes = [e["resource"]["subtype"][1]["code"] for e in (await response.json())["entry"]]
        return "document.superseded" in codes

    await eventually(audited)


async def test_custodian_withdraws_a_document(stack: TestClient, tokens: Any) -> None:
    first = await stack.post("/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers()})
    doc_id = (await first.json())["id"]
    await eventually(lambda doc_id=doc_id: stored(stack, tokens, doc_id))
    patch = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    denied = await stack.patch(
        f"/fhir/DocumentReference/{doc_id}",
        json=patch,
        headers={"Content-Type": "application/json-patch+json", **tokens.headers("RRV")},
    )
    assert denied.status in (403, 404)
    response = await stack.patch(
        f"/fhir/DocumentReference/{doc_id}",
        json=patch,
        headers={"Content-Type": "application/json-patch+json", **tokens.headers()},
    )
    assert response.status == 200
    assert (await response.json())["status"] == "entered-in-error"
    assert (await search(stack, tokens))["entry"] == []
    other = [{"op": "replace", "path": "/subject", "value": {}}]
    refused = await stack.patch(
        f"/fhir/DocumentReference/{doc_id}",
        json=other,
        headers={"Content-Type": "application/json-patch+json", **tokens.headers()},
    )
    assert refused.status == 422


async def test_search_parameters_and_paging(stack: TestClient, tokens: Any) -> None:
    ids = []
    for i, code in enumerate(("11526-1", "57133-1", "11526-1")):
        resource = document_reference(type_code=code)
        resource["date"] = f"2026-0{i + 1}-15T10:00:00Z"
        response = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
        ids.append((await response.json())["id"])
    for doc_id in ids:
        await eventually(lambda doc_id=doc_id: stored(stack, tokens, doc_id))

    def found(bundle: dict[str, Any]) -> set[str]:
        return {e["resource"]["id"] for e in bundle["entry"]}

    assert found(await search(stack, tokens, "&type=http://loinc.org|11526-1")) == {ids[0], ids[2]}
    assert found(await search(stack, tokens, "&type=57133-1")) == {ids[1]}
    assert found(await search(stack, tokens, "&date=ge2026-02-01")) == {ids[1], ids[2]}
    assert found(await search(stack, tokens, "&date=2026-01")) == {ids[0]}
    assert found(await search(stack, tokens, "&custodian=RJ1&related=CareTeam/rj1-lung")) == set(ids)
    assert found(await search(stack, tokens, "&author=RRV")) == set()

    page = await search(stack, tokens, "&_count=2")
    assert len(page["entry"]) == 2
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = await stack.get(URL(next_url).path_qs, headers=tokens.headers())
    rest = await second.json()
    assert found(page) | found(rest) == set(ids)
    assert not any(link["relation"] == "next" for link in rest["link"])

    form = await stack.post(
        "/fhir/DocumentReference/_search",
        data={"patient.identifier": f"{NHS_NUMBER}|{TEST_PATIENT}", "type": "57133-1"},
        headers=tokens.headers(),
    )
    assert found(await form.json()) == {ids[1]}
    bad = await stack.get(SEARCH + "&colour=blue", headers={**tokens.headers(), "Prefer": "handling=strict"})
    assert bad.status == 400
    assert (await bad.json())["issue"][0]["diagnostics"] == "Unsupported search parameter(s): colour."


async def test_business_rules_on_type_media_dates_and_organisation(stack: TestClient, tokens: Any) -> None:
    unknown_type = document_reference(type_code="00000-0")
    wrong_media = document_reference(content=b"plain words", content_type="image/png")
    future = document_reference()
    future["date"] = "2999-01-01T00:00:00Z"
    cases = [
        (unknown_type, "RJ1", "DocumentReference.type"),
        (wrong_media, "RJ1", "DocumentReference.content[0].attachment.contentType"),
        (future, "RJ1", "DocumentReference.date"),
        (document_reference(custodian="XYZ99"), "XYZ99", "DocumentReference.custodian"),
    ]
    for resource, org, expression in cases:
        response = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers(org)})
        assert response.status == 422, (expression, await response.text())
        assert (await response.json())["issue"][0]["expression"] == [expression]


async def test_unsupported_relation_gets_the_mhd_warning_code_in_validation() -> None:
    from services.intake import catalogue
    from services.intake.validation import check_metadata
    from shared.auth import Caller

    resource = document_reference()
    resource["relatesTo"] = [{"code": "transforms", "target": {"reference": "DocumentReference/x"}}]
    meta = check_metadata(resource, Caller("RJ1", "system", "s", frozenset()), catalogue.load(), inline=True)
    assert [w.diagnostics for w in meta.warnings] == ["PartialTransformContentNotProcessed"]


async def test_rate_limit_per_organisation(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.test_utils import TestServer

    from lhcie.services import SPECS
    from shared.edge import build_app
    from tests.conftest import Tokens

    monkeypatch.setenv("LHCIE_RATE_LIMIT_PER_MINUTE", "1")  # intake's own, read when its app is built
    monkeypatch.setenv("LHCIE_RATE_LIMIT_BURST", "2")
    settings = make_settings(tmp_path / "d")
    tokens = Tokens(settings)
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as client:
        statuses = []
        for _ in range(3):
            response = await client.post(
                "/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers()}
            )
            statuses.append(response.status)
        assert statuses == [202, 202, 429]
        assert int(response.headers["Retry-After"]) >= 1
        other = await client.post(
            "/fhir/DocumentReference",
            json=document_reference(custodian="RRV"),
            headers={**FHIR, **tokens.headers("RRV")},
        )
        assert other.status == 202


async def test_every_search_is_audited_with_its_query(stack: TestClient, tokens: Any) -> None:
    await search(stack, tokens, "&type=57133-1", org="RRV")
    admin = tokens.headers("RRV", "dcc-admin")  # the searcher's own organisation sees its searches

    async def searches() -> list[dict[str, Any]]:
        response = await stack.get(
            f"/fhir/AuditEvent?patient.identifier={NHS_NUMBER}|{TEST_PATIENT}&subtype=document.searched", headers=admin
        )
        return [e["resource"] for e in (await response.json())["entry"]]

    [record] = await eventually(searches)
    assert record["action"] == "E"
    query = next(e for e in record["entity"] if e.get("role", {}).get("code") == "24")
    assert base64.b64decode(query["query"]).decode() == (
        f"patient.identifier={NHS_NUMBER.replace(':', '%3A').replace('/', '%2F')}%7C{TEST_PATIENT}&type=57133-1"
    )
    assert "system@RRV" in json.dumps(record["agent"])


async def test_retrieval_of_replaced_or_withdrawn_content_is_gone(stack: TestClient, tokens: Any) -> None:
    first = await stack.post("/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers()})
    old_id = (await first.json())["id"]
    await eventually(lambda: stored(stack, tokens, old_id))
    replacement = document_reference(content=PDF + b"% v2\n")
    replacement["relatesTo"] = [{"code": "replaces", "target": {"reference": f"DocumentReference/{old_id}"}}]
    new_id = (
        await (
            await stack.post("/fhir/DocumentReference", json=replacement, headers={**FHIR, **tokens.headers()})
        ).json()
    )["id"]

    async def gone() -> dict[str, Any] | None:
        response = await stack.get(f"/fhir/Binary/{old_id}", headers=tokens.headers("RRV"))
        return await response.json() if response.status == 410 else None

    outcome = await eventually(gone)
    assert outcome["issue"][0]["diagnostics"] == (
        f"The document is superseded by DocumentReference/{new_id}; its content is no longer served."
    )
    hidden = await stack.get(f"/fhir/Binary/{old_id}", headers=tokens.headers("RAL"))
    assert hidden.status == 404  # nothing about it to an organisation that may not see it

    patch = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]
    await stack.patch(
        f"/fhir/DocumentReference/{new_id}",
        json=patch,
        headers={"Content-Type": "application/json-patch+json", **tokens.headers()},
    )

    async def withdrawn() -> bool:
        return (await stack.get(f"/fhir/Binary/{new_id}", headers=tokens.headers())).status == 410

    await eventually(withdrawn)


async def test_retrieval_with_an_accept_it_cannot_serve_is_406(stack: TestClient, tokens: Any) -> None:
    first = await stack.post("/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers()})
    doc_id = (await first.json())["id"]
    await eventually(lambda doc_id=doc_id: stored(stack, tokens, doc_id))
    for accept, status in (
        ("image/png", 406),
        ("text/html, image/*", 406),
        ("application/pdf;q=0", 406),
        ("application/*", 200),
        ("*/*", 200),
        ("application/pdf", 200),
        ("application/fhir+json", 200),
    ):
        response = await stack.get(f"/fhir/Binary/{doc_id}", headers={**tokens.headers(), "Accept": accept})
        assert response.status == status, accept
