"""Every refusal and every read on the record, from the one edge: access.denied for each 401 and 403
answer, record.read for each DocumentReference read, and a correlation id the server chose."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from shared.app_keys import RUNTIME
from shared.bus import QueueSpec
from shared.events import Event, RoutingKey
from shared.lifecycle import CONTEXTS
from tests.helpers import TEST_PATIENT, document_reference, eventually
from tests.unit.test_document_flow import FHIR, post_document, stored

WATCHED = (RoutingKey.ACCESS_DENIED, RoutingKey.RECORD_READ, RoutingKey.DOCUMENT_RECEIVED, RoutingKey.DOCUMENT_STORED)


class Watch:
    """A queue on the stack's bus that keeps every event of the watched kinds."""

    def __init__(self, stack: TestClient) -> None:
        self.bus = stack.server.app[RUNTIME].ports.bus
        self.contexts = stack.server.app[CONTEXTS]
        self.queue = QueueSpec(f"test.edge.{uuid.uuid4().hex[:8]}", WATCHED)
        self.seen: list[Event] = []

    async def start(self) -> Watch:
        await self.bus.declare([self.queue])
        return self

    async def drain(self) -> list[Event]:
        while (body := await self.bus.get(self.queue.name)) is not None:
            self.seen.append(Event.from_bytes(body))
        return self.seen

    async def of(self, key: RoutingKey, correlation_id: str, count: int = 1) -> list[Event]:
        async def found() -> list[Event] | None:
            matching = [e for e in await self.drain() if e.type == key and e.correlationid == correlation_id]
            return matching if len(matching) >= count else None

        return await eventually(found)

    async def settled(self, key: RoutingKey, correlation_id: str) -> list[Event]:
        """Every event of ``key`` for the request once the outboxes are empty (to count them exactly)."""
        for ctx in self.contexts:
            await ctx.outbox.flush()
        return [e for e in await self.drain() if e.type == key and e.correlationid == correlation_id]


def present(data: dict[str, Any]) -> dict[str, Any]:
    """An event's data without its unset (None) fields."""
    return {k: present(v) if isinstance(v, dict) else v for k, v in data.items() if v is not None}


async def watch(stack: TestClient) -> Watch:
    return await Watch(stack).start()


ANONYMOUS = {"org": "unknown", "role": "anonymous", "subject": "anonymous", "address": "127.0.0.1"}
PATIENT_QUERY = f"patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{TEST_PATIENT}"


async def test_every_401_of_every_service_is_an_access_denied_without_the_patient(stack: TestClient) -> None:
    w = await watch(stack)
    for path in (
        f"/fhir/DocumentReference?{PATIENT_QUERY}",
        "/fhir/Binary/doc-1",
        "/fhir/Communication",
        f"/fhir/AuditEvent?{PATIENT_QUERY}",
        "/fhir/Contract",
        "/fhir/EpisodeOfCare/ep-1",
    ):
        response = await stack.get(path, headers={"Authorization": "Bearer not-a-token"})
        assert response.status == 401, path
        [event] = await w.of(RoutingKey.ACCESS_DENIED, response.headers["X-Correlation-Id"])
        resource = path.removeprefix("/fhir/").split("?")[0]
        assert present(event.data) == {
            "actor": ANONYMOUS,
            "resource": resource,
            "action": "search" if "/" not in resource else "read",
            "reason_code": "invalid-token",
            "reason": "the token is not valid (DecodeError)",
        }
        assert event.subject == resource
        assert TEST_PATIENT not in event.to_bytes().decode()


async def test_a_403_for_a_scope_names_the_caller_and_the_rule(stack: TestClient, tokens: Any) -> None:
    w = await watch(stack)
    response = await stack.get(f"/fhir/AuditEvent?{PATIENT_QUERY}", headers=tokens.headers("RAL", "clinician"))
    assert response.status == 403
    [event] = await w.of(RoutingKey.ACCESS_DENIED, response.headers["X-Correlation-Id"])
    assert present(event.data["actor"]) == {
        "org": "RAL",
        "role": "clinician",
        "subject": "clinician@RAL",
        "address": "127.0.0.1",
    }
    assert (event.data["resource"], event.data["action"]) == ("AuditEvent", "search")
    assert event.data["reason_code"] == "scope"
    assert event.data["patient_nhs_number"] is None
    assert event.source == "urn:lhcie:service:audit"


