"""Bed managers' alerts for repatriations (issue 18): a transfer requested into a trust alerts that trust's
bed managers in notification's alert feed; a transfer still waiting at its network's threshold (48 hours
from referral by default) escalates that alert, as an MDT alert escalates; the transfer's end resolves it.
Driven by the care service's events, under an injected clock; only the receiving trust's bed managers see
the alerts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.care import examples
from services.care.routes import CARE
from shared.clock import FixedClock
from shared.config import Settings
from tests.helpers import eventually, settled
from tests.unit.test_notification_alerts import entries, notification

PATIENT = "9000000017"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
FHIR = {"Content-Type": "application/fhir+json"}
BEDS = "/fhir/Communication?recipient=Organization/RRV"


@pytest.fixture(autouse=True)
def no_demo_care(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHCIE_CARE_DEMO_DATA", "false")
    monkeypatch.setenv("LHCIE_CARE_TIMER_TICK_SECONDS", "3600")  # the test fires care's timers itself


async def bed_alerts(stack: TestClient, tokens: Any, org: str = "RRV", role: str = "bed-manager") -> Any:
    response = await stack.get(BEDS, headers=tokens.headers(org, role))
    return response.status, await response.json()


def view(alert: dict[str, Any]) -> tuple[str, str, str, list[str]]:
    state = next(e["valueCode"] for e in alert["extension"] if e["url"].endswith("alert-state"))
    return alert["status"], alert["priority"], state, [n["text"] for n in alert.get("note", [])]


async def test_bed_managers_are_alerted_and_the_waiting_transfer_escalates_at_its_threshold(
    stack: TestClient, tokens: Any, settings: Settings
) -> None:
    care = stack.server.app[CARE]
    care.clock = FixedClock(START)
    notification(stack).set_clock(FixedClock(START))
    await eventually(lambda: care.policy.agreements_between("RJ1", "RRV"))
    response = await stack.post(
        "/fhir/Task", json=examples.repatriation(PATIENT, "RRV"), headers={**FHIR, **tokens.headers("RJ1", "clinician")}
    )
    assert response.status == 201, await response.text()
    task = await response.json()

    async def raised() -> list[dict[str, Any]]:
        return entries((await bed_alerts(stack, tokens))[1])

    [alert] = await eventually(raised)
    assert view(alert) == ("in-progress", "urgent", "raised", [])
    assert alert["recipient"] == [{"reference": "Organization/RRV"}]
    assert alert["about"] == [{"reference": f"Task/{task['id']}"}]
    assert alert["payload"][0]["contentString"] == "Repatriation requested from RJ1 (south-london-trauma)"
    assert {"url": "https://lhcie.london/fhir/StructureDefinition/alert-audience", "valueCode": "bed-manager"} in alert[
        "extension"
    ]
    # Only the receiving trust's bed managers: not its clinicians, not another trust's bed managers.
    assert (await bed_alerts(stack, tokens, role="clinician"))[0] == 403
    assert (await bed_alerts(stack, tokens, org="RJ1"))[0] == 403
    response = await stack.get(
        "/fhir/Communication?recipient=Organization/RJ1", headers=tokens.headers("RJ1", "bed-manager")
    )
    assert response.status == 200 and entries(await response.json()) == []
    # The bed managers' list in care: the transfers coming in (and not the ones going out).
    response = await stack.get("/fhir/Task?owner=RRV", headers=tokens.headers("RRV", "bed-manager"))
    assert [e["resource"]["id"] for e in (await response.json())["entry"]] == [task["id"]]
    response = await stack.get("/fhir/Task?requester=RRV", headers=tokens.headers("RRV", "bed-manager"))
    assert response.status == 403
    # A bed manager acknowledges it, which does not stop the transfer's own clock.
    response = await stack.post(
        f"/fhir/Communication/{alert['id']}/$acknowledge", headers=tokens.headers("RRV", "bed-manager")
    )
    assert response.status == 200, await response.text()

    # One minute short of 48 hours nothing escalates (barrier: every event handled); at 48 hours it does,
    # reopening the acknowledged alert with a higher priority.
    care.clock.advance(hours=47, minutes=59)
    assert await care.run_timers() == 0
    await settled(settings.data_dir)
    assert view((await raised())[0])[:3] == ("completed", "urgent", "acknowledged")
    care.clock.advance(minutes=1)
    assert await care.run_timers() == 1

    async def escalated() -> dict[str, Any] | None:
        [found] = await raised()
        return found if view(found)[2] == "escalated" else None

    found = await eventually(escalated)
    assert view(found) == (
        "in-progress",
        "asap",
        "escalated",
        ["Escalated to bed-manager: waiting more than 48 hours", "Acknowledged"],
    )

    # Transferred: the alert is resolved.
    path = f"/fhir/Task/{task['id']}/$advance"
    for org, state, detail in (
        ("RRV", "consultant-identified", {"consultant": "Dr D, GMC 7000001"}),
        ("RRV", "accepted", {}),
        ("RRV", "bed-confirmed", {"bed": "Ward 7, bed 12"}),
        ("RJ1", "fit-and-ready", {}),
        ("RJ1", "transport-booked", {"transport": "LAS 14:00"}),
        ("RJ1", "transferred", {}),
    ):
        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "state", "valueCode": state},
                *({"name": k, "valueString": v} for k, v in detail.items()),
            ],
        }
        response = await stack.post(path, json=body, headers={**FHIR, **tokens.headers(org, "clinician")})
        assert response.status == 200, await response.text()

    async def resolved() -> dict[str, Any] | None:
        [found] = await raised()
        return found if view(found)[2] == "resolved" else None

    assert view(await eventually(resolved))[:3] == ("completed", "asap", "resolved")


async def test_bed_managers_follow_their_alerts_live(stack: TestClient, tokens: Any) -> None:
    response = await stack.post(
        "/alerts/stream-token?team=Organization/RRV", headers=tokens.headers("RRV", "bed-manager")
    )
    assert response.status == 200
    response = await stack.post(
        "/alerts/stream-token?team=Organization/RRV", headers=tokens.headers("RJ1", "bed-manager")
    )
    assert response.status == 403
