"""Cancer pathways and their clocks (CWT v12.1: 28-day FDS, 31-day, 62-day) with an injected clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from services.notification import waiting_times
from services.notification.rules import load_rules
from shared.clock import FixedClock
from tests.helpers import eventually
from tests.unit.test_notification_alerts import (
    PATHOLOGY,
    REFERRAL,
    alerts,
    entries,
    notification,
    publish,
    stored_event,
    teams_known,
)

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a referral received on Monday 2 March 2026
COORDINATOR = {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}
RULES = load_rules()


def clock_parts(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for ext in resource["extension"]:
        if ext["url"].endswith("cwt-clock"):
            parts = {p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in ext["extension"]}
            out[parts.pop("clock")] = parts
    return out


async def open_pathway(
    stack: TestClient, tokens: Any, clock: FixedClock, patient: str = "9000000009"
) -> dict[str, Any]:
    notification(stack).set_clock(clock)
    await teams_known(stack)
    await publish(stack, stored_event(type_code=REFERRAL, stored_at=START, patient=patient))

    async def found() -> list[dict[str, Any]]:
        response = await stack.get("/fhir/EpisodeOfCare?team=CareTeam/rj1-lung", headers=tokens.headers(**COORDINATOR))
        return [p for p in entries(await response.json()) if p["patient"]["identifier"]["value"] == patient]

    [pathway] = await eventually(found)
    return pathway


async def record(stack: TestClient, tokens: Any, pathway_id: str, event: str, on: date) -> dict[str, Any]:
    response = await stack.post(
        f"/fhir/EpisodeOfCare/{pathway_id}/$record-event",
        headers=tokens.headers(**COORDINATOR),
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "event", "valueCode": event}, {"name": "date", "valueDate": on.isoformat()}],
        },
    )
    assert response.status == 200, await response.text()
    return await response.json()


def parts(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Each ``name`` parameter of a Parameters resource as {part name: value}."""
    return [
        {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
        for parameter in parameters["parameter"]
        if parameter["name"] == name
    ]


def test_clock_days_pauses_and_risk_thresholds() -> None:
    clock = waiting_times.new_clock(date(2026, 3, 2))
    fds, dtt, rtt = RULES.clocks["fds"], RULES.clocks["dtt"], RULES.clocks["rtt"]
    assert waiting_times.day(clock, date(2026, 3, 2)) == 0  # the day of receipt is day 0
    assert [waiting_times.risk(clock, fds, date(2026, 3, 2) + timedelta(days=d)) for d in (20, 21, 28, 29)] == [
        "on-track",
        "at-risk",
        "at-risk",
        "breached",
    ]
    assert [waiting_times.risk(clock, dtt, date(2026, 3, 2) + timedelta(days=d)) for d in (23, 24, 31, 32)] == [
        "on-track",
        "at-risk",
        "at-risk",
        "breached",
    ]
    assert [waiting_times.risk(clock, rtt, date(2026, 3, 2) + timedelta(days=d)) for d in (51, 52, 62, 63)] == [
        "on-track",
        "at-risk",
        "at-risk",
        "breached",
    ]
    waiting_times.pause(clock, date(2026, 3, 12))
    assert waiting_times.day(clock, date(2026, 3, 15)) == 10  # paused days do not count
    waiting_times.resume(clock, date(2026, 3, 17))
    assert waiting_times.day(clock, date(2026, 3, 20)) == 13
    waiting_times.stop(clock, date(2026, 3, 30))
    assert waiting_times.day(clock, date(2026, 6, 1)) == 23  # a stopped clock stays at its stop date
    assert waiting_times.risk(clock, fds, date(2026, 6, 1)) == "met"
    assert [waiting_times.bucket(d) for d in (0, 28, 29, 62, 63, 104, 105)] == [
        "0-28",
        "0-28",
        "29-62",
        "29-62",
        "63-104",
        "63-104",
        "over-104",
    ]


async def test_a_referral_opens_a_pathway_with_the_28_and_62_day_clocks(stack: TestClient, tokens: Any) -> None:
    clock = FixedClock(START + timedelta(days=10))
    pathway = await open_pathway(stack, tokens, clock)
    assert pathway["status"] == "active"
    assert pathway["period"] == {"start": "2026-03-02"}
    assert pathway["team"] == [{"reference": "CareTeam/rj1-lung"}]
    assert clock_parts(pathway) == {
        "fds": {"start": "2026-03-02", "day": 10, "target": 28, "risk": "on-track"},
        "rtt": {"start": "2026-03-02", "day": 10, "target": 62, "risk": "on-track"},
    }
    # A later document for the patient attaches, and its alert shows the pathway's day counters.
    await publish(stack, stored_event(type_code=PATHOLOGY))

    async def pathology_alert() -> dict[str, Any] | None:
        found = [
            a for a in entries(await alerts(stack, tokens)) if a["payload"][0]["contentString"].startswith("New Histo")
        ]
        return found[0] if found else None

    alert = await eventually(pathology_alert)
    assert alert["partOf"] == [{"reference": f"EpisodeOfCare/{pathway['id']}"}]
    assert {k: v["day"] for k, v in clock_parts(alert).items()} == {"fds": 10, "rtt": 10}


async def test_breach_risk_fires_on_day_21_of_28_and_52_of_62_once(stack: TestClient, tokens: Any) -> None:
    clock = FixedClock(START)
    n = notification(stack)
    await open_pathway(stack, tokens, clock)
    clock.at = datetime(2026, 3, 22, 23, 0, tzinfo=UTC)  # day 20 (the referral alert's escalations fire too)
    await n.run_timers()
    assert await breach_texts(stack, tokens) == []
    clock.at = datetime(2026, 3, 23, 0, 30, tzinfo=UTC)  # day 21
    await n.run_timers()
    await n.run_timers()
    assert await breach_texts(stack, tokens) == ["Breach risk: day 21 of 28 (28-day Faster Diagnosis Standard)"]
    clock.at = datetime(2026, 4, 22, 23, 0, tzinfo=UTC)  # day 51
    await n.run_timers()
    assert len(await breach_texts(stack, tokens)) == 1
    clock.at = datetime(2026, 4, 23, 0, 30, tzinfo=UTC)  # day 52
    await n.run_timers()
    assert await breach_texts(stack, tokens) == [
        "Breach risk: day 21 of 28 (28-day Faster Diagnosis Standard)",
        "Breach risk: day 52 of 62 (62-day referral to first definitive treatment)",
    ]
    breach_ids = {
        a["id"] for a in entries(await alerts(stack, tokens)) if a["category"][0]["coding"][0]["code"] == "breach-risk"
    }

    async def audited() -> set[str] | None:
        # Alerts without a document behind them are announced (alert.raised) and so audited too.
        found = set()
        for alert_id in breach_ids:
            response = await stack.get(
                f"/fhir/AuditEvent?entity=Communication/{alert_id}", headers=tokens.headers("RJ1", "dcc-admin")
            )
            if (await response.json())["entry"]:
                found.add(alert_id)
        return found if found == breach_ids else None

    await eventually(audited)


async def breach_texts(stack: TestClient, tokens: Any) -> list[str]:
    return sorted(
        a["payload"][0]["contentString"]
        for a in entries(await alerts(stack, tokens))
        if a["category"][0]["coding"][0]["code"] == "breach-risk"
    )


async def test_recorded_events_stop_start_and_pause_clocks(stack: TestClient, tokens: Any) -> None:
    clock = FixedClock(START + timedelta(days=40))
    n = notification(stack)
    pathway = await open_pathway(stack, tokens, clock)
    # The FDS clock stops when the patient is told (a recorded event), never on a document alone.
    told = await record(stack, tokens, pathway["id"], "diagnosis-communicated", date(2026, 3, 20))
    assert clock_parts(told)["fds"] == {
        "start": "2026-03-02",
        "day": 18,
        "target": 28,
        "risk": "met",
        "stop": "2026-03-20",
    }
    decided = await record(stack, tokens, pathway["id"], "decision-to-treat", date(2026, 4, 1))
    assert clock_parts(decided)["dtt"] == {"start": "2026-04-01", "day": 10, "target": 31, "risk": "on-track"}
    await record(stack, tokens, pathway["id"], "clock-pause", date(2026, 4, 5))
    resumed = await record(stack, tokens, pathway["id"], "clock-resume", date(2026, 4, 8))
    assert clock_parts(resumed)["dtt"]["day"] == 7
    assert clock_parts(resumed)["rtt"]["day"] == 37
    # The FDS breach-risk check at day 21 finds its clock stopped: nothing is raised.
    clock.at = datetime(2026, 3, 23, 1, 0, tzinfo=UTC) + timedelta(days=30)
    await n.run_timers()
    assert not [a for a in entries(await alerts(stack, tokens)) if "28-day" in a["payload"][0]["contentString"]]
    treated = await record(stack, tokens, pathway["id"], "first-definitive-treatment", date(2026, 4, 20))
    assert treated["status"] == "finished"
    assert {k: v["risk"] for k, v in clock_parts(treated).items()} == {"fds": "met", "rtt": "met", "dtt": "met"}
    again = await stack.post(
        f"/fhir/EpisodeOfCare/{pathway['id']}/$record-event",
        headers=tokens.headers(**COORDINATOR),
        json={"resourceType": "Parameters", "parameter": [{"name": "event", "valueCode": "clock-pause"}]},
    )
    assert again.status == 409
    unknown = await stack.post(
        f"/fhir/EpisodeOfCare/{pathway['id']}/$record-event",
        headers=tokens.headers(**COORDINATOR),
        json={"resourceType": "Parameters", "parameter": [{"name": "event", "valueCode": "x"}]},
    )
    assert unknown.status == 400


async def test_tracking_list_buckets_and_csv(stack: TestClient, tokens: Any) -> None:
    clock = FixedClock(START + timedelta(days=30))
    first = await open_pathway(stack, tokens, clock, patient="9000000009")
    await open_pathway(stack, tokens, clock, patient="9434765919")
    await record(stack, tokens, first["id"], "decision-to-treat", date(2026, 3, 25))
    response = await stack.get(
        "/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung", headers=tokens.headers(**COORDINATOR)
    )
    assert response.content_type == "application/fhir+json"
    report = await response.json()
    assert report["resourceType"] == "Parameters"
    buckets = {b["days"]: (b["withDecisionToTreat"], b["withoutDecisionToTreat"]) for b in parts(report, "bucket")}
    assert buckets == {"0-28": (0, 0), "29-62": (1, 1), "63-104": (0, 0), "over-104": (0, 0)}
    rows = parts(report, "row")
    assert sorted(r["patient"]["value"] for r in rows) == ["9000000009", "9434765919"]
    assert {r["day"] for r in rows} == {30}
    passed = [p["valueReference"]["reference"] for p in report["parameter"] if p["name"] == "passedDay28Last7Days"]
    assert sorted(passed) == sorted(r["pathway"]["reference"] for r in rows)
    assert parts(report, "newReferrals") == []  # opened 30 days ago: not new this week
    csv = await stack.get(
        "/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung&_format=csv", headers=tokens.headers(**COORDINATOR)
    )
    assert csv.content_type == "text/csv"
    lines = (await csv.text()).splitlines()
    assert lines[0] == "pathway,patient,tumour_site,route,start,day,bucket,decision_to_treat"
    assert sorted(line.split(",")[5:8] for line in lines[1:]) == [["30", "29-62", "False"], ["30", "29-62", "True"]]


async def test_a_transfer_keeps_the_clock_and_alerts_the_receiving_mdt(stack: TestClient, tokens: Any) -> None:
    clock = FixedClock(START + timedelta(days=12))
    pathway = await open_pathway(stack, tokens, clock)
    response = await stack.post(
        f"/fhir/EpisodeOfCare/{pathway['id']}/$transfer",
        headers=tokens.headers(**COORDINATOR),
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "team", "valueReference": {"reference": "CareTeam/rrv-haematology"}}],
        },
    )
    assert response.status == 200, await response.text()
    moved = await response.json()
    assert moved["team"] == [{"reference": "CareTeam/rrv-haematology"}]
    assert clock_parts(moved)["rtt"]["day"] == 12
    [alert] = entries(await alerts(stack, tokens, team="rrv-haematology", org="RRV"))
    assert alert["category"][0]["coding"][0]["code"] == "transfer-in"
    assert alert["priority"] == "urgent"
    assert {k: v["day"] for k, v in clock_parts(alert).items()} == {"fds": 12, "rtt": 12}
    gone = await stack.get(f"/fhir/EpisodeOfCare/{pathway['id']}", headers=tokens.headers(**COORDINATOR))
    assert gone.status == 403  # it belongs to the receiving MDT now


