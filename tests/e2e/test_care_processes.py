"""Care records through the five-plus-one services as separate processes on the real RabbitMQ: a plan
written and read (and refused) with every read in the audit log, subscribers hearing the change (a GP
system's rest-hook on a real local HTTP server and an SSE stream, through notification; an organisation
without an ISA hearing nothing), a repatriation alerting the receiving trust's bed managers and escalating,
and a discharge summary acknowledged and rejected."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from services.care import examples
from services.notification.subscriptions import (
    CAREPLAN_TOPIC,
    CHANNEL_SYSTEM,
    CHANNEL_TYPE_URL,
    FILTER_URL,
    status_fields,
)
from shared.auth import EmbeddedIssuer
from shared.events import Event
from tests.e2e.processes import SERVICES, ServiceProcesses
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]
PATIENT = "9000000033"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def services(tmp_path: Any, amqp_url: str) -> Any:
    procs = ServiceProcesses(
        tmp_path / "data",
        amqp_url,
        extra_env={
            # Escalations within the test's patience: 36 seconds' wait for a repatriation, ticks twice a second.
            "LHCIE_CARE_ESCALATION_HOURS": "0.01",
            "LHCIE_CARE_TIMER_TICK_SECONDS": "0.5",
            # The subscribers' webhooks are this test's HTTP servers on loopback (refused unless allow-listed).
            "LHCIE_NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "LHCIE_NOTIFICATION_STREAM_POLL_SECONDS": "0.2",
        },
    )
    procs.data_dir.mkdir(parents=True)
    yield procs
    procs.stop_all()


class Hook:
    """A subscribing system's rest-hook endpoint: a real HTTP server on loopback keeping what it got."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.received.append(json.loads(await request.read()))
            return web.Response(status=200)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    def events(self) -> list[str]:
        """The focus of every event notification received."""
        out = []
        for bundle in self.received:
            status = status_fields(bundle["entry"][0]["resource"])
            if status["type"] == "event-notification":
                out += [e["focus"]["reference"] for e in status["notification-event"]]
        return out


def plan_subscription(endpoint: str | None) -> dict[str, Any]:
    channel: dict[str, Any] = {"payload": "application/fhir+json"}
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
        "reason": "End-of-life plans",
        "criteria": CAREPLAN_TOPIC,
        "_criteria": {"extension": [{"url": FILTER_URL, "valueString": f"CarePlan?patient={PATIENT}"}]},
        "channel": channel,
    }


