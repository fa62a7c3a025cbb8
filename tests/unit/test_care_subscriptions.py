"""Care plan changes reach their subscribers (issue 18): a GP's or ambulance service's system subscribes to
the careplan-changed topic (Subscriptions Backport, R4 form) by rest-hook or by server-sent events, and
hears of each version others may see (never a draft) when its organisation may read the plan for
end-of-life care; an organisation without such an ISA hears nothing. Every notification is validated by
the independent R4 validator."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.care import examples
from services.notification.subscriptions import (
    CAREPLAN_TOPIC,
    CHANNEL_SYSTEM,
    CHANNEL_TYPE_URL,
    FILTER_URL,
    PAYLOAD_URL,
    SECRET_URL,
    STATUS_PROFILE,
    status_fields,
)
from shared.clock import FixedClock
from shared.config import Settings
from tests.fhir_validation import Validator, fhir_validator, validated_answers  # noqa: F401  (fixtures)
from tests.helpers import eventually, settled
from tests.unit.test_notification_alerts import notification
from tests.unit.test_notification_subscriptions import FHIR, Receiver, deliver_until

PATIENT = "9000000017"
SECRET = "a-shared-secret-of-some-length"
pytestmark = pytest.mark.usefixtures("validated_answers")


@pytest.fixture(autouse=True)
def receivers_on_loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHCIE_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("LHCIE_CARE_DEMO_DATA", "false")


@pytest.fixture
async def receivers() -> AsyncIterator[dict[str, tuple[Receiver, str]]]:
    """Two hospital systems' webhooks on real local HTTP servers: RRV's (an ISA with RJ1) and RAL's (none)."""
    made: dict[str, tuple[Receiver, str]] = {}
    servers = []
    for org in ("RRV", "RAL"):
        got = Receiver(secret=SECRET)
        app = web.Application()
        app.router.add_post("/hook", got.hook)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        made[org] = (got, f"http://127.0.0.1:{server.port}/hook")
    yield made
    for server in servers:
        await server.close()


def careplan_subscription(*, endpoint: str | None = None, patient: str | None = PATIENT) -> dict[str, Any]:
    criteria = f"CarePlan?patient=https://fhir.nhs.uk/Id/nhs-number|{patient}" if patient else "CarePlan?"
    channel: dict[str, Any] = {
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": "id-only"}]},
    }
    if endpoint:
        channel.update({"type": "rest-hook", "endpoint": endpoint})
    else:
        channel.update(
            {
                "type": "message",
                "_type": {
                    "extension": [{"url": CHANNEL_TYPE_URL, "valueCoding": {"system": CHANNEL_SYSTEM, "code": "sse"}}]
                },
            }
        )
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "End-of-life plans of our patients",
        "criteria": CAREPLAN_TOPIC,
        "_criteria": {"extension": [{"url": FILTER_URL, "valueString": criteria}]},
        "channel": channel,
        "extension": [{"url": SECRET_URL, "valueString": SECRET}],
    }


async def subscribe(stack: TestClient, tokens: Any, org: str, resource: dict[str, Any]) -> dict[str, Any]:
    response = await stack.post("/fhir/Subscription", json=resource, headers={**FHIR, **tokens.headers(org)})
    assert response.status == 201, await response.text()
    return await response.json()


async def write_plan(
    stack: TestClient, tokens: Any, plan: dict[str, Any], *, plan_id: str | None = None, version: int = 0
) -> dict[str, Any]:
    headers = {**FHIR, **tokens.headers("RJ1", "clinician")}
    if plan_id:
        response = await stack.put(
            f"/fhir/CarePlan/{plan_id}", json=plan, headers={**headers, "If-Match": f'W/"{version}"'}
        )
    else:
        response = await stack.post("/fhir/CarePlan", json=plan, headers=headers)
    assert response.status in (200, 201), await response.text()
    return await response.json()


