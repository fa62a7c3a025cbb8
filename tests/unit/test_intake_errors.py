"""Bad input gets a whole, correct OperationOutcome and leaves nothing behind."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from shared.config import Settings
from tests.helpers import document_reference, eventually

ERROR_SYSTEM = "https://lhcie.london/fhir/CodeSystem/error-code"
FHIR = {"Content-Type": "application/fhir+json"}


def outcome(code: str, issue_type: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": issue_type,
        "details": {"coding": [{"system": ERROR_SYSTEM, "code": code}]},
        "diagnostics": diagnostics,
    }
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


async def post(stack: TestClient, body: bytes | str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await stack.post("/fhir/DocumentReference", data=body, headers=headers)
    assert response.content_type == "application/fhir+json"
    return response.status, await response.json()


def without(resource: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(resource))
    target = copy
    for key in path[:-1]:
        target = target[key] if not key.isdigit() else target[int(key)]
    del target[path[-1]]
    return copy


async def test_malformed_json(stack: TestClient, tokens: Any) -> None:
    assert await post(stack, "{not json", {**FHIR, **tokens.headers()}) == (
        400,
        outcome("MALFORMED_JSON", "structure", "The request body is not valid JSON."),
    )


async def test_not_a_document_reference(stack: TestClient, tokens: Any) -> None:
    body = json.dumps({"resourceType": "Patient"})
    assert await post(stack, body, {**FHIR, **tokens.headers()}) == (
        422,
        outcome("INVALID_RESOURCE", "invalid", "Expected a DocumentReference resource.", "resourceType"),
    )


async def test_invalid_nhs_number(stack: TestClient, tokens: Any) -> None:
    body = json.dumps(document_reference(patient="9000000008"))
    assert await post(stack, body, {**FHIR, **tokens.headers()}) == (
        422,
        outcome(
            "INVALID_NHS_NUMBER",
            "value",
            "subject.identifier.value is not a valid NHS number.",
            "DocumentReference.subject.identifier.value",
        ),
    )


async def test_missing_content(stack: TestClient, tokens: Any) -> None:
    body = json.dumps(without(document_reference(), "content", "0", "attachment", "data"))
    assert await post(stack, body, {**FHIR, **tokens.headers()}) == (
        422,
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "content[0].attachment.data must hold the document (base64).",
            "DocumentReference.content[0].attachment.data",
        ),
    )


async def test_content_that_is_not_base64(stack: TestClient, tokens: Any) -> None:
    resource = document_reference()
    resource["content"][0]["attachment"]["data"] = "!!not base64!!"
    assert await post(stack, json.dumps(resource), {**FHIR, **tokens.headers()}) == (
        422,
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "content[0].attachment.data is not valid base64.",
            "DocumentReference.content[0].attachment.data",
        ),
    )


async def test_wrong_organisation(stack: TestClient, tokens: Any) -> None:
    body = json.dumps(document_reference(custodian="RRV"))
    assert await post(stack, body, {**FHIR, **tokens.headers("RJ1")}) == (
        422,
        outcome(
            "WRONG_ORGANISATION",
            "business-rule",
            "custodian must be the caller's own organisation.",
            "DocumentReference.custodian.identifier.value",
        ),
    )


async def test_every_problem_is_reported_at_once(stack: TestClient, tokens: Any) -> None:
    resource = document_reference(patient="123", custodian="RRV")
    resource["status"] = "draft-ish"
    status, body = await post(stack, json.dumps(resource), {**FHIR, **tokens.headers("RJ1")})
    assert status == 422
    assert [i["expression"][0] for i in body["issue"]] == [
        "DocumentReference.status",
        "DocumentReference.subject.identifier.value",
        "DocumentReference.custodian.identifier.value",
    ]


async def test_unknown_status_is_refused(stack: TestClient, tokens: Any) -> None:
    resource = document_reference()
    resource["status"] = "archived"
    assert await post(stack, json.dumps(resource), {**FHIR, **tokens.headers()}) == (
        422,
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "status must be current, superseded or entered-in-error.",
            "DocumentReference.status",
        ),
    )


async def test_structure_errors_name_the_field(stack: TestClient, tokens: Any) -> None:
    resource = document_reference()
    resource["date"] = "yesterday"
    status, body = await post(stack, json.dumps(resource), {**FHIR, **tokens.headers()})
    assert status == 422
    assert body["issue"][0]["expression"] == ["DocumentReference.date"]
    assert "yesterday" not in json.dumps(body)  # the value is never echoed back


async def test_wrong_media_type(stack: TestClient, tokens: Any) -> None:
    status, body = await post(
        stack, json.dumps(document_reference()), {"Content-Type": "text/plain", **tokens.headers()}
    )
    assert (status, body) == (
        415,
        outcome(
            "UNSUPPORTED_MEDIA_TYPE",
            "not-supported",
            "Send application/fhir+json or application/fhir+xml (or a multipart document); got text/plain.",
        ),
    )


async def test_no_token(stack: TestClient) -> None:
    response = await stack.post("/fhir/DocumentReference", data=json.dumps(document_reference()), headers=FHIR)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="lhcie"'
    assert await response.json() == outcome("UNAUTHORIZED", "login", "no bearer token")


async def test_expired_token(stack: TestClient, tokens: Any) -> None:
    expired = tokens("RJ1", "system", ttl=-60)
    response = await stack.post(
        "/fhir/DocumentReference",
        data=json.dumps(document_reference()),
        headers={**FHIR, "Authorization": f"Bearer {expired}"},
    )
    assert response.status == 401
    assert await response.json() == outcome("UNAUTHORIZED", "login", "the token has expired")


async def test_token_from_another_issuer(stack: TestClient, tmp_path: Any) -> None:
    from tests.conftest import Tokens, make_settings

    stranger = Tokens(make_settings(tmp_path / "elsewhere"))
    response = await stack.get("/fhir/Organization", headers=stranger.headers())
    assert response.status == 401
    # Its key id is not in the set: refused before any signature check, never tried against another key.
    assert (await response.json())["issue"][0]["diagnostics"] == "the token was signed with an unknown key"


async def test_role_without_the_scope_is_forbidden(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/fhir/DocumentReference",
        data=json.dumps(document_reference()),
        headers={**FHIR, **tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")},
    )
    assert response.status == 403
    assert await response.json() == outcome(
        "FORBIDDEN", "forbidden", "the token's scopes do not allow 'c' on DocumentReference"
    )


async def test_unknown_document(stack: TestClient, tokens: Any) -> None:
    for path in ("/fhir/DocumentReference/nope", "/fhir/Binary/nope"):
        response = await stack.get(path, headers=tokens.headers())
        assert response.status == 404
        assert await response.json() == outcome(
            "NOT_FOUND", "not-found", "The resource does not exist or is not visible to the caller."
        )


async def test_unknown_route_and_method(stack: TestClient, tokens: Any) -> None:
    response = await stack.get("/fhir/Nothing", headers=tokens.headers())
    assert response.status == 404
    response = await stack.delete("/fhir/DocumentReference", headers=tokens.headers())
    assert response.status == 405
    assert (await response.json())["issue"][0]["code"] == "not-supported"


async def test_oversized_body_is_413(stack: TestClient, tokens: Any, settings: Settings) -> None:
    huge = io.BytesIO(b"x" * (settings.max_inline_bytes * 2 + 1))
    response = await stack.post("/fhir/DocumentReference", data=huge, headers={**FHIR, **tokens.headers()})
    assert response.status == 413
    assert (await response.json())["issue"][0]["code"] == "too-large"


@pytest.mark.parametrize("bad", ["[]", "null", "42", '"text"'])
async def test_json_that_is_not_an_object(stack: TestClient, tokens: Any, bad: str) -> None:
    status, body = await post(stack, bad, {**FHIR, **tokens.headers()})
    assert status == 400
    assert body["issue"][0]["details"]["coding"][0]["code"] == "MALFORMED_REQUEST"


def object_files(settings: Settings) -> set[str]:
    root = settings.data_dir / "objects"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def not_a_pdf_upload() -> aiohttp.MultipartWriter:
    """Metadata that passes, content that claims to be a PDF and is not: refused only after it streamed."""
    resource = document_reference()
    del resource["content"][0]["attachment"]["data"]
    writer = aiohttp.MultipartWriter("form-data")
    writer.append(json.dumps(resource), {"Content-Type": "application/fhir+json"}).set_content_disposition(
        "form-data", name="resource"
    )
    writer.append(
        io.BytesIO(b"MZ\x90\x00 not a pdf " * 1000), {"Content-Type": "application/pdf"}
    ).set_content_disposition("form-data", name="content", filename="report.pdf")
    return writer


@pytest.mark.parametrize("case", ["invalid-nhs-number", "content-not-its-declared-type"])
async def test_rejected_submission_leaves_nothing_behind(
    stack: TestClient, tokens: Any, settings: Settings, case: str
) -> None:
    # A document that is accepted first, so that the object store exists and holds a known set of files.
    accepted = await stack.post(
        "/fhir/DocumentReference", data=json.dumps(document_reference()), headers={**FHIR, **tokens.headers()}
    )
    assert accepted.status == 202
    doc_id = (await accepted.json())["id"]

    async def filed() -> bool:
        r = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())
        return r.status == 200

    await eventually(filed)
    before = object_files(settings)
    assert before, "the accepted document must have left files to compare against"

    if case == "invalid-nhs-number":
        response = await stack.post(
            "/fhir/DocumentReference",
            data=json.dumps(document_reference(patient="9000000008")),
            headers={**FHIR, **tokens.headers()},
        )
    else:
        response = await stack.post("/fhir/DocumentReference", data=not_a_pdf_upload(), headers=tokens.headers())
    assert response.status in (415, 422), await response.text()
    assert (await response.json())["resourceType"] == "OperationOutcome"
    assert object_files(settings) == before


async def test_public_endpoints_need_no_token(stack: TestClient) -> None:
    assert (await stack.get("/healthz")).status == 200
    ready = await stack.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["services"] == ["agreements", "intake", "storage", "notification", "audit", "care"]
    metadata = await (await stack.get("/fhir/metadata")).json()
    assert metadata["resourceType"] == "CapabilityStatement"
    assert {r["type"] for r in metadata["rest"][0]["resource"]} >= {
        "DocumentReference",
        "Binary",
        "Communication",
        "AuditEvent",
        "Organization",
        "CareTeam",
        "Contract",
    }
    metrics = await stack.get("/metrics")
    assert "lhcie_http_requests_total" in await metrics.text()
