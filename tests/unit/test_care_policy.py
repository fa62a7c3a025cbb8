"""Purpose of use and the care records: a token states its purpose, the one policy decision weighs it,
an end-of-life ISA admits end-of-life plans and nothing else, and a patient's opt-out withholds them;
every refusal is a 403 with an access.denied record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient

from services.care import examples
from shared.auth import Caller, EmbeddedIssuer, TokenVerifier, Unauthorized
from shared.config import Settings
from shared.events import AgreementState, AgreementStatus, DocumentFacts
from shared.fhir.identifiers import LOINC, SNOMED
from shared.policy import covers, purpose_for
from tests.helpers import eventually
from tests.unit.care_support import (  # noqa: F401
    CATEGORY_SYSTEM,
    FHIR,
    PATIENT,
    audit_types,
    call,
    care_of,
    care_plan_search,
    care_stack,
    isa,
    opt_out,
    outcome,
)

SEARCH = care_plan_search(PATIENT)


async def plan_by_rj1(client: TestClient, tokens: Any) -> str:
    status, plan, _ = await call(client, tokens, "POST", "/fhir/CarePlan", "RJ1", examples.care_plan(PATIENT))
    assert status == 201, plan
    return str(plan["id"])


def test_a_token_states_its_purpose_and_an_unknown_purpose_is_refused(settings: Settings, tokens: Any) -> None:
    verifier = TokenVerifier(tokens.issuer.jwks(), issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    stated = verifier.verify(tokens.headers("RAL", "clinician", purpose="end-of-life-care")["Authorization"])
    assert stated.purpose == "end-of-life-care"
    assert purpose_for(stated) == "end-of-life-care"
    # Without the claim, the role's default: direct care, or cancer care for MDT staff.
    plain = verifier.verify(tokens.headers("RAL", "clinician")["Authorization"])
    assert (plain.purpose, purpose_for(plain)) == (None, "direct-care")
    mdt = verifier.verify(tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")["Authorization"])
    assert purpose_for(mdt) == "cancer-care"
    # IHE IUA carries a Coding; a code nobody agreed to is refused (a direct-care ISA would cover it).
    key = tokens.issuer._key
    claims = jwt.decode(tokens("RAL", "clinician"), options={"verify_signature": False})
    coded = jwt.encode(
        {**claims, "purpose_of_use": {"system": "x", "code": "transfer-of-care"}},
        key,
        "ES256",
        headers={"kid": tokens.issuer.kid},
    )
    assert verifier.verify(f"Bearer {coded}").purpose == "transfer-of-care"
    bogus = jwt.encode({**claims, "purpose_of_use": "marketing"}, key, "ES256", headers={"kid": tokens.issuer.kid})
    with pytest.raises(Unauthorized, match="purpose_of_use must be one of"):
        verifier.verify(f"Bearer {bogus}")
    with pytest.raises(ValueError):
        tokens("RAL", "clinician", purpose="marketing")


def test_lhcie_token_mints_a_purpose(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lhcie.cli import main

    monkeypatch.setenv("LHCIE_DATA_DIR", str(settings.data_dir))
    # lhcie token signs with a running exchange's key and never makes one: the exchange's start makes it.
    EmbeddedIssuer(settings.data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    assert main(["token", "--org", "RAL", "--role", "clinician", "--purpose", "end-of-life-care"]) == 0
    minted = capsys.readouterr().out.strip()
    assert jwt.decode(minted, options={"verify_signature": False})["purpose_of_use"] == "end-of-life-care"


def _isa(purposes: tuple[str, ...], categories: tuple[str, ...] = ()) -> AgreementState:
    return AgreementState(
        agreement_id="isa",
        title="t",
        parties=("RAL", "RJ1"),
        purposes=purposes,
        status=AgreementStatus.ACCEPTED,
        categories=categories,
        version=1,
    )


@pytest.mark.parametrize(
    ("purposes", "purpose", "category", "admitted"),
    [
        (("end-of-life-care",), "end-of-life-care", "end-of-life-care", True),
        (("end-of-life-care",), "end-of-life-care", "pathology", False),  # nothing else
        (("end-of-life-care",), "end-of-life-care", "transfer-of-care", False),
        (("end-of-life-care",), "direct-care", "end-of-life-care", False),  # the request must state the purpose
        (("transfer-of-care",), "transfer-of-care", "transfer-of-care", True),
        (("transfer-of-care",), "transfer-of-care", "discharge-summary", True),
        (("transfer-of-care",), "transfer-of-care", "end-of-life-care", False),
        (("direct-care",), "end-of-life-care", "pathology", True),  # direct care covers its sub-purposes
        (("cancer-care",), "cancer-care", "pathology", True),  # unchanged
    ],
)
def test_a_purpose_limited_isa_admits_only_its_own_records(
    purposes: tuple[str, ...], purpose: str, category: str, admitted: bool
) -> None:
    assert covers(_isa(purposes), "RAL", "RJ1", purpose, category, datetime.now(UTC)) is admitted


async def test_reads_without_an_end_of_life_isa_are_refused_and_audited(care_stack: TestClient, tokens: Any) -> None:
    plan_id = await plan_by_rj1(care_stack, tokens)
    status, body, headers = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan_id}", "RAL")
    assert status == 403
    # The caller learns a generic reason and a reference; the rule (no ISA) is in the audit record.
    assert body["issue"] == [
        outcome(
            "ACCESS_DENIED",
            "forbidden",
            f"Access denied: not permitted by the sharing policy (reference {headers['X-Correlation-Id']}).",
        )
    ]
    # A search tells a caller without the right nothing of the plan: an empty searchset, the refusal recorded.
    status, body, _ = await call(care_stack, tokens, "GET", SEARCH, "RAL", purpose="end-of-life-care")
    assert (status, body.get("entry", [])) == (200, [])

    # An ISA for end-of-life care: a request that states that purpose reads the plan; one that does not, cannot.
    await isa(care_stack, tokens, "RAL", "RJ1", ("end-of-life-care",))
    status, body, _ = await call(care_stack, tokens, "GET", SEARCH, "RAL")
    assert (status, body.get("entry", [])) == (200, [])
    status, found, _ = await call(care_stack, tokens, "GET", SEARCH, "RAL", purpose="end-of-life-care")
    assert (status, [e["resource"]["id"] for e in found["entry"]]) == (200, [plan_id])
    # ... and nothing else of RJ1's: a pathology report is outside that ISA.
    care = care_of(care_stack)
    pathology = DocumentFacts(
        document_id="d",
        patient_nhs_number=PATIENT,
        custodian="RJ1",
        type_system=LOINC,
        type_code="11526-1",
        content_type="application/pdf",
        size=1,
        sha256="x",
    )
    ral = Caller(org="RAL", role="clinician", subject="c", scopes=frozenset(), purpose="end-of-life-care")
    decision = await care.policy.decide(ral, pathology)
    assert (decision.allowed, decision.rule) == (False, "no-isa")
    eol = pathology.model_copy(update={"type_system": SNOMED, "type_code": "1382601000000107"})
    assert (await care.policy.decide(ral, eol)).allowed

    async def trail() -> list[str] | None:
        types = await audit_types(care_stack, tokens, f"CarePlan/{plan_id}")
        return types if types.count("access.denied") == 1 and "record.read" in types else None

    assert await eventually(trail) == ["access.denied", "careplan.created", "record.read"]
    # The refused searches are recorded against the patient (no plan is named to a refused reader): the
    # exchange operator sees all three refusals; RJ1's admin only the one naming RJ1's plan.
    query = f"/fhir/AuditEvent?patient.identifier={PATIENT}&subtype=access.denied"
    status, bundle, _ = await call(care_stack, tokens, "GET", query, "LHCIE", role="exchange-operator")
    assert status == 200
    assert len(bundle["entry"]) == 3
    status, bundle, _ = await call(care_stack, tokens, "GET", query, "RJ1", role="dcc-admin")
    assert [e["resource"]["entity"][0]["what"]["reference"] for e in bundle["entry"]] == [f"CarePlan/{plan_id}"]


async def test_a_patients_opt_out_withholds_end_of_life_plans(care_stack: TestClient, tokens: Any) -> None:
    plan_id = await plan_by_rj1(care_stack, tokens)
    status, _, _ = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan_id}", "RRV")
    assert status == 200
    await opt_out(care_stack, tokens, PATIENT, "end-of-life-care")
    status, body, _ = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan_id}", "RRV")
    assert status == 403
    # Never the patient's preference to the caller: a generic reason and a reference.
    assert body["issue"][0]["diagnostics"].startswith("Access denied: not permitted by the sharing policy")
    assert "opt-out" not in json.dumps(body)
    status, body, _ = await call(care_stack, tokens, "GET", SEARCH, "RRV")
    assert (status, body.get("entry", [])) == (200, [])
    # The custodian and the patient still see it.
    status, _, _ = await call(care_stack, tokens, "GET", f"/fhir/CarePlan/{plan_id}", "RJ1")
    assert status == 200
    status, found, _ = await call(care_stack, tokens, "GET", SEARCH, "NHSLOGIN", role="patient", patient=PATIENT)
    assert (status, found["total"]) == (200, 1)

    async def trail() -> list[str] | None:
        # The operator's view: a refused search names no plan, so it does not involve RJ1.
        _status, bundle, _ = await call(
            care_stack,
            tokens,
            "GET",
            f"/fhir/AuditEvent?patient.identifier={PATIENT}&subtype=access.denied",
            "LHCIE",
            role="exchange-operator",
        )
        entries = bundle.get("entry", [])
        return entries if len(entries) == 4 else None

    # Each refusal, and (BALP) the consent decision it rested on.
    denied = await eventually(trail)
    assert sorted(e["resource"]["subtype"][0]["code"] for e in denied) == [
        "AuthZ-Consent",
        "AuthZ-Consent",
        "read",
        "search",
    ]
    assert {e["resource"]["outcomeDesc"] for e in denied} == {
        "a patient sharing preference (category opt-out) withholds this document from RRV"
    }


async def test_the_opt_out_categories_include_end_of_life_and_transfers(
    care_stack: TestClient, tokens: Any, tmp_path: Path
) -> None:
    await opt_out(care_stack, tokens, PATIENT, "end-of-life-care", "transfer-of-care")
    status, body, _ = await call(
        care_stack,
        tokens,
        "PUT",
        "/fhir/Consent/preferences",
        "NHSLOGIN",
        {
            "resourceType": "Consent",
            "status": "active",
            "provision": {"type": "permit", "provision": [{"type": "deny", "class": [{"code": "end-of-lives"}]}]},
        },
        role="patient",
        patient=PATIENT,
    )
    assert status == 422
    assert "end-of-life-care" in body["issue"][0]["diagnostics"]
    assert "transfer-of-care" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("purposes", "categories", "why"),
    [
        (
            ("end-of-life-care",),
            ("pathology",),
            "its purposes (end-of-life-care) admit none of its document categories (pathology)",
        ),
        (
            ("end-of-life-care", "transfer-of-care"),
            ("imaging", "referral"),
            "its purposes (end-of-life-care, transfer-of-care) admit none of its document categories (imaging, referral)",
        ),
        (("end-of-life-care",), ("end-of-life-care", "pathology"), None),
        (("end-of-life-care",), (), None),
        (("cancer-care",), ("pathology",), None),
        (("direct-care",), ("pathology",), None),
    ],
)
def test_an_isa_that_can_never_apply_is_named(
    purposes: tuple[str, ...], categories: tuple[str, ...], why: str | None
) -> None:
    from shared.policy import never_applies

    assert never_applies(_isa(purposes, categories)) == why


async def test_the_dcc_is_warned_of_an_isa_that_can_never_apply(care_stack: TestClient, tokens: Any) -> None:
    """The agreements API marks such an ISA on every Contract it returns (proposal, read, acceptance)."""
    never = "https://lhcie.london/fhir/StructureDefinition/never-applies"
    body = {
        "resourceType": "Contract",
        "title": "End-of-life ISA for pathology",
        "authority": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RRV"}}],
        "scope": {"coding": [{"code": "end-of-life-care"}]},
        "term": [
            {
                "asset": [{"type": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "pathology"}]}]}],
                "offer": {"text": "documents"},
            }
        ],
    }
    warning = {
        "url": never,
        "valueString": "This agreement can never apply: its purposes (end-of-life-care) admit "
        "none of its document categories (pathology).",
    }
    response = await care_stack.post(
        "/fhir/Contract", json=body, headers={**FHIR, **tokens.headers("RJ1", "dcc-admin")}
    )
    assert response.status == 201
    proposed = await response.json()
    assert proposed["extension"] == [warning]
    response = await care_stack.post(
        f"/fhir/Contract/{proposed['id']}/$accept", headers=tokens.headers("RRV", "dcc-admin")
    )
    assert (await response.json())["extension"] == [warning]
    response = await care_stack.get(f"/fhir/Contract/{proposed['id']}", headers=tokens.headers("RRV", "dcc-admin"))
    assert (await response.json())["extension"] == [warning]
    # One that can apply carries no warning.
    body["term"][0]["asset"][0]["type"][0]["coding"][0]["code"] = "end-of-life-care"
    response = await care_stack.post(
        "/fhir/Contract", json=body, headers={**FHIR, **tokens.headers("RJ1", "dcc-admin")}
    )
    assert "extension" not in await response.json()
