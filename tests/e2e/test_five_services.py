"""The five services as five processes on the real RabbitMQ: a document's whole trip, as one trace."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.auth import EmbeddedIssuer
from tests.e2e.otlp import TraceReceiver, trace_receiver
from tests.e2e.processes import ServiceProcesses
from tests.helpers import PDF, document_reference, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]


@pytest.fixture
async def receiver() -> AsyncIterator[TraceReceiver]:
    async with trace_receiver() as r:
        yield r


@pytest.fixture
def services(tmp_path: Path, amqp_url: str, receiver: TraceReceiver) -> Any:
    procs = ServiceProcesses(
        tmp_path / "data",
        amqp_url,
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    procs.data_dir.mkdir(parents=True)
    yield procs
    procs.stop_all()


async def test_document_travels_through_five_processes_in_one_trace(
    services: ServiceProcesses, receiver: TraceReceiver
) -> None:
    services.start()
    issuer = EmbeddedIssuer(services.data_dir, issuer="lhcie-embedded", audience="lhcie")
    system = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='system')}"}
    coordinator = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='mdt-coordinator', mdt='rj1-lung')}"}
    admin = {"Authorization": f"Bearer {issuer.mint(org='RJ1', role='dcc-admin')}"}

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{services.url('intake')}/fhir/DocumentReference",
            data=json.dumps(document_reference()),
            headers={**system, "Content-Type": "application/fhir+json", "X-Request-Id": "e2e-request-1"},
        ) as response:
            assert response.status == 202
            doc_id = (await response.json())["id"]

        async def stored() -> bool:
            async with http.get(f"{services.url('intake')}/fhir/DocumentReference/{doc_id}", headers=system) as r:
                return r.status == 200

        await eventually(stored, timeout=20)

        async def alert() -> list[dict[str, Any]]:
            async with http.get(
                f"{services.url('notification')}/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator
            ) as r:
                return (await r.json()).get("entry", [])

        [entry] = await eventually(alert, timeout=20)
        assert entry["resource"]["about"] == [{"reference": f"DocumentReference/{doc_id}"}]

        async with http.get(f"{services.url('storage')}/fhir/Binary/{doc_id}", headers=system) as r:
            assert r.status == 200
            assert await r.read() == PDF

        async def trail() -> set[str] | None:
            async with http.get(
                f"{services.url('audit')}/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=admin
            ) as r:
                codes = {e["resource"]["subtype"][1]["code"] for e in (await r.json()).get("entry", [])}
            wanted = {"document.received", "document.stored", "alert.raised", "document.retrieved"}
            return codes if wanted <= codes else None

        await eventually(trail, timeout=20)
        async with http.get(f"{services.url('audit')}/fhir/AuditEvent/$verify", headers=admin) as r:
            assert (await r.json())["parameter"][0] == {"name": "intact", "valueBoolean": True}

    post_spans = [s for s in receiver.spans if s.name == "POST /fhir/DocumentReference"]

    async def whole_trace() -> set[str] | None:
        if not post_spans:
            post_spans.extend(s for s in receiver.spans if s.name == "POST /fhir/DocumentReference")
            return None
        found = receiver.services_in(post_spans[0].trace_id)
        return found if {"lhcie-intake", "lhcie-storage", "lhcie-notification", "lhcie-audit"} <= found else None

    await eventually(whole_trace, timeout=20)
    # The consumers' spans are children of the spans that published their events, not new roots.
    trace = [s for s in receiver.spans if s.trace_id == post_spans[0].trace_id]
    roots = [s for s in trace if not s.parent_id]
    assert [r.name for r in roots] == ["POST /fhir/DocumentReference"]


async def test_sigterm_drains_and_exits_cleanly(services: ServiceProcesses) -> None:
    services.start()
    for name in ("intake", "storage", "notification", "audit", "agreements"):
        code = services.stop(name, timeout=90)
        assert code == 0, services.log(name)[-3000:]
