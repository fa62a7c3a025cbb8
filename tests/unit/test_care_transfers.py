"""Repatriation as a FHIR Task: the states from requested to transferred (or declined, cancelled), who
moves each, the receiving trust's live list with hours waited, and the 48-hour escalation (per network)
under an injected clock, each step announced as an event."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.care import examples
from shared.app_keys import RUNTIME
from shared.bus import QueueSpec
from shared.clock import FixedClock
from tests.helpers import eventually
from tests.unit.care_support import PATIENT, call, care_of, care_stack, isa, opt_out, outcome  # noqa: F401

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LIST = "/fhir/Task?owner=RRV&status=pending"


def move(state: str, **details: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "state", "valueCode": state},
            *({"name": k, "valueString": v} for k, v in details.items()),
        ],
    }


class Heard:
    """Every transfer.* event on the bus, as a subscriber (notification, a bed-management system) hears it."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)

    async def of(self, n: int) -> list[tuple[str, str, float]]:
        async def enough() -> list[Any] | None:
            return self.events if len(self.events) >= n else None

        await eventually(enough)
        return [(e.type, e.data["state"], e.data["hours_waited"]) for e in self.events]


@pytest.fixture
async def heard(care_stack: TestClient) -> Any:
    bus = care_stack.server.app[RUNTIME].ports.bus
    queue = QueueSpec("test.transfers", ("transfer.#",))
    await bus.declare([queue])
    listener = Heard()
    consumer = await bus.consume(queue, listener, prefetch=10)
    yield listener
    await consumer.stop()


async def test_a_repatriation_moves_through_its_states_with_hours_waited_and_escalates(
    care_stack: TestClient, tokens: Any, heard: Heard
) -> None:
    clock = care_of(care_stack).clock = FixedClock(START)
    status, task, headers = await call(
        care_stack, tokens, "POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RRV")
    )
    assert status == 201, task
    assert headers["Location"] == f"/fhir/Task/{task['id']}"
    assert (task["status"], task["businessStatus"]["coding"][0]["code"]) == ("requested", "requested")
    assert task["requester"]["identifier"]["value"] == "RJ1"
    assert task["authoredOn"] == "2026-12-01T09:00:00Z"
    path = f"/fhir/Task/{task['id']}/$advance"

    # The receiving trust's bed managers see it waiting, in hours, on their live list.
    clock.advance(hours=5)
    status, found, _ = await call(care_stack, tokens, "GET", LIST, "RRV")
    assert status == 200
    [entry] = found["entry"]
    assert entry["resource"]["extension"][-1] == {
        "url": "https://lhcie.london/fhir/StructureDefinition/hours-waited",
        "valueDecimal": 5.0,
    }

    # The receiver identifies the accepting consultant; the sender cannot do that for it.
    status, body, _ = await call(care_stack, tokens, "POST", path, "RJ1", move("consultant-identified", consultant="X"))
    assert (status, body["issue"]) == (
        403,
        [outcome("FORBIDDEN", "forbidden", "Only the receiver moves a transfer to consultant-identified.")],
    )
    status, body, _ = await call(care_stack, tokens, "POST", path, "RRV", move("consultant-identified"))
    assert (status, body["issue"][0]["diagnostics"]) == (422, "consultant-identified needs a consultant")
    status, task, _ = await call(
        care_stack,
        tokens,
        "POST",
        path,
        "RRV",
        move("consultant-identified", consultant="Dr D Orthogeriatrician, GMC 7000001"),
    )
    assert (status, task["status"], task["businessStatus"]["text"]) == (200, "received", "consultant identified")
    status, body, _ = await call(care_stack, tokens, "POST", path, "RRV", move("transport-booked", transport="x"))
    assert (status, body["issue"][0]["code"]) == (403, "forbidden")
    status, body, _ = await call(care_stack, tokens, "POST", path, "RJ1", move("transport-booked", transport="x"))
    assert (status, body["issue"][0]["diagnostics"]) == (
        409,
        "A transfer that is consultant-identified cannot become transport-booked.",
    )
    status, task, _ = await call(care_stack, tokens, "POST", path, "RRV", move("accepted"))
    assert task["status"] == "accepted"

    # No bed by 48 hours after the referral: the transfer escalates, once.
    clock.advance(hours=42, minutes=59)
    assert await care_of(care_stack).run_timers() == 0
    clock.advance(minutes=1)
    assert await care_of(care_stack).run_timers() == 1
    assert await care_of(care_stack).run_timers() == 0
    status, found, _ = await call(care_stack, tokens, "GET", LIST, "RRV")
    assert [e["url"].rsplit("/", 1)[1] for e in found["entry"][0]["resource"]["extension"]] == [
        "clinical-network",
        "hours-waited",
        "escalated",
    ]

    clock.advance(hours=2)
    for org, state, details in (
        ("RRV", "bed-confirmed", {"bed": "Ward 7, bed 12"}),
        ("RJ1", "fit-and-ready", {}),
        ("RJ1", "transport-booked", {"transport": "LAS patient transport 14:00"}),
        ("RJ1", "transferred", {}),
    ):
        status, task, _ = await call(care_stack, tokens, "POST", path, org, move(state, **details))
        assert status == 200, task
    assert task["status"] == "completed"
    assert [n["text"] for n in task["note"]] == [
        "consultant-identified: consultant Dr D Orthogeriatrician, GMC 7000001",
        "bed-confirmed: bed Ward 7, bed 12",
        "transport-booked: transport LAS patient transport 14:00",
    ]
    # Transferred: off the live list, its waiting time fixed.
    status, found, _ = await call(care_stack, tokens, "GET", LIST, "RRV")
    assert found["total"] == 0
    clock.advance(hours=10)
    status, task, _ = await call(care_stack, tokens, "GET", f"/fhir/Task/{task['id']}", "RRV")
    assert task["extension"][1]["valueDecimal"] == 50.0

    assert await heard.of(8) == [
        ("transfer.requested", "requested", 0.0),
        ("transfer.updated", "consultant-identified", 5.0),
        ("transfer.updated", "accepted", 5.0),
        ("transfer.escalated", "accepted", 48.0),
        ("transfer.updated", "bed-confirmed", 50.0),
        ("transfer.updated", "fit-and-ready", 50.0),
        ("transfer.updated", "transport-booked", 50.0),
        ("transfer.updated", "transferred", 50.0),
    ]
    assert heard.events[3].data["reason"] == "waiting more than 48 hours"
    assert heard.events[3].data["receiver"] == "RRV"


