"""Alerts on the embedded stack: one per document per team, search, acknowledge, escalation, reconciliation.

The helpers at the top (stored-document events straight onto the embedded bus) serve the other
notification test modules too."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lhcie.services import SPECS
from services.notification.domain import Notification
from services.notification.routes import NOTIFICATION
from shared.app_keys import RUNTIME
from shared.bus import QueueSpec
from shared.clock import FixedClock
from shared.config import Settings
from shared.edge import build_app
from shared.events import CareTeamState, DocumentFacts, DocumentStored, Event, RoutingKey
from shared.fhir.identifiers import LOINC
from tests.helpers import TEST_PATIENT, eventually, settled

REFERRAL, PATHOLOGY, DISCHARGE = "57133-1", "11526-1", "18842-5"


def stored_event(
    *,
    document_id: str | None = None,
    patient: str = TEST_PATIENT,
    custodian: str = "RJ1",
    type_code: str = PATHOLOGY,
    team: str = "rj1-lung",
    stored_at: datetime | None = None,
) -> Event:
    facts = DocumentFacts(
        document_id=document_id or str(uuid.uuid4()),
        patient_nhs_number=patient,
        custodian=custodian,
        type_system=LOINC,
        type_code=type_code,
        related=(f"CareTeam/{team}",),
        content_type="application/pdf",
        size=3,
        sha256=hashlib.sha256(b"pdf").hexdigest(),
    )
    return Event.new(
        RoutingKey.DOCUMENT_STORED,
        DocumentStored(
            submission_id=str(uuid.uuid4()),
            document=facts,
            object_key=f"k/{facts.document_id}",
            stored_at=stored_at or datetime.now(UTC),
        ),
        source="urn:lhcie:service:storage",
        subject=facts.document_id,
    )


def notification(stack: TestClient) -> Notification:
    return stack.server.app[NOTIFICATION]


async def publish(stack: TestClient, event: Event) -> None:
    await stack.server.app[RUNTIME].ports.bus.publish(event)


async def teams_known(stack: TestClient) -> None:
    n = notification(stack)
    await eventually(lambda: n.policy.careteam("rj1-lung"))
    await eventually(lambda: n.policy.careteam("rrv-haematology"))
    await eventually(lambda: n.policy.agreements_between("RJ1", "RRV"))


async def alerts(
    stack: TestClient, tokens: Any, query: str = "", team: str = "rj1-lung", org: str = "RJ1"
) -> dict[str, Any]:
    response = await stack.get(
        f"/fhir/Communication?recipient=CareTeam/{team}{query}",
        headers=tokens.headers(org, "mdt-coordinator", mdt=team),
    )
    assert response.status == 200, await response.text()
    return await response.json()


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


async def alert_count(stack: TestClient, tokens: Any, expected: int, query: str = "") -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        found = entries(await alerts(stack, tokens, query))
        return found if len(found) == expected else None

    return await eventually(probe)


async def test_a_redelivered_or_repeated_stored_event_raises_one_alert(
    stack: TestClient, tokens: Any, settings: Settings
) -> None:
    await teams_known(stack)
    event = stored_event(type_code=PATHOLOGY)
    await publish(stack, event)
    await publish(stack, event)  # the same delivery again (at-least-once)
    await publish(stack, stored_event(document_id=event.data["document"]["document_id"]))  # a re-announcement
    [alert] = await alert_count(stack, tokens, 1)
    await settled(settings.data_dir)  # every copy handled: a second alert would be there now
    assert entries(await alerts(stack, tokens)) == [alert]
    assert alert["priority"] == "urgent"
    assert alert["status"] == "in-progress"
    assert alert["about"] == [{"reference": f"DocumentReference/{event.data['document']['document_id']}"}]
    assert alert["payload"][0] == {"contentString": "New Histopathology report from RJ1"}
    assert alert["meta"]["tag"][0]["code"] == "2026.11-1"


async def test_search_by_patient_status_priority_and_date_is_paged(stack: TestClient, tokens: Any) -> None:
    await teams_known(stack)
    other = "9434765919"
    await publish(stack, stored_event(type_code=PATHOLOGY))
    await publish(stack, stored_event(type_code=DISCHARGE))
    await publish(stack, stored_event(type_code=DISCHARGE, patient=other))
    everything = await alert_count(stack, tokens, 3)
    assert [a["priority"] for a in everything] == ["urgent", "routine", "routine"]  # most urgent first

    by_patient = entries(await alerts(stack, tokens, f"&patient=https://fhir.nhs.uk/Id/nhs-number|{other}"))
    assert [a["subject"]["identifier"]["value"] for a in by_patient] == [other]
    assert [a["priority"] for a in entries(await alerts(stack, tokens, "&priority=routine"))] == ["routine"] * 2
    today = everything[0]["sent"][:10]
    assert len(entries(await alerts(stack, tokens, f"&sent=ge{today}&sent=le{today}"))) == 3
    assert entries(await alerts(stack, tokens, f"&sent=gt{today}")) == []

    first = await alerts(stack, tokens, "&_count=2")
    assert [a["id"] for a in entries(first)] == [a["id"] for a in everything[:2]]
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    response = await stack.get(next_url, headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"))
    assert [a["id"] for a in entries(await response.json())] == [everything[2]["id"]]

    await stack.post(
        f"/fhir/Communication/{everything[0]['id']}/$acknowledge",
        headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
    )
    assert [a["id"] for a in entries(await alerts(stack, tokens, "&status=completed"))] == [everything[0]["id"]]
    assert len(entries(await alerts(stack, tokens, "&status=in-progress"))) == 2


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("&priority=high", "priority"),
        ("&status=open", "status"),
        ("&sent=yesterday", "sent"),
    ],
)
async def test_bad_search_parameters_are_400_with_the_parameter_named(
    stack: TestClient, tokens: Any, query: str, expression: str
) -> None:
    response = await stack.get(
        f"/fhir/Communication?recipient=CareTeam/rj1-lung{query}",
        headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
    )
    assert response.status == 400
    [issue] = (await response.json())["issue"]
    assert issue["code"] == "value" and issue["expression"] == [expression]


async def test_acknowledging_is_one_click_idempotent_and_for_the_mdt_only(stack: TestClient, tokens: Any) -> None:
    await teams_known(stack)
    await publish(stack, stored_event())
    [alert] = await alert_count(stack, tokens, 1)
    outsider = await stack.post(
        f"/fhir/Communication/{alert['id']}/$acknowledge",
        headers=tokens.headers("RRV", "mdt-coordinator", mdt="rrv-haematology"),
    )
    assert outsider.status == 403
    coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")
    first = await (await stack.post(f"/fhir/Communication/{alert['id']}/$acknowledge", headers=coordinator)).json()
    second = await (await stack.post(f"/fhir/Communication/{alert['id']}/$acknowledge", headers=coordinator)).json()
    assert first == second
    assert first["status"] == "completed"
    assert {"url": "https://lhcie.london/fhir/StructureDefinition/alert-state", "valueCode": "acknowledged"} in first[
        "extension"
    ]
    assert first["note"] == [{"authorString": "mdt-coordinator@RJ1", "time": first["received"], "text": "Acknowledged"}]
    missing = await stack.post("/fhir/Communication/nope/$acknowledge", headers=coordinator)
    assert missing.status == 404


async def test_an_unacknowledged_alert_escalates_to_the_deputy_then_the_lead_once_each(
    stack: TestClient, tokens: Any
) -> None:
    n = notification(stack)
    clock = FixedClock(datetime.now(UTC))
    n.set_clock(clock)
    bus = stack.server.app[RUNTIME].ports.bus
    watch = QueueSpec("test.escalations", (RoutingKey.ALERT_ESCALATED,))
    await bus.declare([watch])
    await teams_known(stack)
    await publish(stack, stored_event())
    [alert] = await alert_count(stack, tokens, 1)

    async def steps() -> list[str]:
        await n.run_timers()
        stored = await n.alerts.get(alert["id"])
        assert stored is not None
        return [step["to"] for step in stored["escalations"]]

    clock.advance(minutes=29)
    assert await steps() == []
    clock.advance(minutes=2)
    assert await steps() == ["deputy-coordinator"]
    assert await steps() == ["deputy-coordinator"]  # fired means fired: never twice
    clock.advance(minutes=90)
    assert await steps() == ["deputy-coordinator", "mdt-lead"]
    clock.advance(days=1)
    assert await steps() == ["deputy-coordinator", "mdt-lead"]  # no third step in the default rules
    await n.ctx.outbox.flush()

    escalations = []
    while (body := await bus.get(watch.name)) is not None:
        escalations.append(Event.from_bytes(body).data)
    assert [e["escalated_to"] for e in escalations] == [
        "CareTeam/rj1-lung#deputy-coordinator",
        "CareTeam/rj1-lung#mdt-lead",
    ]
    [escalated] = [a for a in entries(await alerts(stack, tokens)) if a["id"] == alert["id"]]
    assert escalated["id"] == alert["id"]
    assert [note["text"] for note in escalated["note"]] == [
        "Escalated to deputy-coordinator: not acknowledged in time",
        "Escalated to mdt-lead: not acknowledged in time",
    ]


async def test_acknowledging_in_time_cancels_the_escalation(stack: TestClient, tokens: Any) -> None:
    n = notification(stack)
    clock = FixedClock(datetime.now(UTC))
    n.set_clock(clock)
    await teams_known(stack)
    await publish(stack, stored_event())
    [alert] = await alert_count(stack, tokens, 1)
    await stack.post(
        f"/fhir/Communication/{alert['id']}/$acknowledge",
        headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
    )
    clock.advance(hours=5)
    await n.run_timers()
    stored = await n.alerts.get(alert["id"])
    assert stored is not None and stored["escalations"] == []


async def test_documents_that_arrived_before_their_mdt_was_known_are_reconciled(stack: TestClient, tokens: Any) -> None:
    n = notification(stack)
    await teams_known(stack)
    event = stored_event(team="rpy-breast", custodian="RPY")
    await n.policy.apply(
        Event.new(
            RoutingKey.POLICY_CARETEAM_UPDATED,
            CareTeamState(careteam_id="rpy-breast", name="Breast MDT", organisation="RPY", active=False, version=50),
            source="test",
        )
    )
    await publish(stack, event)
    await eventually(lambda: n.documents.get(event.data["document"]["document_id"]))
    assert entries(await alerts(stack, tokens, team="rpy-breast", org="RPY")) == []

    # The MDT becomes active (a policy event): the stored documents are checked again and nothing is missed.
    await publish(
        stack,
        Event.new(
            RoutingKey.POLICY_CARETEAM_UPDATED,
            CareTeamState(
                careteam_id="rpy-breast", name="Breast MDT", organisation="RPY", tumour_site="breast", version=51
            ),
            source="test",
        ),
    )

    async def raised() -> list[dict[str, Any]]:
        return entries(await alerts(stack, tokens, team="rpy-breast", org="RPY"))

    [alert] = await eventually(raised)
    assert alert["about"] == [{"reference": f"DocumentReference/{event.data['document']['document_id']}"}]
    assert await n.reconcile() == 0  # and a second pass raises nothing twice
    response = await stack.post("/fhir/Communication/$reconcile", headers=tokens.headers("LHCIE", "exchange-operator"))
    assert await response.json() == {"resourceType": "Parameters", "parameter": [{"name": "raised", "valueInteger": 0}]}


async def test_each_mdt_gets_one_digest_a_morning(stack: TestClient, tokens: Any) -> None:
    n = notification(stack)
    await teams_known(stack)
    await publish(stack, stored_event())
    await alert_count(stack, tokens, 1)
    [timer] = await eventually(lambda: _digest_timers(n))
    due = datetime.fromisoformat(timer["due"].replace("Z", "+00:00"))
    n.set_clock(FixedClock(due))
    await n.run_timers()
    await n.run_timers()
    found = [a for a in entries(await alerts(stack, tokens)) if a["category"][0]["coding"][0]["code"] == "daily-digest"]
    assert len(found) == 1 and "subject" not in found[0]
    assert found[0]["payload"][0]["contentString"] == (
        f"Daily digest for {due.astimezone(ZoneInfo('Europe/London')).date().isoformat()}: 1 open alert(s) (1 urgent); "
        "0 pathway clock(s) at risk, 0 breached"
    )
    [following] = await _digest_timers(n)
    assert following["due"] > timer["due"]  # tomorrow's is already scheduled


async def _digest_timers(n: Notification) -> list[dict[str, Any]]:
    return [t for t in await n.timers.pending() if t["kind"] == "digest" and t["subject"] == "rj1-lung"]


async def test_escalation_timers_survive_a_restart(settings: Settings, tokens: Any) -> None:
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as first:
        await teams_known(first)
        await publish(first, stored_event())
        [alert] = await alert_count(first, tokens, 1)
    # A new process on the same data: the pending escalation is still there and fires once.
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as second:
        n = notification(second)
        n.set_clock(FixedClock(datetime.now(UTC) + timedelta(minutes=31)))
        await n.run_timers()
        await n.run_timers()
        stored = await n.alerts.get(alert["id"])
        assert stored is not None
        assert [step["to"] for step in stored["escalations"]] == ["deputy-coordinator"]
