"""Policy changes reach every service through the real RabbitMQ: an ISA revoked, a preference set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

import lhcie.services
from services.notification.routes import NOTIFICATION
from services.storage.routes import STORAGE
from shared.config import BusKind
from shared.edge import build_app
from tests.conftest import Tokens, make_settings
from tests.helpers import TEST_PATIENT, document_reference, eventually

pytestmark = pytest.mark.rabbitmq
FHIR = {"Content-Type": "application/fhir+json"}


@pytest.fixture
async def amqp_stack(tmp_path: Path, amqp_url: str) -> AsyncIterator[tuple[TestClient, Tokens]]:
    settings = make_settings(tmp_path / "data", bus=BusKind.AMQP, amqp_url=SecretStr(amqp_url))
    app = build_app(settings, list(lhcie.services.SPECS.values()))
    async with TestClient(TestServer(app)) as client:
        yield client, Tokens(settings)


async def test_a_document_is_refused_once_its_isa_is_revoked(amqp_stack: tuple[TestClient, Tokens]) -> None:
    stack, tokens = amqp_stack
    response = await stack.post(
        "/fhir/DocumentReference", json=document_reference(related=()), headers={**FHIR, **tokens.headers("RJ1")}
    )
    assert response.status == 202
    binary = f"/fhir/Binary/{(await response.json())['id']}"
    rrv = tokens.headers("RRV", "clinician")

    async def retrieval() -> tuple[int, Any]:
        response = await stack.get(binary, headers=rrv)
        return response.status, (await response.json() if response.status != 200 else await response.read())

    # Retrievable while the demo ISA between RJ1 and RRV is accepted ...
    assert await eventually(lambda: _status_is(retrieval, 200), timeout=30)
    # ... and refused once it is revoked, with a generic reason and a reference (the rule is in the audit record).
    response = await stack.post("/fhir/Contract/isa-rj1-rrv/$revoke", headers=tokens.headers("RJ1", "dcc-admin"))
    assert (response.status, (await response.json())["status"]) == (200, "revoked")
    await eventually(lambda: _status_is(retrieval, 403), timeout=10, interval=0.01)
    status, body = await retrieval()
    assert (status, body) == (
        403,
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "forbidden",
                    "details": {
                        "coding": [
                            {"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "ACCESS_DENIED"}
                        ]
                    },
                    "diagnostics": body["issue"][0]["diagnostics"],
                }
            ],
        },
    )
    assert body["issue"][0]["diagnostics"].startswith("Access denied: not permitted by the sharing policy (reference ")
    # RPY's ISA with RJ1 is untouched.
    assert (await stack.get(binary, headers=tokens.headers("RPY", "clinician"))).status == 200


async def _status_is(probe: Any, expected: int) -> bool:
    return (await probe())[0] == expected


async def test_a_category_opt_out_reaches_retrieval_and_alerting(amqp_stack: tuple[TestClient, Tokens]) -> None:
    stack, tokens = amqp_stack
    patient = tokens.headers("NHSLOGIN", "patient", patient=TEST_PATIENT)
    response = await stack.put(
        "/fhir/Consent/preferences",
        headers={**FHIR, **patient},
        json={
            "resourceType": "Consent",
            "status": "active",
            "provision": {"type": "permit", "provision": [{"type": "deny", "class": [{"code": "pathology"}]}]},
        },
    )
    assert response.status == 200
    version = int((await response.json())["meta"]["versionId"])

    async def replicas_have_it() -> bool:
        for key in (STORAGE, NOTIFICATION):
            seen = await stack.server.app[key].policy.preferences(TEST_PATIENT)
            if seen is None or seen.version < version:
                return False
        return True

    await eventually(replicas_have_it, timeout=10)
    teams = ("CareTeam/rj1-lung", "CareTeam/rrv-haematology")
    ids = []
    for type_code in ("11526-1", "18842-5"):  # pathology (opted out), then a discharge summary
        response = await stack.post(
            "/fhir/DocumentReference",
            json=document_reference(type_code=type_code, related=teams),
            headers={**FHIR, **tokens.headers("RJ1")},
        )
        ids.append((await response.json())["id"])
    withheld, shared = ids

    async def alerted(org: str, mdt: str) -> set[str]:
        response = await stack.get(
            f"/fhir/Communication?recipient=CareTeam/{mdt}", headers=tokens.headers(org, "mdt-coordinator", mdt=mdt)
        )
        return {e["resource"]["about"][0]["reference"].rsplit("/", 1)[1] for e in (await response.json())["entry"]}

    async def settled() -> bool:
        return await alerted("RJ1", "rj1-lung") == {withheld, shared} and await alerted("RRV", "rrv-haematology") == {
            shared
        }

    await eventually(settled, timeout=30)
    response = await stack.get(f"/fhir/Binary/{withheld}", headers=tokens.headers("RRV", "clinician"))
    assert (response.status, (await response.json())["issue"][0]["diagnostics"]) == (
        403,
        f"Access denied: not permitted by the sharing policy (reference {response.headers['X-Correlation-Id']}).",
    )
    assert (await stack.get(f"/fhir/Binary/{shared}", headers=tokens.headers("RRV", "clinician"))).status == 200
