"""Both FHIR formats: XML for reads, searches, transaction-responses and OperationOutcomes when asked for by
Accept or _format, parsed back with the FHIR XML models; 406 for an Accept that names neither."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.operationoutcome import OperationOutcome

from tests.conftest import Tokens
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import TEST_PATIENT, document_reference, eventually

# Every FHIR answer these tests read is checked by an independent R4 validator (tests/fhir_validation.py).
pytestmark = pytest.mark.usefixtures("validated_answers")

XML = "application/fhir+xml"
SEARCH = f"/fhir/DocumentReference?patient=Patient/{TEST_PATIENT}"


async def test_xml_for_every_kind_of_answer(stack: TestClient, tokens: Tokens) -> None:
    created = await stack.post(
        "/fhir/DocumentReference",
        json=document_reference(),
        headers={**tokens.headers(), "Content-Type": "application/fhir+json", "Accept": XML},
    )
    assert created.status == 202 and created.content_type == XML
    doc_id = DocumentReference.model_validate_xml(await created.read()).id

    async def read() -> Any:
        response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers={**tokens.headers(), "Accept": XML})
        return response if response.status == 200 else None

    response = await eventually(read)
    assert response.content_type == XML and response.headers["ETag"] == 'W/"1"'
    document = DocumentReference.model_validate_xml(await response.read())
    assert (document.id, document.meta.versionId) == (doc_id, "1")

    found = await stack.get(SEARCH + "&_format=xml", headers=tokens.headers())
    assert found.content_type == XML
    bundle = Bundle.model_validate_xml(await found.read())
    assert (bundle.type, bundle.total, bundle.entry[0].resource.id) == ("searchset", 1, doc_id)

    refused = await stack.get(
        SEARCH + "&status=final", headers={**tokens.headers(), "Accept": f"{XML};q=0.9, */*;q=0.1"}
    )
    assert (refused.status, refused.content_type) == (400, XML)
    assert OperationOutcome.model_validate_xml(await refused.read()).issue[0].expression == ["status"]

    metadata = await stack.get("/fhir/metadata?_format=application/fhir%2Bxml")
    assert CapabilityStatement.model_validate_xml(await metadata.read()).fhirVersion == "4.0.1"


async def test_json_stays_the_default_and_an_unservable_accept_is_406(stack: TestClient, tokens: Tokens) -> None:
    for accept in ("", "*/*", "application/json", "application/fhir+json;q=0.5, text/html;q=0"):
        response = await stack.get(SEARCH, headers={**tokens.headers(), **({"Accept": accept} if accept else {})})
        assert (response.status, response.content_type) == (200, "application/fhir+json"), accept
    for headers, query in (({"Accept": "text/html"}, ""), ({}, "&_format=turtle")):
        response = await stack.get(SEARCH + query, headers={**tokens.headers(), **headers})
        assert response.status == 406
        assert (await response.json())["issue"][0]["code"] == "not-supported"