def notified(bundles: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(event number, focus) of each event notification, from the status Parameters first in each bundle."""
    out = []
    for bundle in bundles:
        status = bundle["entry"][0]["resource"]
        assert status["resourceType"] == "Parameters" and status["meta"]["profile"] == [STATUS_PROFILE]
        fields = status_fields(status)
        if fields["type"] == "event-notification":
            out += [(e["event-number"], e["focus"]["reference"]) for e in fields["notification-event"]]
    return out


async def read_stream(response: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    event_id = ""
    while len(events) < n:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            events.append((event_id, json.loads(line[6:])))
    return events


async def test_a_plan_change_reaches_rest_hook_and_sse_subscribers_with_an_isa_and_no_one_else(
    stack: TestClient,
    tokens: Any,
    settings: Settings,
    receivers: dict[str, tuple[Receiver, str]],
    fhir_validator: Validator,
) -> None:
    clock = FixedClock(datetime.now(UTC))
    notification(stack).set_clock(clock)
    n = notification(stack)
    await eventually(lambda: n.policy.agreements_between("RJ1", "RRV"))
    await eventually(lambda: n.policy.organisation("RAL"))
    rrv, rrv_hook = receivers["RRV"]
    ral, ral_hook = receivers["RAL"]
    hook = await subscribe(stack, tokens, "RRV", careplan_subscription(endpoint=rrv_hook))
    assert hook["criteria"] == CAREPLAN_TOPIC and hook["status"] == "requested"
    sse = await subscribe(stack, tokens, "RRV", careplan_subscription())
    assert sse["status"] == "active" and "endpoint" not in sse["channel"]
    other_patient = await subscribe(
        stack, tokens, "RRV", careplan_subscription(endpoint=rrv_hook, patient="9000000009")
    )
    no_isa = await subscribe(stack, tokens, "RAL", careplan_subscription(endpoint=ral_hook, patient=None))

    # A draft is its author's: nobody hears of it. Completed, it is announced; so is each later version.
    draft = await write_plan(stack, tokens, examples.care_plan(PATIENT, status="draft"))
    await write_plan(stack, tokens, examples.care_plan(PATIENT), plan_id=draft["id"], version=1)
    await write_plan(
        stack,
        tokens,
        examples.care_plan(PATIENT, cpr="cpr-recommended", reason="CPR wish changed"),
        plan_id=draft["id"],
        version=2,
    )
    expected = [("1", f"CarePlan/{draft['id']}/_history/2"), ("2", f"CarePlan/{draft['id']}/_history/3")]

    await deliver_until(stack, clock, lambda: len(notified(rrv.received)) == 2 and len(ral.received) == 1)
    assert notified(rrv.received) == expected
    assert rrv.bad_signatures == 0
    for bundle in rrv.received:
        assert fhir_validator.errors(bundle) == []
        assert bundle["meta"]["profile"] == [
            "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4"
        ]
    assert rrv.received[-1]["entry"][1] == {
        "fullUrl": f"CarePlan/{draft['id']}",
        "request": {"method": "PUT", "url": f"CarePlan/{draft['id']}"},
        "response": {"status": "200"},
    }

    # The SSE subscriber reads the same notifications on its own connection, and resumes after the last.
    async with stack.get(f"/fhir/Subscription/{sse['id']}/$stream", headers=tokens.headers("RRV")) as stream:
        assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
        got = await read_stream(stream, 2)
    assert [i for i, _ in got] == ["1", "2"]
    assert notified([b for _, b in got]) == expected
    assert all(fhir_validator.errors(b) == [] for _, b in got)
    async with stack.get(
        f"/fhir/Subscription/{sse['id']}/$stream", headers={**tokens.headers("RRV"), "Last-Event-ID": "1"}
    ) as stream:
        [(again, _)] = await read_stream(stream, 1)
    assert again == "2"
    # Only its own organisation's system may read it; a rest-hook subscription has no stream.
    response = await stack.get(f"/fhir/Subscription/{sse['id']}/$stream", headers=tokens.headers("RAL"))
    assert response.status == 404
    response = await stack.get(f"/fhir/Subscription/{hook['id']}/$stream", headers=tokens.headers("RRV"))
    assert response.status == 422

    # Barrier: every event handled and every outbox empty; then nothing more reaches RAL (no ISA with RJ1
    # for end-of-life care) nor the subscription filtered to another patient.
    await settled(settings.data_dir)
    await deliver_until(stack, clock, lambda: True)
    assert [status_fields(b["entry"][0]["resource"])["type"] for b in ral.received] == ["handshake"]
    for quiet in (no_isa, other_patient):
        response = await stack.get(
            f"/fhir/Subscription/{quiet['id']}/$status", headers=tokens.headers("RAL" if quiet is no_isa else "RRV")
        )
        status = (await response.json())["entry"][0]["resource"]
        assert status_fields(status)["events-since-subscription-start"] == "0"


async def test_care_plan_subscriptions_are_checked(stack: TestClient, tokens: Any) -> None:
    full = careplan_subscription(endpoint="https://gp.example.org/hook")
    full["channel"]["_payload"]["extension"][0]["valueCode"] = "full-resource"
    response = await stack.post("/fhir/Subscription", json=full, headers={**FHIR, **tokens.headers("RRV")})
    assert response.status == 422
    assert (await response.json())["issue"][0]["expression"] == ["Subscription.channel._payload"]
    bad_filter = careplan_subscription()
    bad_filter["_criteria"]["extension"][0]["valueString"] = "CarePlan?recipient=CareTeam/rj1-lung"
    response = await stack.post("/fhir/Subscription", json=bad_filter, headers={**FHIR, **tokens.headers("RRV")})
    assert response.status == 422
    response = await stack.post(
        "/fhir/Subscription", json=careplan_subscription(), headers={**FHIR, **tokens.headers("RRV", "clinician")}
    )
    assert response.status == 403


def test_the_r4_validator_refuses_the_r4b_status_that_the_r4_form_replaces(fhir_validator: Validator) -> None:
    """Why the status is a Parameters: an R4 parser has no SubscriptionStatus (issue 16)."""
    r4b = {
        "resourceType": "SubscriptionStatus",
        "status": "active",
        "type": "event-notification",
        "subscription": {"reference": "Subscription/x"},
        "topic": CAREPLAN_TOPIC,
    }
    assert fhir_validator.errors(r4b) != []
