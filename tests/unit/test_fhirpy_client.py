"""A third-party FHIR client (fhirpy, as an integrator would use it, unchanged) against the embedded
exchange served on a loopback port: search, read, refresh(), count(), fetch_all() and paging."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from fhirpy import AsyncFHIRClient

from tests.conftest import Tokens
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import TEST_PATIENT, document_reference, eventually

# Every FHIR answer these tests read is checked by an independent R4 validator (tests/fhir_validation.py).
pytestmark = pytest.mark.usefixtures("validated_answers")

FHIR = {"Content-Type": "application/fhir+json"}


async def store(stack: TestClient, tokens: Tokens, count: int) -> list[str]:
    ids = []
    for i in range(count):
        resource = document_reference()
        resource["context"]["period"] = {"start": f"2026-0{i + 1}-01", "end": f"2026-0{i + 1}-20"}
        response = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers()})
        assert response.status == 202, await response.text()
        ids.append((await response.json())["id"])

    async def all_stored() -> bool | None:
        for doc_id in ids:
            if (await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())).status != 200:
                return None
        return True

    await eventually(all_stored)
    return ids


async def test_fhirpy_searches_reads_refreshes_counts_and_pages(stack: TestClient, tokens: Tokens) -> None:
    ids = await store(stack, tokens, 5)
    # The TestServer listens on 127.0.0.1: fhirpy talks to it over a real socket, as to any FHIR server.
    client = AsyncFHIRClient(str(stack.make_url("/fhir")), authorization=f"Bearer {tokens()}")
    documents = client.resources("DocumentReference").search(patient=f"Patient/{TEST_PATIENT}")

    assert await documents.count() == 5
    first_page = await documents.limit(2).fetch()
    assert len(first_page) == 2
    everything = await documents.limit(2).fetch_all()  # follows the absolute next links
    assert sorted(d.id for d in everything) == sorted(ids)
    overlapping = await documents.search(period__ge="2026-03-10", period__le="2026-04-05").fetch_all()
    assert sorted(d.id for d in overlapping) == sorted(ids[2:4])  # March's period overlaps; so does April's

    document = await client.reference("DocumentReference", ids[0]).to_resource()
    assert (document["status"], document["meta"]["versionId"]) == ("current", "1")
    assert document["content"][0]["attachment"]["url"] == str(stack.make_url(f"/fhir/Binary/{ids[0]}"))

    withdrawn = await stack.patch(
        f"/fhir/DocumentReference/{ids[0]}",
        headers={**tokens.headers(), "Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
        json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
    )
    assert withdrawn.status == 200
    await document.refresh()
    assert (document["status"], document["meta"]["versionId"]) == ("entered-in-error", "2")
    assert await documents.count() == 4
    first: Any = await documents.search(_id=ids[1]).first()
    assert first.id == ids[1]
