"""DocumentReference versions: meta.versionId, meta.lastUpdated and ETag on every read, vread, _history,
and If-Match on the withdrawal PATCH (412 when stale)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Tokens
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import document_reference, eventually

# Every FHIR answer these tests read is checked by an independent R4 validator (tests/fhir_validation.py).
pytestmark = pytest.mark.usefixtures("validated_answers")

FHIR = {"Content-Type": "application/fhir+json"}
PATCH = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


async def stored_document(stack: TestClient, tokens: Tokens) -> tuple[str, Any]:
    resource = document_reference()
    resource["meta"] = {
        "profile": ["https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.DocumentReference"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
    }
    created = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
    doc_id = (await created.json())["id"]

    async def read() -> Any:
        response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
        return response if response.status == 200 else None

    return doc_id, await eventually(read)


async def test_reads_carry_the_version_and_history_keeps_every_one(stack: TestClient, tokens: Tokens) -> None:
    doc_id, first = await stored_document(stack, tokens)
    body = await first.json()
    assert first.headers["ETag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1" and body["meta"]["lastUpdated"]
    # The source's profile and security labels are kept beside the server's version.
    assert body["meta"]["security"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
    ]
    assert body["meta"]["profile"][0].endswith("IHE.MHD.Minimal.DocumentReference")

    stale = await stack.patch(
        f"/fhir/DocumentReference/{doc_id}",
        json=PATCH,
        headers={**tokens.headers(), "Content-Type": "application/json-patch+json", "If-Match": 'W/"2"'},
    )
    assert stale.status == 412
    assert (await stale.json())["issue"][0]["code"] == "conflict"
    withdrawn = await stack.patch(
        f"/fhir/DocumentReference/{doc_id}",
        json=PATCH,
        headers={**tokens.headers(), "Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert withdrawn.status == 200
    assert withdrawn.headers["ETag"] == 'W/"2"'
    again = await stack.patch(
        f"/fhir/DocumentReference/{doc_id}",
        json=PATCH,
        headers={**tokens.headers(), "Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert again.status == 412

    current = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
    assert current.headers["ETag"] == 'W/"2"'
    assert ((await current.json())["status"], (await current.json())["meta"]["versionId"]) == ("entered-in-error", "2")
    one = await stack.get(f"/fhir/DocumentReference/{doc_id}/_history/1", headers=tokens.headers())
    assert one.status == 200 and one.headers["ETag"] == 'W/"1"'
    assert ((await one.json())["status"], (await one.json())["meta"]["versionId"]) == ("current", "1")
    for missing in ("3", "0", "x"):
        assert (
            await stack.get(f"/fhir/DocumentReference/{doc_id}/_history/{missing}", headers=tokens.headers())
        ).status == 404, missing

    history = await (await stack.get(f"/fhir/DocumentReference/{doc_id}/_history", headers=tokens.headers())).json()
    assert history["type"] == "history" and history["total"] == 2
    assert [
        (e["resource"]["meta"]["versionId"], e["resource"]["status"], e["response"]["etag"]) for e in history["entry"]
    ] == [("2", "entered-in-error", 'W/"2"'), ("1", "current", 'W/"1"')]
    assert [e["request"]["method"] for e in history["entry"]] == ["PATCH", "POST"]


async def test_a_version_is_only_for_those_who_may_read_the_document(stack: TestClient, tokens: Tokens) -> None:
    doc_id, _ = await stored_document(stack, tokens)
    for path in ("/_history/1", "/_history"):
        response = await stack.get(f"/fhir/DocumentReference/{doc_id}{path}", headers=tokens.headers("Y02"))
        assert response.status in (403, 404), path
    missing = await stack.get("/fhir/DocumentReference/nope/_history/1", headers=tokens.headers())
    assert missing.status == 404
