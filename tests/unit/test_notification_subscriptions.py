"""FHIR Subscriptions (R4B backport rest-hook): handshake, signed notifications in order and exactly once
through receiver failures, dead-lettering after the retry window, $status and $events."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.notification.routes import DELIVERER
from services.notification.subscriptions import (
    FILTER_URL,
    PAYLOAD_URL,
    SECRET_URL,
    STATUS_PROFILE,
    TOPIC,
    status_fields,
)
from shared.app_keys import RUNTIME
from shared.bus import QueueSpec
from shared.clock import FixedClock
from shared.events import Event, RoutingKey
from tests.helpers import eventually
from tests.unit.test_notification_alerts import notification, publish, stored_event, teams_known

FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture(autouse=True)
def receivers_on_loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test receivers listen on 127.0.0.1, which the exchange refuses unless allow-listed (SSRF)."""
    monkeypatch.setenv("LHCIE_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")


@dataclass
class Receiver:
    """A hospital system's webhook: checks every signature, fails while told to, keeps what it got."""

    secret: str = ""
    fail: set[int] = field(default_factory=set)  # event numbers to refuse (0 = handshake)
    fail_first: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    bad_signatures: int = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers["X-LHCIE-Timestamp"]
        expected = (
            "sha256=" + hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        if not hmac.compare_digest(expected, request.headers["X-LHCIE-Signature"]):
            self.bad_signatures += 1
            return web.Response(status=401)
        bundle = json.loads(body)
        status = status_fields(bundle["entry"][0]["resource"])
        numbers = [int(e["event-number"]) for e in status["notification-event"]] or [0]
        if self.fail_first > 0 or set(numbers) & self.fail:
            self.fail_first -= 1
            self.refused += 1
            return web.Response(status=503)
        self.received.append(bundle)
        return web.Response(status=200)

    def kinds(self) -> list[tuple[str, list[str]]]:
        out = []
        for bundle in self.received:
            status = status_fields(bundle["entry"][0]["resource"])
            out.append((status["type"], [e["event-number"] for e in status["notification-event"]]))
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/hook", got.hook)
    server = TestServer(app)
    await server.start_server()
    yield got, f"http://127.0.0.1:{server.port}/hook"
    await server.close()


def subscription(
    endpoint: str,
    *,
    payload: str = "id-only",
    criteria: str = "Communication?recipient=CareTeam/rj1-lung",
    secret: str | None = "a-shared-secret-of-some-length",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Lung MDT alerts to our PAS",
        "criteria": TOPIC,
        "_criteria": {"extension": [{"url": FILTER_URL, "valueString": criteria}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": payload}]},
        },
    }
    if secret:
        resource["extension"] = [{"url": SECRET_URL, "valueString": secret}]
    return resource


async def subscribe(stack: TestClient, tokens: Any, resource: dict[str, Any]) -> dict[str, Any]:
    response = await stack.post("/fhir/Subscription", json=resource, headers={**FHIR, **tokens.headers("RJ1")})
    assert response.status == 201, await response.text()
    return await response.json()


async def deliver_until(stack: TestClient, clock: FixedClock, done: Any) -> None:
    deliverer = stack.server.app[DELIVERER]

    async def step() -> bool:
        clock.advance(minutes=5)  # past any backoff: the test drives time, not sleeps
        await deliverer.run_once()
        return bool(done())

    await eventually(step, timeout=30, interval=0.01)


async def test_notifications_arrive_signed_in_order_exactly_once_after_receiver_failures(
    stack: TestClient, tokens: Any, receiver: tuple[Receiver, str]
) -> None:
    got, endpoint = receiver
    got.secret, got.fail_first = "a-shared-secret-of-some-length", 4
    clock = FixedClock(datetime.now(UTC))
    notification(stack).set_clock(clock)
    await teams_known(stack)
    created = await subscribe(stack, tokens, subscription(endpoint))
    assert created["status"] == "requested"
    assert created["extension"] == [{"url": SECRET_URL, "valueString": "a-shared-secret-of-some-length"}]
    events = [stored_event() for _ in range(3)]
    for event in events:
        await publish(stack, event)
    await eventually(lambda: notification(stack).subscriptions.events(created["id"], 1, 3), timeout=10)
    await eventually(lambda: _has(notification(stack), created["id"], 3))

    await deliver_until(stack, clock, lambda: len(got.received) == 4)
    for _ in range(3):
        await stack.server.app[DELIVERER].run_once()  # nothing more is sent: each exactly once
    assert got.refused == 4 and got.bad_signatures == 0
    assert got.kinds() == [
        ("handshake", []),
        ("event-notification", ["1"]),
        ("event-notification", ["2"]),
        ("event-notification", ["3"]),
    ]
    first = got.received[1]
    assert first["type"] == "history"
    status = first["entry"][0]["resource"]
    # The R4 form of the Backport IG: the status is a Parameters resource (the server declares FHIR 4.0.1).
    assert status["resourceType"] == "Parameters"
    assert status["meta"]["profile"] == [STATUS_PROFILE]
    fields = status_fields(status)
    assert fields["events-since-subscription-start"] == "1"
    assert fields["subscription"] == {"reference": f"Subscription/{created['id']}"}
    assert fields["topic"] == TOPIC
    # id-only: the alert is referenced, no patient data travels.
    assert "resource" not in first["entry"][1]
    assert first["entry"][1]["fullUrl"].startswith("Communication/")
    assert "9000000009" not in json.dumps(got.received)

    read = await stack.get(f"/fhir/Subscription/{created['id']}", headers=tokens.headers("RJ1"))
    assert (await read.json())["status"] == "active"
    assert "extension" not in await read.json()  # the secret is shown once only
    status_bundle = await (
        await stack.get(f"/fhir/Subscription/{created['id']}/$status", headers=tokens.headers("RJ1"))
    ).json()
    assert status_fields(status_bundle["entry"][0]["resource"])["events-since-subscription-start"] == "3"


async def _has(n: Any, sub: str, count: int) -> bool:
    return len(await n.subscriptions.events(sub, 1, count)) == count


async def test_after_the_retry_window_a_notification_is_dead_lettered_and_recoverable_by_events(
    stack: TestClient, tokens: Any, receiver: tuple[Receiver, str]
) -> None:
    got, endpoint = receiver
    got.secret, got.fail = "a-shared-secret-of-some-length", {1}
    clock = FixedClock(datetime.now(UTC))
    n = notification(stack)
    n.set_clock(clock)
    bus = stack.server.app[RUNTIME].ports.bus
    watch = QueueSpec("test.webhooks", (RoutingKey.WEBHOOK_FAILED, RoutingKey.WEBHOOK_DELIVERED))
    await bus.declare([watch])
    await teams_known(stack)
    created = await subscribe(stack, tokens, subscription(endpoint))
    for _ in range(2):
        await publish(stack, stored_event())
    await eventually(lambda: _has(n, created["id"], 2))

    deliverer = stack.server.app[DELIVERER]
    await deliverer.run_once()  # the handshake
    for _ in range(5):  # event 1 is refused, retried with backoff; event 2 waits behind it (order)
        clock.advance(hours=2)
        await deliverer.run_once()
    assert got.kinds() == [("handshake", [])]
    clock.advance(days=3)  # the default window is days, not minutes
    await deliverer.run_once()
    await deliverer.run_once()
    assert got.kinds() == [("handshake", []), ("event-notification", ["2"])]  # the gap (1) shows the loss
    await n.ctx.outbox.flush()
    seen = []
    while (body := await bus.get(watch.name)) is not None:
        event = Event.from_bytes(body)
        seen.append((str(event.type), event.data["event_number"]))
    assert seen == [("webhook.failed", 1), ("webhook.delivered", 2)]

    recovered = await stack.get(
        f"/fhir/Subscription/{created['id']}/$events?eventsSinceNumber=1&eventsUntilNumber=1",
        headers=tokens.headers("RJ1"),
    )
    bundle = await recovered.json()
    assert bundle["type"] == "history"
    status = status_fields(bundle["entry"][0]["resource"])
    assert status["type"] == "query-event"
    assert [e["event-number"] for e in status["notification-event"]] == ["1"]


@pytest.mark.parametrize(
    ("change", "status", "expression"),
    [
        ({"payload": "full-resource"}, 422, "Subscription.channel._payload"),
        ({"criteria": "Communication?recipient=CareTeam/rrv-haematology"}, 403, None),
        ({"criteria": "Communication?colour=red&recipient=CareTeam/rj1-lung"}, 422, "Subscription._criteria"),
    ],
)
async def test_subscriptions_are_checked(
    stack: TestClient, tokens: Any, change: dict[str, Any], status: int, expression: str | None
) -> None:
    await teams_known(stack)
    response = await stack.post(
        "/fhir/Subscription",
        json=subscription("http://127.0.0.1:9/hook", **change),
        headers={**FHIR, **tokens.headers("RJ1")},
    )
    assert response.status == status
    issue = (await response.json())["issue"][0]
    if expression:
        assert issue["expression"] == [expression]
    coordinator = await stack.post(
        "/fhir/Subscription",
        json=subscription("http://127.0.0.1:9/hook"),
        headers={**FHIR, **tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")},
    )
    assert coordinator.status == 403
    other = await stack.get("/fhir/Subscription/nope/$status", headers=tokens.headers("RJ1"))
    assert other.status == 404
