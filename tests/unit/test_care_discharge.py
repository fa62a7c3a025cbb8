"""Discharge summaries as FHIR documents with the PRSB eDischarge headings: delivered to the GP practice
and the local trust, acknowledged ITK3-style (infrastructure, then business), rejected by the exchange or
by a recipient, replaced, and escalated to the sender when nobody acknowledges in time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from services.care import examples
from shared.clock import FixedClock
from tests.unit.care_support import PATIENT, call, care_of, care_stack, outcome  # noqa: F401

GP = "G85001"


def ack(kind: str, outcome_: str | None = None, code: str | None = None) -> dict[str, Any]:
    params = [{"name": "type", "valueCode": kind}]
    if outcome_:
        params.append({"name": "outcome", "valueCode": outcome_})
    if code:
        params.append({"name": "code", "valueCode": code})
    return {"resourceType": "Parameters", "parameter": params}


def deliveries(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for p in status["parameter"]:
        if p["name"] == "delivery":
            parts = {q["name"]: next(v for k, v in q.items() if k.startswith("value")) for q in p["part"]}
            recipient = parts.pop("recipient")["value"]
            out[recipient] = {k: v for k, v in parts.items() if k != "delivered"}
    return out


async def send(client: TestClient, tokens: Any, identifier: str, **kw: Any) -> dict[str, Any]:
    status, bundle, headers = await call(
        client,
        tokens,
        "POST",
        "/fhir/Bundle",
        "RJ1",
        examples.discharge_summary(PATIENT, identifier=identifier, gp=GP, **kw),
    )
    assert status == 201, bundle
    assert headers["X-ITK-Acknowledgement"] == "accepted"
    return bundle


async def test_a_summary_is_delivered_and_acknowledged_twice_by_each_recipient(
    care_stack: TestClient, tokens: Any
) -> None:
    bundle = await send(care_stack, tokens, "rj1-ds-0001", trust="RRV")
    sid = bundle["id"]
    # Both recipients find it in their inbox.
    for org in (GP, "RRV"):
        status, inbox, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle?recipient={org}", org, role="system")
        assert (status, [e["resource"]["id"] for e in inbox["entry"]]) == (200, [sid])
    status, _, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle/{sid}", "RPY")
    assert status == 404

    # The GP practice's system took it in, and the patient is registered there.
    status, infra, _ = await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{sid}/$acknowledge",
        GP,
        ack("infrastructure", "accepted"),
        role="system",
    )
    assert status == 200
    assert infra == {
        "resourceType": "MessageHeader",
        "eventCoding": {
            "system": "https://lhcie.london/fhir/CodeSystem/itk-acknowledgement",
            "code": "infrastructure-acknowledgement",
        },
        "source": {"endpoint": f"urn:ods:{GP}"},
        "response": {"identifier": sid, "code": "ok"},
        "focus": [{"reference": f"Bundle/{sid}"}],
    }
    status, business, _ = await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{sid}/$acknowledge",
        GP,
        ack("business", code="patient-known"),
        role="system",
    )
    assert (status, business["reason"]["coding"][0]["code"]) == (200, "patient-known")
    # The local trust took it in, but the patient is no longer there.
    await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{sid}/$acknowledge",
        "RRV",
        ack("infrastructure", "accepted"),
        role="system",
    )
    await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{sid}/$acknowledge",
        "RRV",
        ack("business", code="no-longer-at-setting"),
        role="system",
    )
    # The same acknowledgement again is harmless; a different one is a conflict.
    status, _, _ = await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{sid}/$acknowledge",
        GP,
        ack("business", code="patient-known"),
        role="system",
    )
    assert status == 200
    status, _, _ = await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{sid}/$acknowledge",
        GP,
        ack("business", code="patient-not-known"),
        role="system",
    )
    assert status == 409

    status, state, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle/{sid}/$status", "RJ1")
    assert status == 200
    assert deliveries(state) == {
        GP: {
            "escalated": False,
            "infrastructure": "accepted",
            "business": "accepted",
            "business-code": "patient-known",
        },
        "RRV": {
            "escalated": False,
            "infrastructure": "accepted",
            "business": "accepted",
            "business-code": "no-longer-at-setting",
        },
    }


async def test_a_rejected_summary_is_answered_with_its_itk_code(care_stack: TestClient, tokens: Any) -> None:
    # The exchange rejects a payload without the mandatory headings ...
    status, body, headers = await call(
        care_stack,
        tokens,
        "POST",
        "/fhir/Bundle",
        "RJ1",
        examples.discharge_summary(
            PATIENT, identifier="rj1-ds-0002", gp=GP, leave_out=("allergies-and-adverse-reactions", "diagnoses")
        ),
    )
    assert status == 422
    assert headers["X-ITK-Acknowledgement"] == "rejected; code=payload-validation-failure"
    assert body["issue"] == [
        outcome(
            "PROCESSING",
            "processing",
            "Infrastructure acknowledgement: rejected (payload-validation-failure).",
            "Bundle",
        ),
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "the mandatory heading 'Allergies and adverse reactions' is missing",
            "Bundle.entry[0].resource.section",
        ),
        outcome(
            "INVALID_RESOURCE",
            "invalid",
            "the mandatory heading 'Diagnoses' is missing",
            "Bundle.entry[0].resource.section",
        ),
    ]
    # ... and a duplicate.
    await send(care_stack, tokens, "rj1-ds-0003")
    status, body, headers = await call(
        care_stack,
        tokens,
        "POST",
        "/fhir/Bundle",
        "RJ1",
        examples.discharge_summary(PATIENT, identifier="rj1-ds-0003", gp=GP),
    )
    assert (status, headers["X-ITK-Acknowledgement"]) == (409, "rejected; code=duplicate")
    # A recipient's system rejects one too; the sender sees why, and no business acknowledgement can follow.
    bundle = await send(care_stack, tokens, "rj1-ds-0004")
    path = f"/fhir/Bundle/{bundle['id']}/$acknowledge"
    status, body, _ = await call(care_stack, tokens, "POST", path, GP, ack("infrastructure", "rejected"), role="system")
    assert (status, body["issue"][0]["expression"]) == (422, ["Parameters.parameter.where(name='code')"])
    status, rejected, _ = await call(
        care_stack,
        tokens,
        "POST",
        path,
        GP,
        ack("infrastructure", "rejected", "payload-validation-failure"),
        role="system",
    )
    assert (status, rejected["response"]["code"], rejected["reason"]["coding"][0]["code"]) == (
        200,
        "fatal-error",
        "payload-validation-failure",
    )
    status, body, _ = await call(
        care_stack, tokens, "POST", path, GP, ack("business", code="patient-known"), role="system"
    )
    assert status == 409
    status, state, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle/{bundle['id']}/$status", "RJ1")
    assert deliveries(state) == {
        GP: {"escalated": False, "infrastructure": "rejected", "infrastructure-code": "payload-validation-failure"}
    }


async def test_a_replacement_supersedes_and_silence_escalates_to_the_sender(
    care_stack: TestClient, tokens: Any
) -> None:
    care = care_of(care_stack)
    clock = care.clock = FixedClock(datetime(2026, 12, 1, 10, tzinfo=UTC))
    original = await send(care_stack, tokens, "rj1-ds-0005", trust="RRV")
    await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{original['id']}/$acknowledge",
        GP,
        ack("infrastructure", "accepted"),
        role="system",
    )
    clock.advance(hours=2)
    replacement = await send(care_stack, tokens, "rj1-ds-0006", trust="RRV", replaces="rj1-ds-0005")
    status, state, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle/{original['id']}/$status", "RJ1")
    assert state["parameter"][:2] == [
        {"name": "status", "valueCode": "superseded"},
        {"name": "replaced-by", "valueReference": {"reference": f"Bundle/{replacement['id']}"}},
    ]
    status, old, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle/{original['id']}", GP, role="system")
    assert old["meta"]["tag"] == [
        {"system": "https://lhcie.london/fhir/CodeSystem/itk-acknowledgement", "code": "superseded"}
    ]
    status, body, _ = await call(
        care_stack,
        tokens,
        "POST",
        "/fhir/Bundle",
        "RJ1",
        examples.discharge_summary(PATIENT, identifier="rj1-ds-0007", gp=GP, replaces="rj1-ds-0005"),
    )
    assert (status, body["issue"][0]["diagnostics"]) == (409, "That discharge summary was already replaced.")

    # The GP files the replacement; the local trust never answers. After 24 hours the sender hears of it,
    # once, and not about the superseded original.
    await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Bundle/{replacement['id']}/$acknowledge",
        GP,
        ack("business", code="patient-known"),
        role="system",
    )
    clock.advance(hours=23)
    assert await care.run_timers() == 0
    clock.advance(hours=2)
    # Only the local trust's: the original's timers were cancelled, and the GP's by its acknowledgement.
    assert await care.run_timers() == 1
    assert await care.run_timers() == 0
    status, state, _ = await call(care_stack, tokens, "GET", f"/fhir/Bundle/{replacement['id']}/$status", "RJ1")
    assert {org: d["escalated"] for org, d in deliveries(state).items()} == {GP: False, "RRV": True}