async def test_a_network_sets_its_own_escalation_threshold(
    care_stack: TestClient, tokens: Any, heard: Heard, monkeypatch: pytest.MonkeyPatch
) -> None:
    care = care_of(care_stack)
    care.settings = care.transfers.settings = care.settings.model_copy(
        update={"network_escalation_hours": {"north-london-critical-care": 24.0}}
    )
    clock = care.clock = FixedClock(START)
    status, task, _ = await call(
        care_stack,
        tokens,
        "POST",
        "/fhir/Task",
        "RJ1",
        examples.repatriation(PATIENT, "RRV", network="north-london-critical-care"),
    )
    assert status == 201
    status, other, _ = await call(
        care_stack, tokens, "POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RRV", network=None)
    )
    clock.advance(hours=24)
    assert await care.run_timers() == 1
    events = await heard.of(3)
    assert events[-1] == ("transfer.escalated", "requested", 24.0)
    assert heard.events[-1].data["task_id"] == task["id"]
    # Declined with a reason: off the list, no escalation later.
    status, declined, _ = await call(
        care_stack,
        tokens,
        "POST",
        f"/fhir/Task/{other['id']}/$advance",
        "RRV",
        move("declined", reason="No rehabilitation bed; patient lives out of area"),
    )
    assert (status, declined["status"], declined["statusReason"]["text"]) == (
        200,
        "rejected",
        "No rehabilitation bed; patient lives out of area",
    )
    clock.advance(hours=48)
    assert await care.run_timers() == 0


async def test_a_transfer_is_sent_only_where_the_policy_allows(care_stack: TestClient, tokens: Any) -> None:
    # RAL has no ISA with RJ1: the form is not disclosed to it.
    status, body, _ = await call(care_stack, tokens, "POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RAL"))
    assert (status, body["issue"][0]["diagnostics"].split(" (reference")[0]) == (
        403,
        "Access denied: not permitted by the sharing policy",
    )
    await isa(care_stack, tokens, "RAL", "RJ1", ("transfer-of-care",))
    status, task, _ = await call(care_stack, tokens, "POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RAL"))
    assert status == 201
    # The patient opted out of transfers of care being shared.
    await opt_out(care_stack, tokens, PATIENT, "transfer-of-care")
    status, body, _ = await call(care_stack, tokens, "POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RRV"))
    assert status == 403
    # Third parties do not see transfers at all.
    status, body, _ = await call(care_stack, tokens, "GET", f"/fhir/Task/{task['id']}", "RPY")
    assert status == 404
    status, body, _ = await call(care_stack, tokens, "GET", "/fhir/Task?owner=RRV", "RPY")
    assert status == 403


async def test_an_invalid_request_is_refused_with_one_issue_per_problem(care_stack: TestClient, tokens: Any) -> None:
    task = examples.repatriation("123", "RJ1")
    task["contained"][0]["item"] = task["contained"][0]["item"][1:]
    status, body, _ = await call(care_stack, tokens, "POST", "/fhir/Task", "RJ1", task)
    assert status == 422
    assert [i["expression"][0] for i in body["issue"]] == [
        "Task.for.identifier",
        "Task.owner.identifier",
        "Task.contained[0].item.where(linkId='specialty')",
    ]
    status, body, _ = await call(care_stack, tokens, "GET", "/fhir/Questionnaire/repatriation", "RRV")
    assert (status, body["url"], body["item"][0]["linkId"]) == (
        200,
        "https://lhcie.london/fhir/Questionnaire/repatriation",
        "specialty",
    )