async def test_a_pathway_can_be_registered_explicitly_and_only_once(stack: TestClient, tokens: Any) -> None:
    notification(stack).set_clock(FixedClock(START + timedelta(days=3)))
    await teams_known(stack)
    body = {
        "resourceType": "EpisodeOfCare",
        "status": "active",
        "patient": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}},
        "team": [{"reference": "CareTeam/rj1-lung"}],
        "period": {"start": "2026-03-02"},
        "extension": [
            {
                "url": "https://lhcie.london/fhir/StructureDefinition/cwt-referral-route",
                "valueCode": "consultant-upgrade",
            }
        ],
    }
    response = await stack.post(
        "/fhir/EpisodeOfCare",
        json=body,
        headers={"Content-Type": "application/fhir+json", **tokens.headers(**COORDINATOR)},
    )
    assert response.status == 201, await response.text()
    created = await response.json()
    assert response.headers["Location"] == f"/fhir/EpisodeOfCare/{created['id']}"
    assert clock_parts(created) == {"rtt": {"start": "2026-03-02", "day": 3, "target": 62, "risk": "on-track"}}
    again = await stack.post(
        "/fhir/EpisodeOfCare",
        json=body,
        headers={"Content-Type": "application/fhir+json", **tokens.headers(**COORDINATOR)},
    )
    assert again.status == 409
    bad = {**body, "patient": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "1234567890"}}}
    invalid = await stack.post(
        "/fhir/EpisodeOfCare",
        json=bad,
        headers={"Content-Type": "application/fhir+json", **tokens.headers(**COORDINATOR)},
    )
    assert invalid.status == 422
    assert (await invalid.json())["issue"][0]["expression"] == ["EpisodeOfCare.patient.identifier"]
