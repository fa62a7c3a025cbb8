"""Hostile input (issue 17): deeply nested JSON, absurd numbers and wrong field types are a 4xx
OperationOutcome naming what is wrong, never a 500, and a refused document leaves nothing behind."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.config import Settings
from shared.objects import one_chunk
from shared.objects.fs import FileObjectStore
from tests.helpers import TEST_PATIENT, document_reference, eventually
from tests.unit.test_intake_errors import FHIR, object_files, outcome

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
PATIENT = f"patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{TEST_PATIENT}"
TOO_DEEP = outcome("MALFORMED_JSON", "structure", "The request body is nested more than 100 levels deep.")


async def answer(response: Any) -> tuple[int, dict[str, Any]]:
    assert response.content_type == "application/fhir+json"
    return response.status, await response.json()


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT, b'{"resourceType":"DocumentReference","x":' + DEEP + b"}"])
async def test_deep_json_document_reference_is_400(stack: TestClient, tokens: Any, body: bytes) -> None:
    response = await stack.post("/fhir/DocumentReference", data=body, headers={**FHIR, **tokens.headers()})
    assert await answer(response) == (400, TOO_DEEP)


async def test_deep_json_patch_is_400(stack: TestClient, tokens: Any) -> None:
    response = await stack.patch(
        "/fhir/DocumentReference/any",
        data=DEEP,
        headers={"Content-Type": "application/json-patch+json", **tokens.headers()},
    )
    assert await answer(response) == (400, TOO_DEEP)


async def test_deep_json_subscription_is_400(stack: TestClient, tokens: Any) -> None:
    response = await stack.post("/fhir/Subscription", data=DEEP_OBJECT, headers={**FHIR, **tokens.headers()})
    assert await answer(response) == (400, TOO_DEEP)


async def test_deep_json_multipart_metadata_is_400(stack: TestClient, tokens: Any) -> None:
    import aiohttp

    writer = aiohttp.MultipartWriter("form-data")
    writer.append(DEEP_OBJECT, {"Content-Type": "application/fhir+json"}).set_content_disposition(
        "form-data", name="resource"
    )
    writer.append(b"%PDF-1.4", {"Content-Type": "application/pdf"}).set_content_disposition(
        "form-data", name="content", filename="a.pdf"
    )
    response = await stack.post("/fhir/DocumentReference", data=writer, headers=tokens.headers())
    assert await answer(response) == (
        400,
        outcome("MALFORMED_JSON", "structure", "The first part is nested more than 100 levels deep."),
    )


async def test_deep_json_document_content_is_refused_and_leaves_nothing(
    stack: TestClient, tokens: Any, settings: Settings
) -> None:
    before = object_files(settings)
    resource = document_reference(content=DEEP, content_type="application/fhir+json")
    response = await stack.post(
        "/fhir/DocumentReference", data=json.dumps(resource), headers={**FHIR, **tokens.headers()}
    )
    assert await answer(response) == (
        422,
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "Declared application/fhir+json but the content is not JSON.",
            "DocumentReference.content[0].attachment.contentType",
        ),
    )
    assert object_files(settings) == before


@pytest.mark.parametrize("offset", ["9223372036854775808", "1000001", "9" * 5000])
async def test_absurd_offset_is_400(stack: TestClient, tokens: Any, offset: str) -> None:
    response = await stack.get(f"/fhir/DocumentReference?{PATIENT}&_offset={offset}", headers=tokens.headers())
    status, body = await answer(response)
    assert (status, body["issue"][0]["expression"]) == (400, ["_offset"])


async def test_offset_past_the_limit_names_the_parameter(stack: TestClient, tokens: Any) -> None:
    response = await stack.get(
        f"/fhir/DocumentReference?{PATIENT}&_offset=9223372036854775808", headers=tokens.headers()
    )
    assert await answer(response) == (
        400,
        outcome("INVALID_PARAMETER", "value", "_offset must be 0..1000000.", "_offset"),
    )


async def test_range_of_4300_digits_is_refused_before_the_document_is_looked_up(stack: TestClient, tokens: Any) -> None:
    # The document does not exist: a 400 (not a 404) shows the header was refused before any lookup, so
    # before any retrieval was authorised or put on the record.
    for first, last in (("1" * 4300, ""), ("0", "9" * 4300), ("", "9" * 20)):
        response = await stack.get("/fhir/Binary/nope", headers={"Range": f"bytes={first}-{last}", **tokens.headers()})
        assert await answer(response) == (
            400,
            outcome(
                "MALFORMED_REQUEST",
                "structure",
                "The Range header asks for a position beyond any document (more than 19 digits).",
            ),
        )


async def _stored(stack: TestClient, tokens: Any, content: bytes, content_type: str = "application/pdf") -> str:
    response = await stack.post(
        "/fhir/DocumentReference",
        data=json.dumps(document_reference(content=content, content_type=content_type)),
        headers={**FHIR, **tokens.headers()},
    )
    assert response.status == 202, await response.text()
    doc_id = (await response.json())["id"]

    async def filed() -> bool:
        return (await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())).status == 200

    await eventually(filed)
    return doc_id


@pytest.mark.parametrize("size", [0, 1, 2, 3, 65_536 * 3 + 1, 300_001])
async def test_binary_as_fhir_json_is_streamed_exactly(stack: TestClient, tokens: Any, size: int) -> None:
    content = (b"%PDF-1.4\n" + bytes(range(256)) * (size // 256 + 1))[: max(size, 9)]
    doc_id = await _stored(stack, tokens, content)
    response = await stack.get(
        f"/fhir/Binary/{doc_id}", headers={"Accept": "application/fhir+json", **tokens.headers()}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/fhir+json"
    raw = await response.read()
    assert int(response.headers["Content-Length"]) == len(raw)
    assert json.loads(raw) == {
        "resourceType": "Binary",
        "id": doc_id,
        "contentType": "application/pdf",
        "data": base64.b64encode(content).decode(),
    }


async def test_abandoned_staging_objects_expire_like_the_lifecycle_rule(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = FileObjectStore(tmp_path / "objects", staging_expiry_seconds=7 * 86400, clock=lambda: now[0])
    await store.start()
    await store.put("staging/old", one_chunk(b"abandoned"), content_type="application/pdf")
    await store.put("staging/new", one_chunk(b"in flight"), content_type="application/pdf")
    await store.put("documents/kept", one_chunk(b"filed"), content_type="application/pdf")
    part = tmp_path / "objects" / "staging" / ".half.part"
    part.write_bytes(b"half an upload")
    import os

    eight_days_ago = now[0] - 8 * 86400
    for path in (tmp_path / "objects" / "staging" / "old", tmp_path / "objects" / "documents" / "kept", part):
        os.utime(path, (eight_days_ago, eight_days_ago))
    os.utime(tmp_path / "objects" / "staging" / "new", (now[0] - 86400, now[0] - 86400))
    assert await store.expire_abandoned() == 2
    assert [k async for k in store.list("")] == ["documents/kept", "staging/new"]
    assert not part.exists()
    assert await store.head("staging/old") is None
    now[0] += 7 * 86400  # a week later the one in flight is abandoned too
    assert await store.expire_abandoned() == 1
    assert [k async for k in store.list("")] == ["documents/kept"]


async def test_bytes_in_hand_are_stored_in_one_piece_as_a_stream_is(tmp_path: Path) -> None:
    """put_bytes (intake's staging of an inline document, one hop to a thread) leaves what put leaves."""
    store = FileObjectStore(tmp_path / "objects")
    await store.start()
    for data in (b"%PDF-1.4 in hand", b""):
        streamed = await store.put("staging/streamed", one_chunk(data), content_type="application/pdf")
        whole = await store.put_bytes("staging/whole", data, content_type="application/pdf")
        assert (whole.size, whole.sha256, whole.content_type) == (streamed.size, streamed.sha256, "application/pdf")
        assert await store.head("staging/whole") == whole
        assert b"".join([c async for c in store.get("staging/whole")]) == data
    assert sorted(p.name for p in (tmp_path / "objects" / "staging").iterdir()) == sorted(
        ["streamed", "streamed.meta.json", "whole", "whole.meta.json"]
    )  # no half-written part left behind
    with pytest.raises(ValueError):
        await store.put_bytes("staging/../escape", b"x", content_type="application/pdf")


async def test_a_conflicting_repeat_leaves_nothing_behind(stack: TestClient, tokens: Any, settings: Settings) -> None:
    first = document_reference()
    first["masterIdentifier"] = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.826.0.1.99"}
    await _stored_resource(stack, tokens, first)
    before = object_files(settings)
    other = document_reference(content=b"%PDF-1.4 another document")
    other["masterIdentifier"] = first["masterIdentifier"]
    response = await stack.post("/fhir/DocumentReference", data=json.dumps(other), headers={**FHIR, **tokens.headers()})
    assert await answer(response) == (
        409,
        outcome(
            "CONFLICT",
            "conflict",
            "This identifier was already used for a different document.",
            "DocumentReference.masterIdentifier",
        ),
    )
    assert object_files(settings) == before


async def _stored_resource(stack: TestClient, tokens: Any, resource: dict[str, Any]) -> str:
    response = await stack.post(
        "/fhir/DocumentReference", data=json.dumps(resource), headers={**FHIR, **tokens.headers()}
    )
    assert response.status == 202, await response.text()
    doc_id = (await response.json())["id"]

    async def filed() -> bool:
        return (await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())).status == 200

    await eventually(filed)
    return doc_id