async def test_a_refusal_the_domain_records_is_recorded_once(stack: TestClient, tokens: Any) -> None:
    doc_id = await post_document(stack, tokens)
    await eventually(lambda: stored(stack, tokens, doc_id))
    w = await watch(stack)
    for path in (f"/fhir/Binary/{doc_id}", f"/fhir/DocumentReference/{doc_id}"):
        response = await stack.get(path, headers=tokens.headers("RAL", "clinician"))
        assert response.status == 403
        correlation_id = response.headers["X-Correlation-Id"]
        await w.of(RoutingKey.ACCESS_DENIED, correlation_id)
        [event] = await w.settled(RoutingKey.ACCESS_DENIED, correlation_id)
        # The domain's record: it names the rule and the patient, for the patient's own access report.
        assert event.data["patient_nhs_number"] == TEST_PATIENT
        assert event.data["reason_code"] == "no-isa"


async def test_every_document_reference_read_is_recorded_with_the_patient(stack: TestClient, tokens: Any) -> None:
    doc_id = await post_document(stack, tokens)
    await eventually(lambda: stored(stack, tokens, doc_id))
    w = await watch(stack)
    response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers("RRV", "clinician"))
    assert response.status == 200
    [event] = await w.of(RoutingKey.RECORD_READ, response.headers["X-Correlation-Id"])
    assert present(event.data) == {
        "actor": {"org": "RRV", "role": "clinician", "subject": "clinician@RRV", "address": "127.0.0.1"},
        "resource": f"DocumentReference/{doc_id}",
        "action": "read",
        "patient_nhs_number": TEST_PATIENT,
        "rule": event.data["rule"],
    }
    assert event.data["rule"]
    admin = tokens.headers("RRV", "dcc-admin")

    async def on_the_audit_log() -> list[dict[str, Any]] | None:
        found = await stack.get(f"/fhir/AuditEvent?entity=DocumentReference/{doc_id}", headers=admin)
        records = [
            e["resource"]
            for e in (await found.json()).get("entry", [])
            if e["resource"]["subtype"][1]["code"] == "record.read" and "clinician@RRV" in json.dumps(e)
        ]
        return records or None

    [record] = await eventually(on_the_audit_log)
    assert {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": TEST_PATIENT} in [
        e["what"].get("identifier") for e in record["entity"]
    ]


async def test_the_correlation_id_is_the_servers_and_the_clients_id_is_kept_apart(
    stack: TestClient, tokens: Any
) -> None:
    w = await watch(stack)
    answers = []
    for _ in range(2):
        response = await stack.post(
            "/fhir/DocumentReference",
            json=document_reference(),
            headers={**FHIR, **tokens.headers("RJ1"), "X-Request-Id": "submission-42"},
        )
        assert response.status == 202
        answers.append(response)
    ids = [r.headers["X-Correlation-Id"] for r in answers]
    assert len(set(ids)) == 2 and all(str(uuid.UUID(i)) == i for i in ids)
    assert [r.headers["X-Request-Id"] for r in answers] == ["submission-42", "submission-42"]
    [received] = await w.of(RoutingKey.DOCUMENT_RECEIVED, ids[0])
    [filed] = await w.of(RoutingKey.DOCUMENT_STORED, ids[0])
    assert received.clientrequestid == filed.clientrequestid == "submission-42"
    # A client id that is not a short plain token is neither echoed nor kept.
    odd = await stack.get("/fhir/Communication", headers={**tokens.headers("RJ1"), "X-Request-Id": "x" * 65})
    assert "X-Request-Id" not in odd.headers and odd.headers["X-Correlation-Id"]


async def test_no_response_names_the_server_software(stack: TestClient, tokens: Any) -> None:
    for path, status in (
        ("/healthz", 200),
        ("/fhir/metadata", 200),
        ("/nowhere", 401),
        ("/fhir/Binary/x", 401),
        ("/console/", 200),
    ):
        response = await stack.get(path)
        assert response.status == status, path
        assert response.headers["Server"] == "LHCIE", path
    response = await stack.get("/fhir/Binary/none", headers=tokens.headers("RJ1"))
    assert (response.status, response.headers["Server"]) == (404, "LHCIE")
