"""Care records through the five-plus-one services as separate processes on the real RabbitMQ: a plan
written and read (and refused) with every read in the audit log, a subscriber hearing the change, a
repatriation escalating, and a discharge summary acknowledged and rejected."""

from __future__ import annotations

from typing import Any

import aio_pika
import aiohttp
import pytest

from services.care import examples
from shared.auth import EmbeddedIssuer
from shared.events import Event
from tests.e2e.processes import SERVICES, ServiceProcesses
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]
PATIENT = "9000000033"
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def services(tmp_path: Any, amqp_url: str) -> Any:
    procs = ServiceProcesses(tmp_path / "data", amqp_url, extra_env={
        # Escalations within the test's patience: 36 seconds' wait for a repatriation, ticks twice a second.
        "LHCIE_CARE_ESCALATION_HOURS": "0.01",
        "LHCIE_CARE_TIMER_TICK_SECONDS": "0.5",
    })
    procs.data_dir.mkdir(parents=True)
    yield procs
    procs.stop_all()


async def test_care_records_through_six_processes(services: ServiceProcesses, amqp_url: str) -> None:
    # A subscriber of its own on the real broker (as a GP or ambulance system's integration would bind).
    connection = await aio_pika.connect_robust(amqp_url)
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
        await _exercise(services, heard)
    finally:
        await connection.close()


async def _exercise(services: ServiceProcesses, heard: list[Event]) -> None:
    issuer = EmbeddedIssuer(services.data_dir, issuer="lhcie-embedded", audience="lhcie")

    def auth(org: str, role: str = "clinician", **kw: Any) -> dict[str, str]:
        return {**FHIR, "Authorization": f"Bearer {issuer.mint(org=org, role=role, **kw)}"}

    care, audit = services.url("care"), services.url("audit")
    async with aiohttp.ClientSession() as http:
        async def ready() -> bool:  # care's policy replica has heard of the demo ISAs from agreements
            async with http.get(f"{care}/fhir/CarePlan?patient.identifier={PATIENT}", headers=auth("RRV")) as r:
                return r.status == 200

        await eventually(ready, timeout=30)
        async with http.post(f"{care}/fhir/CarePlan", json=examples.care_plan(PATIENT), headers=auth("RJ1")) as r:
            assert r.status == 201, await r.text()
            plan_id = (await r.json())["id"]

        async def found() -> list[Any] | None:
            async with http.get(f"{care}/fhir/CarePlan?patient.identifier={PATIENT}&category=end-of-life",
                                headers=auth("RRV")) as r:
                assert r.status == 200
                return (await r.json())["entry"]

        [entry] = await eventually(found)
        assert entry["resource"]["id"] == plan_id
        async with http.get(f"{care}/fhir/CarePlan/{plan_id}", headers=auth("RAL")) as r:
            assert r.status == 403

        async def trail() -> list[str] | None:
            async with http.get(f"{audit}/fhir/AuditEvent?entity=CarePlan/{plan_id}", headers=auth("RJ1", "dcc-admin")) as r:
                codes = sorted(e["resource"]["subtype"][1]["code"] for e in (await r.json()).get("entry", []))
                return codes if len(codes) == 3 else None

        assert await eventually(trail, timeout=20) == ["access.denied", "careplan.created", "record.read"]

        # A repatriation nobody moves escalates on its own (a short threshold for the test).
        async with http.post(f"{care}/fhir/Task", json=examples.repatriation(PATIENT, "RRV"), headers=auth("RJ1")) as r:
            assert r.status == 201, await r.text()
            task_id = (await r.json())["id"]
        async with http.get(f"{care}/fhir/Task?owner=RRV", headers=auth("RRV")) as r:
            assert [e["resource"]["id"] for e in (await r.json())["entry"]] == [task_id]

        # A discharge summary to a GP practice: accepted by one recipient, rejected by the other.
        summary = examples.discharge_summary(PATIENT, identifier="e2e-ds-1", gp="G85001", trust="RRV")
        async with http.post(f"{care}/fhir/Bundle", json=summary, headers=auth("RJ1", "system")) as r:
            assert r.status == 201, await r.text()
            summary_id = (await r.json())["id"]
        for org, body in (("G85001", [("type", "infrastructure"), ("outcome", "accepted")]),
                          ("G85001", [("type", "business"), ("code", "patient-known")]),
                          ("RRV", [("type", "infrastructure"), ("outcome", "rejected"), ("code", "duplicate")])):
            params = {"resourceType": "Parameters", "parameter": [{"name": k, "valueCode": v} for k, v in body]}
            async with http.post(f"{care}/fhir/Bundle/{summary_id}/$acknowledge", json=params,
                                 headers=auth(org, "system")) as r:
                assert r.status == 200, await r.text()

        async def escalated() -> list[str] | None:
            kinds = [str(e.type) for e in heard]
            return kinds if "transfer.escalated" in kinds and kinds.count("discharge.acknowledged") == 3 else None

        kinds = await eventually(escalated, timeout=60)
        assert kinds[0] == "careplan.created"
        assert sorted(set(kinds)) == ["careplan.created", "discharge.acknowledged", "discharge.delivered",
                                      "transfer.escalated", "transfer.requested"]
        rejected = [e.data for e in heard if e.type == "discharge.acknowledged" and e.data["outcome"] == "rejected"]
        assert [(d["recipient"], d["code"]) for d in rejected] == [("RRV", "duplicate")]
