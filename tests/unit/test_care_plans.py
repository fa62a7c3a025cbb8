"""End-of-life care plans: create, versioned update, history and vread, concurrent edits (412), the
draft a patient starts and a clinician completes, the current plan by NHS number, and validation."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from services.care import examples
from shared.events import RoutingKey
from tests.helpers import eventually
from tests.unit.care_support import PATIENT, audit_types, call, care_plan_search, care_stack, outcome  # noqa: F401

SEARCH = care_plan_search(PATIENT)


async def create(client: TestClient, tokens: Any, **kw: Any) -> dict[str, Any]:
    status, plan, headers = await call(
        client, tokens, "POST", "/fhir/CarePlan", "RJ1", examples.care_plan(PATIENT, reason="First plan", **kw)
    )
    assert status == 201, plan
    assert headers["ETag"] == 'W/"1"'
    assert headers["Location"] == f"/fhir/CarePlan/{plan['id']}/_history/1"
    return plan


async def test_a_plan_is_created_changed_in_versions_and_read_by_nhs_number(
    care_stack: TestClient, tokens: Any
) -> None:
    plan = await create(care_stack, tokens)
    assert plan["meta"]["versionId"] == "1"
    assert plan["meta"]["extension"] == [
        {"url": "https://lhcie.london/fhir/StructureDefinition/changed-by", "valueString": "clinician@RJ1 (RJ1)"},
        {"url": "https://lhcie.london/fhir/StructureDefinition/change-reason", "valueString": "First plan"},
    ]
    assert plan["author"] == {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RJ1"}}
    assert plan["status"] == "active"

    changed = examples.care_plan(PATIENT, cpr="cpr-recommended", reason="Patient changed her mind about CPR")
    status, v2, headers = await call(
        care_stack, tokens, "PUT", f"/fhir/CarePlan/{plan['id']}", "RJ1", changed, headers={"If-Match": 'W/"1"'}
    )
    assert status == 200, v2
    assert headers["ETag"] == 'W/"2"'
    assert v2["meta"]["versionId"] == "2"
    assert v2["contained"][0]["item"][0]["answer"][0]["valueCoding"]["code"] == "cpr-recommended"

    # The current version is what a reader gets, by id and by NHS number (RRV has a direct-care ISA).
    status, current, headers = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan['id']}", "RRV")
    assert (status, current["meta"]["versionId"], headers["ETag"]) == (200, "2", 'W/"2"')
    status, found, _ = await call(care_stack, tokens, "GET", SEARCH, "RRV")
    assert status == 200
    assert [e["resource"]["meta"]["versionId"] for e in found["entry"]] == ["2"]
    assert found["total"] == 1

    # Every version stays readable: the history newest first, and each by vread.
    status, history, _ = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan['id']}/_history", "RRV")
    assert status == 200
    assert history["type"] == "history"
    assert [
        (e["resource"]["meta"]["versionId"], e["request"]["method"], e["response"]["etag"]) for e in history["entry"]
    ] == [("2", "PUT", 'W/"2"'), ("1", "POST", 'W/"1"')]
    assert (
        history["entry"][0]["resource"]["meta"]["extension"][1]["valueString"] == "Patient changed her mind about CPR"
    )
    status, first, _ = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan['id']}/_history/1", "RRV")
    assert (status, first["contained"][0]["item"][0]["answer"][0]["valueCoding"]["code"]) == (
        200,
        "cpr-not-recommended",
    )
    status, _body, _ = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan['id']}/_history/9", "RRV")
    assert status == 404

    # Every read is audited and countable per plan; so are the changes.
    async def trail() -> list[str] | None:
        types = await audit_types(care_stack, tokens, f"CarePlan/{plan['id']}")
        return types if types.count("record.read") == 4 else None

    assert await eventually(trail) == [
        "careplan.created",
        "careplan.updated",
        "record.read",
        "record.read",
        "record.read",
        "record.read",
    ]


async def test_a_concurrent_edit_is_refused_with_412(care_stack: TestClient, tokens: Any) -> None:
    plan = await create(care_stack, tokens)
    path = f"/fhir/CarePlan/{plan['id']}"
    first = examples.care_plan(PATIENT, cpr="cpr-recommended")
    status, _, _ = await call(care_stack, tokens, "PUT", path, "RJ1", first, headers={"If-Match": 'W/"1"'})
    assert status == 200
    # A second clinician edited version 1 too: their change would silently undo the first.
    status, body, _ = await call(
        care_stack, tokens, "PUT", path, "RJ1", examples.care_plan(PATIENT), headers={"If-Match": 'W/"1"'}
    )
    assert status == 412
    assert body["issue"] == [
        outcome(
            "CONFLICT",
            "conflict",
            "The plan was changed by someone else since that version "
            '(the current version is W/"2"); read it again and reapply the change.',
        )
    ]
    status, body, _ = await call(care_stack, tokens, "PUT", path, "RJ1", examples.care_plan(PATIENT))
    assert status == 428
    status, current, _ = await call(care_stack, tokens, "GET", path, "RJ1")
    assert current["meta"]["versionId"] == "2"


async def test_two_racing_edits_of_one_version_make_one_new_version(care_stack: TestClient, tokens: Any) -> None:
    import asyncio

    plan = await create(care_stack, tokens)
    path = f"/fhir/CarePlan/{plan['id']}"
    results = await asyncio.gather(
        *(
            call(
                care_stack,
                tokens,
                "PUT",
                path,
                "RJ1",
                examples.care_plan(PATIENT, cpr=c),
                headers={"If-Match": 'W/"1"'},
            )
            for c in ("cpr-recommended", "cpr-not-recommended")
        )
    )
    assert sorted(r[0] for r in results) == [200, 412]
    _status, history, _ = await call(care_stack, tokens, "GET", f"{path}/_history", "RJ1")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


async def test_a_patient_starts_a_draft_that_only_a_clinician_completes(care_stack: TestClient, tokens: Any) -> None:
    patient = {"role": "patient", "patient": PATIENT}
    status, draft, _ = await call(
        care_stack, tokens, "POST", "/fhir/CarePlan", "NHSLOGIN", examples.care_plan(PATIENT, status="draft"), **patient
    )
    assert status == 201, draft
    # Not visible to others while a draft: not found by search, even by the patient's local trust.
    status, found, _ = await call(care_stack, tokens, "GET", SEARCH, "RRV")
    assert (status, found["total"]) == (200, 0)
    status, found, _ = await call(care_stack, tokens, "GET", SEARCH, "NHSLOGIN", **patient)
    assert (status, found["total"]) == (200, 1)
    # The patient cannot complete it ...
    complete = examples.care_plan(PATIENT)
    status, body, _ = await call(
        care_stack,
        tokens,
        "PUT",
        f"/fhir/CarePlan/{draft['id']}",
        "NHSLOGIN",
        complete,
        headers={"If-Match": 'W/"1"'},
        **patient,
    )
    assert (status, body["issue"][0]["diagnostics"]) == (
        403,
        "A patient may start or edit a draft; a clinician completes it.",
    )
    # ... nor can a clinician without the consent section (and the other required sections).
    incomplete = examples.care_plan(PATIENT)
    incomplete["contained"][0]["item"] = [i for i in incomplete["contained"][0]["item"] if i["linkId"] != "consent"]
    status, body, _ = await call(
        care_stack, tokens, "PUT", f"/fhir/CarePlan/{draft['id']}", "RRV", incomplete, headers={"If-Match": 'W/"1"'}
    )
    assert status == 422
    assert body["issue"] == [
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "Consent and sharing: required",
            "CarePlan.contained[0].item.where(linkId='consent')",
        )
    ]
    # A clinician at the local trust completes it; it becomes the trust's plan and visible to others.
    status, done, _ = await call(
        care_stack, tokens, "PUT", f"/fhir/CarePlan/{draft['id']}", "RRV", complete, headers={"If-Match": 'W/"1"'}
    )
    assert status == 200, done
    assert (done["status"], done["author"]["identifier"]["value"], done["meta"]["versionId"]) == ("active", "RRV", "2")
    status, found, _ = await call(care_stack, tokens, "GET", SEARCH, "RJ1")
    assert (status, [e["resource"]["id"] for e in found["entry"]]) == (200, [draft["id"]])
    # The system role may edit but not complete a plan.
    status, body, _ = await call(
        care_stack, tokens, "POST", "/fhir/CarePlan", "RJ1", examples.care_plan(PATIENT), role="system"
    )
    assert (status, body["issue"][0]["diagnostics"]) == (403, "A plan is completed by a clinician.")


async def test_a_plan_change_publishes_an_event_for_subscribers(care_stack: TestClient, tokens: Any) -> None:
    from shared.bus import QueueSpec

    seen: list[Any] = []
    bus = care_stack.server.app[__import__("shared.app_keys", fromlist=["RUNTIME"]).RUNTIME].ports.bus
    queue = QueueSpec("test.careplans", (RoutingKey.CAREPLAN_CREATED, RoutingKey.CAREPLAN_UPDATED))
    await bus.declare([queue])

    async def hear(event: Any) -> None:
        seen.append(event)

    consumer = await bus.consume(queue, hear, prefetch=10)
    try:
        plan = await create(care_stack, tokens)
        await call(
            care_stack,
            tokens,
            "PUT",
            f"/fhir/CarePlan/{plan['id']}",
            "RJ1",
            examples.care_plan(PATIENT, cpr="cpr-recommended", reason="Reviewed"),
            headers={"If-Match": 'W/"1"'},
        )
        events = await eventually(lambda: _ready(seen, 2))
    finally:
        await consumer.stop()
    assert [(e.type, e.data["version"], e.data["status"], e.data["resource"], e.data["reason"]) for e in events] == [
        ("careplan.created", 1, "active", f"CarePlan/{plan['id']}", "First plan"),
        ("careplan.updated", 2, "active", f"CarePlan/{plan['id']}", "Reviewed"),
    ]
    assert events[1].data["patient_nhs_number"] == PATIENT
    assert events[1].data["record_type"] == "736373009"


async def _ready(seen: list[Any], n: int) -> list[Any] | None:
    return seen if len(seen) >= n else None


async def test_invalid_plans_are_refused_with_one_issue_per_problem(care_stack: TestClient, tokens: Any) -> None:
    bad = examples.care_plan("1234567890")
    bad["category"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "736373009"}]}]
    bad["contained"][0]["item"][0] = {"linkId": "cpr", "answer": [{"valueCoding": {"code": "maybe"}}]}
    status, body, _ = await call(care_stack, tokens, "POST", "/fhir/CarePlan", "RJ1", bad)
    assert status == 422
    assert body["issue"] == [
        outcome(
            "INVALID_NHS_NUMBER",
            "value",
            "subject.identifier must be a valid NHS number",
            "CarePlan.subject.identifier",
        ),
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "category must include https://lhcie.london/fhir/CodeSystem/careplan-category|end-of-life",
            "CarePlan.category",
        ),
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "must be one of cpr-recommended, cpr-not-recommended",
            "CarePlan.contained[0].item.where(linkId='cpr').answer.valueCoding",
        ),
    ]
    response = await care_stack.post(
        "/fhir/CarePlan",
        data=b"{not json",
        headers={"Content-Type": "application/fhir+json", **tokens.headers("RJ1", "clinician")},
    )
    assert response.status == 400
    status, body, _ = await call(care_stack, tokens, "GET", "/fhir/CarePlan?patient.identifier=123", "RJ1")
    assert status == 400
    status, body, _ = await call(care_stack, tokens, "GET", "/fhir/CarePlan/nope", "RJ1")
    assert status == 404
