"""ITI-65's other slices: the Patient entry (matched by NHS number), UpdateDocumentRefs (PATCH of the replaced
DocumentReference) and Folders. Each refusal is an OperationOutcome with nothing of the bundle kept."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.fhir.identifiers import NHS_NUMBER
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import TEST_PATIENT, document_reference, eventually
from tests.unit.test_ihe_examples import FHIR, example, existing_document, existing_folder, read

pytestmark = pytest.mark.usefixtures("validated_answers")

OTHER_PATIENT = "9000000017"
SEARCH = f"/fhir/DocumentReference?patient.identifier={NHS_NUMBER}|{TEST_PATIENT}"


async def post(stack: TestClient, tokens: Any, bundle: dict[str, Any], org: str = "RJ1") -> tuple[int, dict[str, Any]]:
    response = await stack.post("/fhir", json=bundle, headers={**FHIR, **tokens.headers(org)})
    return response.status, await response.json()


async def documents(stack: TestClient, tokens: Any, patient: str = TEST_PATIENT) -> list[str]:
    response = await stack.get(
        f"/fhir/DocumentReference?patient.identifier={NHS_NUMBER}|{patient}", headers=tokens.headers()
    )
    return [e["resource"]["id"] for e in (await response.json())["entry"]]


def expressions(outcome: dict[str, Any]) -> list[str]:
    return [i["expression"][0] for i in outcome["issue"]]


# -- Patient ------------------------------------------------------------------------------------------


async def test_patient_entry_whose_nhs_number_differs_from_the_subject_is_refused(
    stack: TestClient, tokens: Any
) -> None:
    bundle = example("minimal-simple")
    bundle["entry"][1]["resource"]["subject"]["identifier"] = {"system": NHS_NUMBER, "value": TEST_PATIENT}
    bundle["entry"][3]["resource"]["identifier"][0]["value"] = OTHER_PATIENT
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422
    assert expressions(outcome) == ["Bundle.entry[1].resource.subject"]
    assert "Patient entry (Bundle.entry[3])" in outcome["issue"][0]["diagnostics"]
    assert await documents(stack, tokens) == [] and await documents(stack, tokens, OTHER_PATIENT) == []


async def test_patient_entry_without_an_nhs_number_is_refused(stack: TestClient, tokens: Any) -> None:
    bundle = example("minimal-simple")
    bundle["entry"][3]["resource"]["identifier"] = [{"system": "http://example.org/patients", "value": "mrn-1234"}]
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422
    assert "Bundle.entry[3].resource.identifier" in expressions(outcome)
    bundle["entry"][3]["resource"]["identifier"] = [{"system": NHS_NUMBER, "value": "9000000008"}]
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422 and outcome["issue"][0]["diagnostics"] == "The Patient's NHS number is not valid."


async def test_patient_entry_files_the_documents_under_its_nhs_number_and_is_only_the_submitters(
    stack: TestClient, tokens: Any
) -> None:
    bundle = example("minimal-simple")
    bundle["entry"][3]["resource"]["identifier"][0]["value"] = OTHER_PATIENT
    status, answer = await post(stack, tokens, bundle)
    assert status == 200, answer
    doc_id = answer["entry"][1]["response"]["location"].removeprefix("DocumentReference/")
    assert await documents(stack, tokens, OTHER_PATIENT) == [doc_id]
    stored = await read(stack, tokens, f"DocumentReference/{doc_id}")
    assert stored["subject"] == {"identifier": {"system": NHS_NUMBER, "value": OTHER_PATIENT}}  # no urn:uuid left
    patient = answer["entry"][3]["response"]["location"]
    other = await stack.get(f"/fhir/{patient}", headers=tokens.headers("RRV"))
    assert other.status == 404
    assert (await read(stack, tokens, patient))["id"] == answer["entry"][0]["response"]["location"].removeprefix(
        "List/"
    )
    # A bundle without a Patient entry has no Patient to point at.
    plain = example("comprehensive-simple")
    plain["entry"][1]["resource"]["masterIdentifier"]["value"] += ".1"  # IHE's examples share one
    plain_status, plain_answer = await post(stack, tokens, plain)
    assert plain_status == 200, plain_answer
    none = await stack.get(
        f"/fhir/Patient/{plain_answer['entry'][0]['response']['location'].removeprefix('List/')}",
        headers=tokens.headers(),
    )
    assert none.status == 404


# -- UpdateDocumentRefs (PATCH) -----------------------------------------------------------------------


def replace_bundle(old: str, *, if_match: str | None = None) -> dict[str, Any]:
    bundle = example("comprehensive-replace", **{"ex-documentreference": old})
    if if_match is not None:
        bundle["entry"][1]["request"]["ifMatch"] = if_match
    return bundle


async def status_of(stack: TestClient, tokens: Any, doc_id: str) -> tuple[str, str]:
    resource = await read(stack, tokens, f"DocumentReference/{doc_id}")
    return resource["status"], resource["meta"]["versionId"]


async def test_only_the_custodian_may_patch_and_nothing_is_kept(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/fhir/DocumentReference", json=document_reference(custodian="RRV"), headers={**FHIR, **tokens.headers("RRV")}
    )
    theirs = (await response.json())["id"]

    async def is_stored() -> bool:
        return (await stack.get(f"/fhir/DocumentReference/{theirs}", headers=tokens.headers("RRV"))).status == 200

    await eventually(is_stored)
    status, outcome = await post(stack, tokens, replace_bundle(theirs))
    assert status == 403
    assert expressions(outcome) == ["Bundle.entry[1].request.url"]
    assert await documents(stack, tokens) == [theirs]  # RJ1 may read it (the ISA); nothing new, still current
    state = await stack.get(f"/fhir/DocumentReference/{theirs}", headers=tokens.headers("RRV"))
    assert (await state.json())["status"] == "current"


async def test_if_match_on_a_patch_entry_is_honoured(stack: TestClient, tokens: Any) -> None:
    old = await existing_document(stack, tokens)
    status, outcome = await post(stack, tokens, replace_bundle(old, if_match='W/"2"'))
    assert status == 412
    assert expressions(outcome) == ["Bundle.entry[1].request.ifMatch"]
    assert await status_of(stack, tokens, old) == ("current", "1")
    assert await documents(stack, tokens) == [old]
    status, answer = await post(stack, tokens, replace_bundle(old, if_match='W/"1"'))
    assert status == 200, answer
    assert answer["entry"][1]["response"] == {"status": "200 OK", "location": f"DocumentReference/{old}"}
    assert await status_of(stack, tokens, old) == ("superseded", "2")


async def test_a_json_patch_in_a_binary_works_as_ihes_fhirpath_patch(stack: TestClient, tokens: Any) -> None:
    old = await existing_document(stack, tokens)
    bundle = replace_bundle(old)
    patch = json.dumps([{"op": "replace", "path": "/status", "value": "superseded"}]).encode()
    bundle["entry"][1]["resource"] = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(patch).decode(),
    }
    status, answer = await post(stack, tokens, bundle)
    assert status == 200, answer
    assert await status_of(stack, tokens, old) == ("superseded", "2")


async def test_a_patch_must_supersede_a_document_the_bundle_replaces(stack: TestClient, tokens: Any) -> None:
    old, unrelated = await existing_document(stack, tokens), await existing_document(stack, tokens)
    bundle = replace_bundle(old)
    bundle["entry"][1]["request"]["url"] = f"DocumentReference/{unrelated}"
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422 and expressions(outcome) == ["Bundle.entry[1].request.url"]
    withdraw = replace_bundle(old)
    withdraw["entry"][1]["resource"]["parameter"][0]["part"][2]["valueCode"] = "entered-in-error"
    status, outcome = await post(stack, tokens, withdraw)
    assert status == 422 and expressions(outcome) == ["Bundle.entry[1].resource"]
    assert await status_of(stack, tokens, old) == ("current", "1")
    assert await status_of(stack, tokens, unrelated) == ("current", "1")


async def test_a_patch_and_its_bundle_are_all_or_nothing(stack: TestClient, tokens: Any) -> None:
    old = await existing_document(stack, tokens)
    bundle = replace_bundle(old)
    bundle["entry"][2]["resource"]["type"]["coding"][0]["code"] = "60591-5"  # not catalogued: the bundle fails
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422 and expressions(outcome) == ["Bundle.entry[2].resource.type"]
    assert await status_of(stack, tokens, old) == ("current", "1")
    assert await documents(stack, tokens) == [old]


# -- Folders ------------------------------------------------------------------------------------------


async def test_a_folder_holding_another_organisations_document_is_refused(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/fhir/DocumentReference", json=document_reference(custodian="RRV"), headers={**FHIR, **tokens.headers("RRV")}
    )
    theirs = (await response.json())["id"]
    bundle = example("comprehensive-complete")
    bundle["entry"][1]["resource"]["entry"].append({"item": {"reference": f"DocumentReference/{theirs}"}})
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422
    assert expressions(outcome) == ["Bundle.entry[1].resource.entry[1].item"]
    assert await documents(stack, tokens) == []


async def test_a_folder_holds_only_its_own_patients_documents(stack: TestClient, tokens: Any) -> None:
    bundle = example("comprehensive-complete")
    bundle["entry"][1]["resource"]["subject"]["identifier"]["value"] = OTHER_PATIENT
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422 and expressions(outcome) == ["Bundle.entry[1].resource.entry[0].item"]


async def test_a_folder_is_read_and_updated_only_by_its_organisation(stack: TestClient, tokens: Any) -> None:
    doc = await existing_document(stack, tokens)
    folder = await existing_folder(stack, tokens, doc)
    assert (await stack.get(f"/fhir/List/{folder}", headers=tokens.headers("RRV"))).status == 404
    created = await read(stack, tokens, f"List/{folder}")
    assert created["code"]["coding"][0]["code"] == "folder" and created["meta"]["versionId"] == "1"
    assert created["subject"] == {"identifier": {"system": NHS_NUMBER, "value": TEST_PATIENT}}
    bundle = example("add-to-folder", **{"ex-folder": folder, "ex-DocumentReferenceComprehensive": doc})
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "DocumentReference":
            entry["resource"]["custodian"]["identifier"]["value"] = "RRV"
    status, outcome = await post(stack, tokens, bundle, org="RRV")
    assert status == 404 and expressions(outcome) == ["Bundle.entry[1].request.url"]
    assert (await read(stack, tokens, f"List/{folder}"))["meta"]["versionId"] == "1"


async def test_a_folder_update_honours_if_match(stack: TestClient, tokens: Any) -> None:
    doc = await existing_document(stack, tokens)
    folder = await existing_folder(stack, tokens, doc)
    bundle = example("add-to-folder", **{"ex-folder": folder, "ex-DocumentReferenceComprehensive": doc})
    bundle["entry"][1]["request"]["ifMatch"] = 'W/"2"'
    status, outcome = await post(stack, tokens, bundle)
    assert status == 412 and expressions(outcome) == ["Bundle.entry[1].request.ifMatch"]
    assert len((await read(stack, tokens, f"List/{folder}"))["entry"]) == 1  # unchanged
    bundle["entry"][1]["request"]["ifMatch"] = 'W/"1"'
    status, answer = await post(stack, tokens, bundle)
    assert status == 200, answer
    assert answer["entry"][1]["response"] == {"status": "200 OK", "location": f"List/{folder}"}
    assert len((await read(stack, tokens, f"List/{folder}"))["entry"]) == 2


async def test_a_folder_update_cannot_remove_a_document(stack: TestClient, tokens: Any) -> None:
    doc = await existing_document(stack, tokens)
    folder = await existing_folder(stack, tokens, doc)
    before = await documents(stack, tokens)
    bundle = example("add-to-folder", **{"ex-folder": folder, "ex-DocumentReferenceComprehensive": doc})
    del bundle["entry"][1]["resource"]["entry"][0]  # IHE's PUT without the document already filed
    status, outcome = await post(stack, tokens, bundle)
    assert status == 422 and expressions(outcome) == ["Bundle.entry[1].resource.entry"]
    assert [e["item"]["reference"] for e in (await read(stack, tokens, f"List/{folder}"))["entry"]] == [
        f"DocumentReference/{doc}"
    ]
    assert await documents(stack, tokens) == before


async def test_the_asynchronous_answer_has_the_same_slices_as_the_synchronous_one(
    stack: TestClient, tokens: Any
) -> None:
    response = await stack.post(
        "/fhir", json=example("minimal-simple"), headers={**FHIR, **tokens.headers(), "Prefer": "respond-async"}
    )
    assert response.status == 202
    status_url = response.headers["Content-Location"].split("/fhir/", 1)[1]

    async def done() -> dict[str, Any] | None:
        polled = await stack.get(f"/fhir/{status_url}", headers=tokens.headers())
        return dict(await polled.json()) if polled.status == 200 else None

    answer = await eventually(done)
    assert [(e["response"]["status"], e["response"]["location"].split("/")[0]) for e in answer["entry"]] == [
        ("201 Created", "List"),
        ("201 Created", "DocumentReference"),
        ("201 Created", "Binary"),
        ("200 OK", "Patient"),
    ]
    for entry in answer["entry"]:
        if not entry["response"]["location"].startswith("Binary/"):
            await read(stack, tokens, entry["response"]["location"])
