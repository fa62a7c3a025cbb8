"""Fault run (``make soak``): RabbitMQ is restarted while documents flow through five service processes;
no accepted document, alert or audit record is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.auth import EmbeddedIssuer
from tests.e2e.processes import ServiceProcesses
from tests.helpers import document_reference, eventually

pytestmark = [pytest.mark.soak, pytest.mark.rabbitmq]
DOCUMENTS = 60


def rabbitmq(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture
def services(tmp_path: Path, amqp_url: str) -> Any:
    procs = ServiceProcesses(tmp_path / "data", amqp_url)
    procs.data_dir.mkdir(parents=True)
    yield procs
    procs.stop_all()


async def test_broker_restart_mid_stream_loses_nothing(services: ServiceProcesses) -> None:
    services.start()
    issuer = EmbeddedIssuer(services.data_dir, issuer="lhcie-embedded", audience="lhcie")
    system = {
        "Authorization": f"Bearer {issuer.mint(org='RJ1', role='system')}",
        "Content-Type": "application/fhir+json",
    }
    coordinator = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='mdt-coordinator', mdt='rj1-lung')}"}
    admin = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='dcc-admin')}"}
    accepted: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def post(n: int) -> None:
            body = document_reference(content=b"%PDF-1.4\n% soak " + str(n).encode() + b"\n")
            async with http.post(
                f"{services.url('intake')}/fhir/DocumentReference", data=json.dumps(body), headers=system
            ) as r:
                if r.status == 202:
                    accepted.append((await r.json())["id"])

        for n in range(DOCUMENTS):
            if n == DOCUMENTS // 3:
                await asyncio.to_thread(rabbitmq, "stop_app")
            if n == DOCUMENTS // 2:
                await asyncio.to_thread(rabbitmq, "start_app")
                await asyncio.to_thread(rabbitmq, "await_startup")
            await post(n)
            await asyncio.sleep(0.05)  # paces the stream (part of the scenario), not a wait for anything
        # Intake keeps accepting while the broker is down: the events wait in its outbox.
        assert len(accepted) == DOCUMENTS

        async def all_stored() -> bool:
            for doc_id in accepted:
                async with http.get(f"{services.url('intake')}/fhir/DocumentReference/{doc_id}", headers=system) as r:
                    if r.status != 200:
                        return False
            return True

        await eventually(all_stored, timeout=180, interval=1)

        async def alerts() -> list[str] | None:
            found: list[str] = []
            offset = 0
            while True:
                async with http.get(
                    f"{services.url('notification')}/fhir/Communication?recipient=CareTeam/rj1-lung"
                    f"&_count=200&_offset={offset}",
                    headers=coordinator,
                ) as r:
                    entries = (await r.json()).get("entry", [])
                found += [e["resource"]["about"][0]["reference"].split("/")[1] for e in entries]
                if len(entries) < 200:
                    break
                offset += 200
            return found if len(set(found)) == DOCUMENTS else None

        found = await eventually(alerts, timeout=120, interval=1)
        assert sorted(found) == sorted(accepted)  # every document alerted, none twice

        async def audited() -> bool:
            for doc_id in accepted:
                async with http.get(
                    f"{services.url('audit')}/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=admin
                ) as r:
                    codes = [e["resource"]["subtype"][1]["code"] for e in (await r.json()).get("entry", [])]
                if sorted(c for c in codes if c in ("document.received", "document.stored", "alert.raised")) != [
                    "alert.raised",
                    "document.received",
                    "document.stored",
                ]:
                    return False
            return True

        await eventually(audited, timeout=120, interval=1)
        async with http.get(f"{services.url('audit')}/fhir/AuditEvent/$verify", headers=admin) as r:
            assert (await r.json())["parameter"][0] == {"name": "intact", "valueBoolean": True}