async def test_care_records_through_six_processes(services: ServiceProcesses, amqp_url: str) -> None:
    # A subscriber of its own on the real broker (as a GP or ambulance system's integration would bind).
    connection = await aio_pika.connect_robust(amqp_url)
    hooks = Hook(), Hook()  # RRV's GP-facing system's webhook, and RAL's
    heard: list[Event] = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        exchange = await channel.declare_exchange("lhcie.events", aio_pika.ExchangeType.TOPIC, durable=True)
        for key in ("careplan.#", "transfer.#", "discharge.#"):
            await queue.bind(exchange, key)

        async def hear(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                heard.append(Event.from_bytes(message.body))

        await queue.consume(hear)
        services.start(*SERVICES, "care")
        for hook in hooks:
            await hook.start()
        await _exercise(services, heard, hooks)
    finally:
        await connection.close()
        for hook in hooks:
            if hook.runner is not None:
                await hook.runner.cleanup()


async def _exercise(services: ServiceProcesses, heard: list[Event], hooks: tuple[Hook, Hook]) -> None:
    issuer = EmbeddedIssuer(services.data_dir, issuer="lhcie-embedded", audience="lhcie")

    def auth(org: str, role: str = "clinician", **kw: Any) -> dict[str, str]:
        return {**FHIR, "Authorization": f"Bearer {issuer.mint(org=org, role=role, **kw)}"}

    care, audit, notification = services.url("care"), services.url("audit"), services.url("notification")
    gp, no_isa = hooks
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:  # care's policy replica has heard of the demo ISAs from agreements
            async with http.get(f"{care}/fhir/CarePlan?patient.identifier={PATIENT}", headers=auth("RRV")) as r:
                return r.status == 200

        await eventually(ready, timeout=30)
        # RRV's system subscribes to the patient's plan by rest-hook and by SSE; RAL (no ISA with RJ1) too.
        subscribed = {}
        for name, org, endpoint in (("hook", "RRV", gp.url), ("sse", "RRV", None), ("no-isa", "RAL", no_isa.url)):
            async with http.post(
                f"{notification}/fhir/Subscription", json=plan_subscription(endpoint), headers=auth(org, "system")
            ) as r:
                assert r.status == 201, await r.text()
                subscribed[name] = (await r.json())["id"]
        async with http.post(f"{care}/fhir/CarePlan", json=examples.care_plan(PATIENT), headers=auth("RJ1")) as r:
            assert r.status == 201, await r.text()
            plan_id = (await r.json())["id"]

        async def found() -> list[Any] | None:
            async with http.get(
                f"{care}/fhir/CarePlan?patient.identifier={PATIENT}&category=end-of-life", headers=auth("RRV")
            ) as r:
                assert r.status == 200
                return (await r.json())["entry"]

        [entry] = await eventually(found)
        assert entry["resource"]["id"] == plan_id
        async with http.get(f"{care}/fhir/CarePlan/{plan_id}", headers=auth("RAL")) as r:
            assert r.status == 403

        async def trail() -> list[str] | None:
            async with http.get(
                f"{audit}/fhir/AuditEvent?entity=CarePlan/{plan_id}", headers=auth("RJ1", "dcc-admin")
            ) as r:
                codes = sorted(e["resource"]["subtype"][1]["code"] for e in (await r.json()).get("entry", []))
                return codes if len(codes) == 3 else None

        assert await eventually(trail, timeout=20) == ["access.denied", "careplan.created", "record.read"]

        # The change reached RRV's rest-hook and its SSE stream, through notification on the broker.
        version = f"CarePlan/{plan_id}/_history/1"

        async def gp_heard() -> list[str]:
            return gp.events()

        assert await eventually(gp_heard, timeout=30) == [version]
        async with http.get(
            f"{notification}/fhir/Subscription/{subscribed['sse']}/$stream", headers=auth("RRV", "system")
        ) as stream:
            line = b""
            while not line.startswith(b"data: "):
                line = await stream.content.readline()
        assert [
            e["focus"]["reference"]
            for e in status_fields(json.loads(line[6:])["entry"][0]["resource"])["notification-event"]
        ] == [version]
        # RAL's subscription was weighed in the same transaction that numbered RRV's notifications, so
        # RRV's having arrived is the barrier: RAL's count is final, and nothing reached its endpoint.
        async with http.get(
            f"{notification}/fhir/Subscription/{subscribed['no-isa']}/$status", headers=auth("RAL", "system")
        ) as r:
            status = status_fields((await r.json())["entry"][0]["resource"])
        assert status["events-since-subscription-start"] == "0"
        assert no_isa.events() == []

        # A repatriation nobody moves escalates on its own (a short threshold for the test).
        async with http.post(f"{care}/fhir/Task", json=examples.repatriation(PATIENT, "RRV"), headers=auth("RJ1")) as r:
            assert r.status == 201, await r.text()
            task_id = (await r.json())["id"]
        async with http.get(f"{care}/fhir/Task?owner=RRV", headers=auth("RRV")) as r:
            assert [e["resource"]["id"] for e in (await r.json())["entry"]] == [task_id]

        # RRV's bed managers are alerted, in notification, from care's event on the broker.
        async def bed_alert(state: str) -> dict[str, Any] | None:
            async with http.get(
                f"{notification}/fhir/Communication?recipient=Organization/RRV", headers=auth("RRV", "bed-manager")
            ) as r:
                assert r.status == 200, await r.text()
                found = [e["resource"] for e in (await r.json()).get("entry", [])]
            states = [next(x["valueCode"] for x in a["extension"] if x["url"].endswith("alert-state")) for a in found]
            return found[0] if states == [state] else None

        alert = await eventually(lambda: bed_alert("raised"), timeout=20)
        assert alert["about"] == [{"reference": f"Task/{task_id}"}] and alert["priority"] == "urgent"

        # A discharge summary to a GP practice: accepted by one recipient, rejected by the other.
        summary = examples.discharge_summary(PATIENT, identifier="e2e-ds-1", gp="G85001", trust="RRV")
        async with http.post(f"{care}/fhir/Bundle", json=summary, headers=auth("RJ1", "system")) as r:
            assert r.status == 201, await r.text()
            summary_id = (await r.json())["id"]
        for org, body in (
            ("G85001", [("type", "infrastructure"), ("outcome", "accepted")]),
            ("G85001", [("type", "business"), ("code", "patient-known")]),
            ("RRV", [("type", "infrastructure"), ("outcome", "rejected"), ("code", "duplicate")]),
        ):
            params = {"resourceType": "Parameters", "parameter": [{"name": k, "valueCode": v} for k, v in body]}
            async with http.post(
                f"{care}/fhir/Bundle/{summary_id}/$acknowledge", json=params, headers=auth(org, "system")
            ) as r:
                assert r.status == 200, await r.text()

        async def escalated() -> list[str] | None:
            kinds = [str(e.type) for e in heard]
            return kinds if "transfer.escalated" in kinds and kinds.count("discharge.acknowledged") == 3 else None

        kinds = await eventually(escalated, timeout=60)
        assert kinds[0] == "careplan.created"
        assert sorted(set(kinds)) == [
            "careplan.created",
            "discharge.acknowledged",
            "discharge.delivered",
            "transfer.escalated",
            "transfer.requested",
        ]
        rejected = [e.data for e in heard if e.type == "discharge.acknowledged" and e.data["outcome"] == "rejected"]
        assert [(d["recipient"], d["code"]) for d in rejected] == [("RRV", "duplicate")]
        # The transfer waited past its threshold: the bed managers' alert escalated.
        escalated_alert = await eventually(lambda: bed_alert("escalated"), timeout=20)
        assert escalated_alert["priority"] == "asap"
