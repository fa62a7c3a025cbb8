"""Correcting a recorded pathway event's date: the new date wins, the clocks are replayed as if it had been
recorded right, the correction stays in the event's history and is audited; and the tracking list is a
FHIR Parameters resource an independent R4 validator accepts."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.clock import FixedClock
from shared.events import RoutingKey
from tests.fhir_validation import fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.unit.test_notification_pathways import COORDINATOR, START, clock_parts, open_pathway, parts, record
from tests.unit.test_notification_security import watch  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("validated_answers")


def recorded_events(pathway: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for ext in pathway["extension"]:
        if ext["url"].endswith("cwt-event"):
            event: dict[str, Any] = {}
            for part in ext["extension"]:
                value = next(v for k, v in part.items() if k.startswith("value"))
                event.setdefault(part["url"], []).append(value) if part[
                    "url"
                ] == "correctedFrom" else event.__setitem__(part["url"], value)
            out.append(event)
    return out


async def post_event(stack: TestClient, tokens: Any, pathway_id: str, *parameters: dict[str, Any]) -> Any:
    return await stack.post(
        f"/fhir/EpisodeOfCare/{pathway_id}/$record-event",
        headers=tokens.headers(**COORDINATOR),
        json={"resourceType": "Parameters", "parameter": list(parameters)},
    )


async def test_a_second_record_of_a_one_off_event_corrects_its_date(stack: TestClient, tokens: Any, watch: Any) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=40)))
    told = await record(stack, tokens, pathway["id"], "diagnosis-communicated", date(2026, 3, 25))
    assert clock_parts(told)["fds"]["day"] == 23
    invoked = await watch(RoutingKey.OPERATION_INVOKED)
    # Recorded a week late by mistake: recording it again with the right date corrects it (it used to keep
    # the first date silently).
    response = await post_event(
        stack,
        tokens,
        pathway["id"],
        {"name": "event", "valueCode": "diagnosis-communicated"},
        {"name": "date", "valueDate": "2026-03-18"},
        {"name": "reason", "valueString": "typed the clinic letter's date"},
    )
    assert response.status == 200, await response.text()
    corrected = await response.json()
    assert clock_parts(corrected)["fds"] == {
        "start": "2026-03-02",
        "day": 16,
        "target": 28,
        "risk": "met",
        "stop": "2026-03-18",
    }
    assert recorded_events(corrected) == [
        {
            "id": "1",
            "event": "diagnosis-communicated",
            "date": "2026-03-18",
            "recordedBy": "mdt-coordinator@RJ1",
            "correctedFrom": ["2026-03-25"],
        }
    ]
    [audited] = [e.data for e in await invoked.events()]
    assert (audited["operation"], audited["target"], audited["outcome"]) == (
        "$record-event",
        f"EpisodeOfCare/{pathway['id']}",
        "success",
    )
    assert audited["detail"] == (
        "diagnosis-communicated corrected from 2026-03-25 to 2026-03-18: typed the clinic letter's date"
    )
    assert audited["actor"]["subject"] == "mdt-coordinator@RJ1"
    # The same record again changes nothing and audits nothing.
    again = await record(stack, tokens, pathway["id"], "diagnosis-communicated", date(2026, 3, 18))
    assert recorded_events(again) == recorded_events(corrected)
    assert await invoked.events() == []


async def test_a_corrected_date_replays_the_clocks_in_date_order(stack: TestClient, tokens: Any) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=40)))
    await record(stack, tokens, pathway["id"], "decision-to-treat", date(2026, 4, 1))
    paused = await record(stack, tokens, pathway["id"], "clock-pause", date(2026, 4, 5))
    await record(stack, tokens, pathway["id"], "clock-resume", date(2026, 4, 8))
    assert clock_parts(paused)["dtt"]["start"] == "2026-04-01"
    # The decision was taken on 28 March: the 31-day clock starts then, the pause still counts.
    moved = await record(stack, tokens, pathway["id"], "decision-to-treat", date(2026, 3, 28))
    assert clock_parts(moved)["dtt"] == {"start": "2026-03-28", "day": 11, "target": 31, "risk": "on-track"}
    assert clock_parts(moved)["rtt"]["day"] == 37
    # A pause happens more than once, so a second pause is a new record; its date is corrected by naming it.
    [pause] = [e for e in recorded_events(moved) if e["event"] == "clock-pause"]
    response = await post_event(
        stack,
        tokens,
        pathway["id"],
        {"name": "event", "valueCode": "clock-pause"},
        {"name": "date", "valueDate": "2026-04-06"},
        {"name": "corrects", "valueString": pause["id"]},
    )
    assert response.status == 200, await response.text()
    assert clock_parts(await response.json())["dtt"]["day"] == 12  # paused two days, not three
    wrong = await post_event(
        stack,
        tokens,
        pathway["id"],
        {"name": "event", "valueCode": "clock-resume"},
        {"name": "date", "valueDate": "2026-04-06"},
        {"name": "corrects", "valueString": pause["id"]},
    )
    assert wrong.status == 400
    assert "corrects" in (await wrong.json())["issue"][0]["diagnostics"]


async def test_a_finished_pathways_closing_date_can_be_corrected(stack: TestClient, tokens: Any) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=80)))
    treated = await record(stack, tokens, pathway["id"], "first-definitive-treatment", date(2026, 5, 2))
    assert treated["status"] == "finished"
    assert clock_parts(treated)["rtt"]["risk"] == "met"
    late = await record(stack, tokens, pathway["id"], "first-definitive-treatment", date(2026, 5, 4))
    assert late["status"] == "finished"
    assert clock_parts(late)["rtt"] == {
        "start": "2026-03-02",
        "day": 63,
        "target": 62,
        "risk": "breached",
        "stop": "2026-05-04",
    }
    # Any new event on a finished pathway is still refused.
    refused = await post_event(stack, tokens, pathway["id"], {"name": "event", "valueCode": "clock-pause"})
    assert refused.status == 409


async def test_the_tracking_list_is_a_fhir_parameters_resource(stack: TestClient, tokens: Any) -> None:
    clock = FixedClock(START + timedelta(days=3))
    pathway = await open_pathway(stack, tokens, clock)
    response = await stack.get(
        "/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung", headers=tokens.headers(**COORDINATOR)
    )
    assert response.status == 200
    report = await response.json()  # validated by the independent R4 validator (validated_answers)
    [row] = parts(report, "row")
    assert row["pathway"] == {"reference": f"EpisodeOfCare/{pathway['id']}"}
    assert (row["day"], row["bucket"], row["decisionToTreat"], row["tumourSite"]) == (3, "0-28", False, "lung")
    assert parts(report, "newReferrals") == [{"route": "urgent-suspected-cancer", "count": 1}]
    xml = await stack.get(
        "/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung&_format=xml", headers=tokens.headers(**COORDINATOR)
    )
    assert xml.content_type == "application/fhir+xml"
    assert "<Parameters" in await xml.text()
