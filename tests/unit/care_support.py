"""Fixtures and helpers for the care service's unit tests: agreements, audit and care on the embedded
adapters (the other services play no part in care records)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.agreements.app import SPEC as AGREEMENTS
from services.audit.app import SPEC as AUDIT
from services.care.app import SPEC as CARE_SPEC
from services.care.domain import Care
from services.care.routes import CARE
from shared.config import Settings
from shared.edge import build_app
from shared.fhir.identifiers import ODS_CODE
from tests.helpers import eventually

FHIR = {"Content-Type": "application/fhir+json"}
PURPOSES = "https://lhcie.london/fhir/CodeSystem/sharing-purpose"
CATEGORY_SYSTEM = "https://lhcie.london/fhir/CodeSystem/document-category"
PATIENT = "9000000017"
ERROR_SYSTEM = "https://lhcie.london/fhir/CodeSystem/error-code"


@pytest.fixture
async def care_stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("LHCIE_CARE_DEMO_DATA", "false")
    monkeypatch.setenv("LHCIE_CARE_TIMER_TICK_SECONDS", "3600")  # tests fire timers themselves
    app = build_app(settings, [AGREEMENTS, AUDIT, CARE_SPEC])
    async with TestClient(TestServer(app)) as client:
        care = app[CARE]

        async def ready() -> bool:
            return all([await care.policy.organisation(o) for o in ("RJ1", "RRV", "RPY", "RAL")]) and bool(
                await care.policy.agreements_between("RJ1", "RRV")
            )

        await eventually(ready)
        yield client


def care_of(client: TestClient) -> Care:
    return client.server.app[CARE]


def outcome(code: str, issue_type: str, diagnostics: str, *expressions: str) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": issue_type,
        "details": {"coding": [{"system": ERROR_SYSTEM, "code": code}]},
        "diagnostics": diagnostics,
    }
    if expressions:
        issue["expression"] = list(expressions)
    return issue


async def call(
    client: TestClient,
    tokens: Any,
    method: str,
    path: str,
    org: str = "RJ1",
    body: Any = None,
    role: str = "clinician",
    headers: dict[str, str] | None = None,
    **claims: Any,
) -> tuple[int, Any, Any]:
    response = await client.request(
        method, path, json=body, headers={**FHIR, **tokens.headers(org, role, **claims), **(headers or {})}
    )
    return response.status, await response.json(), response.headers


async def isa(client: TestClient, tokens: Any, a: str, b: str, purposes: tuple[str, ...]) -> str:
    """An accepted ISA between ``a`` and ``b`` for ``purposes``, made through the agreements API, once the
    care service's policy replica has it."""
    body = {
        "resourceType": "Contract",
        "title": f"{a} and {b} ISA",
        "authority": [{"identifier": {"system": ODS_CODE, "value": p}} for p in (a, b)],
        "scope": {"coding": [{"system": PURPOSES, "code": p} for p in purposes]},
    }
    status, proposed, _ = await call(client, tokens, "POST", "/fhir/Contract", a, body, role="dcc-admin")
    assert status == 201, proposed
    status, accepted, _ = await call(
        client, tokens, "POST", f"/fhir/Contract/{proposed['id']}/$accept", b, role="dcc-admin"
    )
    assert status == 200, accepted
    care = care_of(client)

    async def known() -> bool:
        return any(
            ag.agreement_id == proposed["id"] and ag.status == "accepted"
            for ag in await care.policy.agreements_between(a, b)
        )

    await eventually(known)
    return str(proposed["id"])


async def opt_out(client: TestClient, tokens: Any, patient: str, *categories: str) -> None:
    body = {
        "resourceType": "Consent",
        "status": "active",
        "provision": {
            "type": "permit",
            "provision": [{"type": "deny", "class": [{"system": CATEGORY_SYSTEM, "code": c}]} for c in categories],
        },
    }
    status, consent, _ = await call(
        client, tokens, "PUT", "/fhir/Consent/preferences", "NHSLOGIN", body, role="patient", patient=patient
    )
    assert status == 200, consent
    care = care_of(client)

    async def known() -> bool:
        prefs = await care.policy.preferences(patient)
        return prefs is not None and set(categories) <= set(prefs.opted_out_categories)

    await eventually(known)


async def audit_types(client: TestClient, tokens: Any, entity: str, admin_org: str = "RJ1") -> list[str]:
    status, bundle, _ = await call(
        client, tokens, "GET", f"/fhir/AuditEvent?entity={entity}", admin_org, role="dcc-admin"
    )
    assert status == 200, bundle
    return sorted(e["resource"]["subtype"][1]["code"] for e in bundle.get("entry", []))


def care_plan_search(patient: str, extra: str = "&category=end-of-life") -> str:
    return f"/fhir/CarePlan?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{patient}{extra}"
