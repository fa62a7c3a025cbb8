"""IHE's own example Provide Document Bundles (tests/fixtures/ihe/, see the README there for each one's
source and what was changed) are accepted by ITI-65 as a stock MHD Document Source sends them.

Each answer is checked as a transaction-response (one entry per request entry, each with a location that
resolves), and every FHIR body read here goes through the independent R4 validator.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.fhir.identifiers import NHS_NUMBER
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import TEST_PATIENT, document_reference, eventually

pytestmark = pytest.mark.usefixtures("validated_answers")

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ihe"
FHIR = {"Content-Type": "application/fhir+json"}
EXAMPLES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def example(name: str, **ids: str) -> dict[str, Any]:
    """The fixture with IHE's placeholder ids (``ex-documentreference``...) replaced by real ones."""
    text = (FIXTURES / f"{name}.json").read_text()
    for placeholder, real in ids.items():
        text = text.replace(placeholder, real)
    return dict(json.loads(text))


async def read(stack: TestClient, tokens: Any, location: str) -> dict[str, Any]:
    response = await stack.get(f"/fhir/{location}", headers=tokens.headers())
    assert response.status == 200, (location, await response.text())
    return dict(await response.json())


async def existing_document(stack: TestClient, tokens: Any) -> str:
    response = await stack.post(
        "/fhir/DocumentReference", json=document_reference(), headers={**FHIR, **tokens.headers()}
    )
    assert response.status == 202, await response.text()
    doc_id = str((await response.json())["id"])

    async def is_stored() -> bool:
        return (await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers())).status == 200

    await eventually(is_stored)
    return doc_id


async def existing_folder(stack: TestClient, tokens: Any, doc_id: str) -> str:
    """A folder holding ``doc_id`` (only), made the way IHE's Complete example makes one (POST List in ITI-65)."""
    bundle = example("comprehensive-complete")
    folder = bundle["entry"][1]
    folder["resource"]["entry"] = [{"item": {"reference": f"DocumentReference/{doc_id}"}}]
    # IHE's examples share one masterIdentifier; the folder's own document is another document.
    bundle["entry"][2]["resource"]["masterIdentifier"]["value"] += ".1"
    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})
    assert response.status == 200, await response.text()
    return str((await response.json())["entry"][1]["response"]["location"]).removeprefix("List/")


@pytest.mark.parametrize("name", EXAMPLES)
async def test_ihe_example_bundle_is_accepted_and_every_location_resolves(
    stack: TestClient, tokens: Any, name: str
) -> None:
    ids: dict[str, str] = {}
    if name == "comprehensive-replace":
        ids["ex-documentreference"] = await existing_document(stack, tokens)
    if name == "add-to-folder":
        ids["ex-DocumentReferenceComprehensive"] = await existing_document(stack, tokens)
        ids["ex-folder"] = await existing_folder(stack, tokens, ids["ex-DocumentReferenceComprehensive"])
    bundle = example(name, **ids)

    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers()})

    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(bundle["entry"])
    for sent, got in zip(bundle["entry"], answer["entry"], strict=False):
        kind = sent["resource"]["resourceType"]
        location = got["response"]["location"]
        assert got["response"]["status"] in ("200 OK", "201 Created"), got
        if kind == "Binary":  # ITI-68 answers the document's own bytes
            assert location.startswith("Binary/")
            content = await stack.get(f"/fhir/{location}", headers=tokens.headers())
            assert await content.read() == base64.b64decode(sent["resource"]["data"])
            continue
        resolved = await read(stack, tokens, location)
        if sent["request"]["method"] == "PATCH":
            assert resolved["resourceType"] == "DocumentReference" and resolved["status"] == "superseded"
            assert location == sent["request"]["url"]
        else:
            assert resolved["resourceType"] == kind, location
        if kind == "DocumentReference":
            # What the source sent is kept: MHD's profile claim, the HTEST security tag, the masterIdentifier.
            assert resolved["meta"].get("security") == sent["resource"]["meta"].get("security")
            assert resolved["meta"]["profile"] == sent["resource"]["meta"]["profile"]
            assert resolved["masterIdentifier"] == sent["resource"]["masterIdentifier"]
            assert resolved["subject"]["identifier"] == {"system": NHS_NUMBER, "value": TEST_PATIENT}
        if kind == "Patient":
            assert got["response"]["status"] == "200 OK"  # matched, never created
            assert resolved["identifier"] == [{"system": NHS_NUMBER, "value": TEST_PATIENT}]
    if name == "add-to-folder":
        folder = await read(stack, tokens, f"List/{ids['ex-folder']}")
        new_document = answer["entry"][2]["response"]["location"]
        assert [e["item"]["reference"] for e in folder["entry"]] == [
            f"DocumentReference/{ids['ex-DocumentReferenceComprehensive']}",
            new_document,
        ]
        assert folder["meta"]["versionId"] == "2"
    issues = answer["entry"][0]["response"].get("outcome", {}).get("issue", [])
    # IHE's intended recipients are Practitioners known by an email address only: none can be notified here.
    recipients = (
        ["UnknownRecipient"]
        if name in ("comprehensive-complete", "uncontained-complete", "minimal-simple", "minimal-simple-contained")
        else []
    )
    appends = ["PartialAppendContentNotProcessed"] if name in ("comprehensive-complete", "uncontained-complete") else []
    assert [i["diagnostics"].split(":")[0] for i in issues] == appends + recipients


async def test_the_replaced_document_of_ihes_replace_example_is_superseded(stack: TestClient, tokens: Any) -> None:
    old = await existing_document(stack, tokens)
    response = await stack.post(
        "/fhir",
        json=example("comprehensive-replace", **{"ex-documentreference": old}),
        headers={**FHIR, **tokens.headers()},
    )
    assert response.status == 200, await response.text()
    replaced = await read(stack, tokens, f"DocumentReference/{old}")
    assert replaced["status"] == "superseded" and replaced["meta"]["versionId"] == "2"
    search = await stack.get(
        f"/fhir/DocumentReference?patient.identifier={NHS_NUMBER}|{TEST_PATIENT}", headers=tokens.headers()
    )
    current = [e["resource"]["id"] for e in (await search.json())["entry"]]
    assert old not in current and len(current) == 1
    # ITI-67: the association is the new document's relatesTo, as the source sent it.
    new = await read(stack, tokens, f"DocumentReference/{current[0]}")
    assert new["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{old}"}}]


async def test_an_ihe_example_sent_as_fhir_xml_is_accepted(stack: TestClient, tokens: Any) -> None:
    from fhir.resources.R4B.bundle import Bundle

    xml = Bundle.model_validate(example("comprehensive-complete")).model_dump_xml()
    response = await stack.post("/fhir", data=xml, headers={"Content-Type": "application/fhir+xml", **tokens.headers()})
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert [e["response"]["location"].split("/")[0] for e in answer["entry"]] == [
        "List",
        "List",
        "DocumentReference",
        "Binary",
    ]
    folder = await read(stack, tokens, answer["entry"][1]["response"]["location"])
    assert [e["item"]["reference"] for e in folder["entry"]] == [answer["entry"][2]["response"]["location"]]
