"""Notification's leaks (issue 14): transfers decided by the policy, MDT claims tied to the caller's
organisation, an operator-only throttled ``$reconcile``, every read of patient data audited, and the
console page's CSP. Each test fails on the code before its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.notification.routes import STREAM_TOKENS
from shared.app_keys import RUNTIME
from shared.bus import QueueSpec
from shared.clock import FixedClock
from shared.events import AgreementState, AgreementStatus, Event, RoutingKey
from shared.fhir.identifiers import ODS_CODE
from tests.helpers import TEST_PATIENT, eventually, settled
from tests.unit.test_notification_alerts import alert_count, notification, publish
from tests.unit.test_notification_pathways import COORDINATOR, START, open_pathway
from tests.unit.test_policy_preferences import preferences, set_preferences

RAL_IN_RJ1_LUNG = {"org": "RAL", "role": "mdt-coordinator", "mdt": "rj1-lung"}


class Watch:
    """A queue on the embedded bus bound to the routing keys a test expects the service to publish."""

    def __init__(self, stack: TestClient, *keys: RoutingKey) -> None:
        self.stack = stack
        self.spec = QueueSpec(f"test.watch.{'.'.join(k.value for k in keys)}", tuple(keys))

    async def events(self) -> list[Event]:
        await notification(self.stack).ctx.outbox.flush()
        bus = self.stack.server.app[RUNTIME].ports.bus
        found = []
        while (body := await bus.get(self.spec.name)) is not None:
            found.append(Event.from_bytes(body))
        return found


@pytest.fixture
async def watch(stack: TestClient) -> AsyncIterator[Any]:
    async def make(*keys: RoutingKey) -> Watch:
        # Events of earlier requests still in the outbox (a poll's record.read) must not reach the new queue.
        await notification(stack).ctx.outbox.flush()
        w = Watch(stack, *keys)
        await stack.server.app[RUNTIME].ports.bus.declare([w.spec])
        return w

    yield make


def transfer_body(team: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": "team", "valueReference": {"reference": f"CareTeam/{team}"}}],
    }


async def isa_with_ral(stack: TestClient) -> None:
    """RJ1 and RAL sign a cancer-care ISA (as agreements would announce it)."""
    await publish(
        stack,
        Event.new(
            RoutingKey.POLICY_AGREEMENT_ACCEPTED,
            AgreementState(
                agreement_id="isa-rj1-ral",
                title="Test ISA",
                parties=("RJ1", "RAL"),
                purposes=("cancer-care",),
                status=AgreementStatus.ACCEPTED,
                valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                accepted_by=("RJ1", "RAL"),
                version=1,
            ),
            source="test",
        ),
    )
    await eventually(lambda: notification(stack).policy.agreements_between("RJ1", "RAL"))


async def _alerts_for(stack: TestClient, mdt: str) -> list[dict[str, Any]]:
    from services.notification.alerts import AlertQuery

    return await notification(stack).alerts.search(AlertQuery(mdt=mdt), limit=100, skip=0)


# -- leak 2: a transfer is a disclosure to the receiving organisation --


async def test_a_transfer_to_an_organisation_the_patient_opted_out_of_is_refused_and_audited(
    stack: TestClient, tokens: Any, watch: Any
) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=5)), patient=TEST_PATIENT)
    await isa_with_ral(stack)
    await set_preferences(
        stack,
        tokens,
        preferences(
            {
                "type": "deny",
                "actor": [
                    {"role": {"text": "recipient"}, "reference": {"identifier": {"system": ODS_CODE, "value": "RAL"}}}
                ],
            }
        ),
    )
    denied = await watch(RoutingKey.ACCESS_DENIED)
    response = await stack.post(
        f"/fhir/EpisodeOfCare/{pathway['id']}/$transfer",
        json=transfer_body("ral-colorectal"),
        headers=tokens.headers(**COORDINATOR),
    )
    assert response.status == 403, await response.text()
    body = await response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "forbidden"
    assert "opt" not in body["issue"][0]["diagnostics"]  # the patient's preference is not revealed to the caller
    assert await _alerts_for(stack, "ral-colorectal") == []
    [event] = [e for e in await denied.events() if e.data["resource"] == f"EpisodeOfCare/{pathway['id']}"]
    assert event.data["reason_code"] == "patient-opt-out-organisation"
    assert event.data["actor"]["org"] == "RJ1"
    assert event.data["patient_nhs_number"] == TEST_PATIENT  # the caller's own patient
    # The pathway stays where it was.
    still = await stack.get(f"/fhir/EpisodeOfCare/{pathway['id']}", headers=tokens.headers(**COORDINATOR))
    assert (await still.json())["team"] == [{"reference": "CareTeam/rj1-lung"}]


async def test_a_transfer_needs_an_isa_and_one_with_it_goes_through(stack: TestClient, tokens: Any) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=5)))
    url = f"/fhir/EpisodeOfCare/{pathway['id']}/$transfer"
    refused = await stack.post(url, json=transfer_body("ral-colorectal"), headers=tokens.headers(**COORDINATOR))
    assert refused.status == 403  # RAL has no ISA with RJ1
    assert await _alerts_for(stack, "ral-colorectal") == []
    await isa_with_ral(stack)
    moved = await stack.post(url, json=transfer_body("ral-colorectal"), headers=tokens.headers(**COORDINATOR))
    assert moved.status == 200, await moved.text()
    assert len(await _alerts_for(stack, "ral-colorectal")) == 1


# -- leak 5: the MDT claim must be a team of the caller's organisation --


async def test_an_mdt_claim_for_another_organisations_team_reads_nothing(
    stack: TestClient, tokens: Any, watch: Any
) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=5)))
    [alert] = await alert_count(stack, tokens, 1)
    denied = await watch(RoutingKey.ACCESS_DENIED)
    forged = tokens.headers(**RAL_IN_RJ1_LUNG)
    attempts = [
        stack.get("/fhir/Communication?recipient=CareTeam/rj1-lung", headers=forged),
        stack.post("/alerts/stream-token?team=CareTeam/rj1-lung", headers=forged),
        stack.post(f"/fhir/Communication/{alert['id']}/$acknowledge", headers=forged),
        stack.get("/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung", headers=forged),
        stack.get("/fhir/EpisodeOfCare?team=CareTeam/rj1-lung", headers=forged),
        stack.get(f"/fhir/EpisodeOfCare/{pathway['id']}", headers=forged),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status == 403, (response.url, await response.text())
        assert (await response.json())["issue"][0]["code"] == "forbidden"
    # A stream token minted for that claim before the check existed opens no stream either.
    token, _ = stack.server.app[STREAM_TOKENS].issue(
        mdt="rj1-lung", subject="x@RAL", org="RAL", role="mdt-coordinator", ttl=60
    )
    stream = await stack.get(f"/alerts/stream?token={token}")
    assert stream.status == 403
    events = await denied.events()
    assert len(events) == len(attempts) + 1
    assert {e.data["reason_code"] for e in events} == {"mdt-not-of-organisation"}
    assert all(e.data["actor"]["org"] == "RAL" and e.data["patient_nhs_number"] is None for e in events)
    stored = await notification(stack).alerts.get(alert["id"])
    assert stored is not None and stored["status"] == "in-progress"


# -- leak 6: $reconcile --


async def test_reconcile_is_for_the_exchange_operator_throttled_and_audited(
    stack: TestClient, tokens: Any, watch: Any
) -> None:
    invoked = await watch(RoutingKey.OPERATION_INVOKED)
    url = "/fhir/Communication/$reconcile"
    assert (await stack.post(url, headers=tokens.headers("RJ1", "system"))).status == 403
    operator = tokens.headers("LHCIE", "exchange-operator")
    first = await stack.post(url, headers=operator)
    assert first.status == 200, await first.text()
    again = await stack.post(url, headers=operator)
    assert again.status == 429
    assert int(again.headers["Retry-After"]) >= 1
    assert (await again.json())["issue"][0]["code"] == "throttled"
    events = [e.data for e in await invoked.events()]
    assert [(e["operation"], e["target"], e["outcome"], e["actor"]["role"]) for e in events] == [
        ("$reconcile", "Communication", "success", "exchange-operator"),
        ("$reconcile", "Communication", "refused", "exchange-operator"),
    ]


# -- every read of patient data is on the record --


async def test_every_read_of_alerts_and_pathways_is_audited(stack: TestClient, tokens: Any, watch: Any) -> None:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=5)))
    await alert_count(stack, tokens, 1)
    # The polls above are reads too: let their records reach the bus before the watch starts listening.
    await settled(stack.server.app[RUNTIME].settings.data_dir)
    reads = await watch(RoutingKey.RECORD_READ)
    me = tokens.headers(**COORDINATOR)
    for url in (
        "/fhir/Communication?recipient=CareTeam/rj1-lung",
        f"/fhir/EpisodeOfCare/{pathway['id']}",
        "/fhir/EpisodeOfCare?team=CareTeam/rj1-lung",
        "/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung",
        "/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung&_format=csv",
    ):
        assert (await stack.get(url, headers=me)).status == 200
    got = [
        (e.data["resource"], e.data["action"], e.data["patient_nhs_number"], e.data["results"])
        for e in await reads.events()
    ]
    assert got == [
        ("Communication", "search", TEST_PATIENT, 1),
        (f"EpisodeOfCare/{pathway['id']}", "read", TEST_PATIENT, 1),
        ("EpisodeOfCare", "search", TEST_PATIENT, 1),
        ("EpisodeOfCare/$tracking-list", "search", TEST_PATIENT, 1),
        ("EpisodeOfCare/$tracking-list", "export", TEST_PATIENT, 1),
    ]


# -- the console page cannot be framed --


async def test_the_console_page_has_the_dcc_csp_and_cannot_be_framed(stack: TestClient) -> None:
    page = await stack.get("/console/")
    assert page.status == 200
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in page.headers["Content-Security-Policy"].split(";")}
    assert csp["frame-ancestors"] == "frame-ancestors 'none'"
    assert csp["default-src"] == "default-src 'none'"
    assert csp["script-src"] == "script-src 'self'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
