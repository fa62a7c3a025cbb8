"""``PolicyView.decide`` on its own: fed policy events, it answers for every rule and fails closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.auth import Caller
from shared.config import Settings
from shared.events import (
    AgreementState,
    AgreementStatus,
    ConsentSynced,
    DocumentFacts,
    Event,
    OrganisationState,
    PatientPreferencesState,
    Payload,
    RoutingKey,
)
from shared.fhir.identifiers import LOINC
from shared.policy import Decision, PolicyView
from shared.store import open_store
from tests.helpers import TEST_PATIENT

PATHOLOGY = DocumentFacts(
    document_id="d1",
    patient_nhs_number=TEST_PATIENT,
    custodian="RJ1",
    type_system=LOINC,
    type_code="11526-1",
    content_type="application/pdf",
    size=1,
    sha256="0" * 64,
)
DISCHARGE = PATHOLOGY.model_copy(update={"type_code": "18842-5"})


@pytest.fixture
async def view(settings: Settings) -> AsyncIterator[PolicyView]:
    store = open_store(settings, "policy-test")
    policy = PolicyView(store)
    await store.start()
    for ods in ("RJ1", "RRV", "RAL", "RPY"):
        await feed(
            policy,
            RoutingKey.POLICY_ORGANISATION_UPDATED,
            OrganisationState(ods_code=ods, name=ods, kind="acute-trust", version=1),
        )
    yield policy
    await store.close()


async def feed(policy: PolicyView, key: RoutingKey, payload: Payload) -> None:
    await policy.apply(Event.new(key, payload, source="test"))


def isa(agreement_id: str = "isa-1", **fields: object) -> AgreementState:
    values: dict[str, object] = {
        "agreement_id": agreement_id,
        "title": "t",
        "parties": ("RJ1", "RRV"),
        "purposes": ("direct-care",),
        "status": AgreementStatus.ACCEPTED,
        "version": 1,
    }
    return AgreementState(**{**values, **fields})  # type: ignore[arg-type]


def clinician(org: str, mdt: str | None = None) -> Caller:
    return Caller(org=org, role="clinician", subject=f"c@{org}", scopes=frozenset(), mdt=mdt)


async def test_an_accepted_in_date_isa_permits_and_anything_less_denies(view: PolicyView) -> None:
    deny = Decision.deny("no-isa", "no accepted ISA between RRV and RJ1 for purpose direct-care")
    assert await view.decide(clinician("RRV"), PATHOLOGY) == deny
    await feed(view, RoutingKey.POLICY_AGREEMENT_PROPOSED, isa(status=AgreementStatus.PROPOSED, accepted_by=("RJ1",)))
    assert await view.decide(clinician("RRV"), PATHOLOGY) == deny
    await feed(view, RoutingKey.POLICY_AGREEMENT_ACCEPTED, isa(accepted_by=("RJ1", "RRV"), version=2))
    assert await view.decide(clinician("RRV"), PATHOLOGY) == Decision.permit("isa", "ISA isa-1 is accepted")
    # An older event arriving late changes nothing (replicas keep the newest version).
    await feed(view, RoutingKey.POLICY_AGREEMENT_SYNCED, isa(status=AgreementStatus.PROPOSED, version=1))
    assert (await view.decide(clinician("RRV"), PATHOLOGY)).allowed
    await feed(
        view, RoutingKey.POLICY_AGREEMENT_EXPIRED, isa(valid_to=datetime.now(UTC) - timedelta(seconds=1), version=3)
    )
    assert await view.decide(clinician("RRV"), PATHOLOGY) == deny
    assert await view.decide(clinician("RJ1"), PATHOLOGY) == Decision.permit("custodian", "RJ1 is the custodian")
    assert await view.decide(clinician("XYZ"), PATHOLOGY) == Decision.deny(
        "unknown-organisation", "XYZ is not a known active organisation"
    )


async def test_sub_purposes_and_document_categories_limit_an_isa(view: PolicyView) -> None:
    await feed(view, RoutingKey.POLICY_AGREEMENT_ACCEPTED, isa(purposes=("cancer-care",), categories=("pathology",)))
    # MDT staff work on cancer care; a clinician without an MDT asks for direct care in general.
    assert (await view.decide(clinician("RRV", mdt="rrv-haematology"), PATHOLOGY)).allowed
    assert await view.decide(clinician("RRV"), PATHOLOGY) == Decision.deny(
        "no-isa", "no accepted ISA between RRV and RJ1 for purpose direct-care"
    )
    assert (await view.decide(clinician("RRV"), PATHOLOGY, purpose="cancer-care")).allowed
    assert await view.decide(clinician("RRV", mdt="rrv-haematology"), DISCHARGE) == Decision.deny(
        "no-isa", "no accepted ISA between RRV and RJ1 for purpose cancer-care covering discharge-summary documents"
    )


async def test_a_template_isa_permits_between_signatories_only(view: PolicyView) -> None:
    await feed(
        view,
        RoutingKey.POLICY_AGREEMENT_UPDATED,
        isa(parties=("RJ1", "RRV", "RAL"), accepted_by=("RJ1", "RRV", "RAL"), template=True),
    )
    assert (await view.decide(clinician("RAL"), PATHOLOGY)).allowed
    assert not (await view.decide(clinician("RPY"), PATHOLOGY)).allowed


async def test_patient_preferences_deny_without_saying_what_the_patient_chose(view: PolicyView) -> None:
    await feed(view, RoutingKey.POLICY_AGREEMENT_ACCEPTED, isa(parties=("RJ1", "RRV", "RPY")))
    await feed(
        view,
        RoutingKey.POLICY_CONSENT_SYNCED,
        ConsentSynced(
            preferences=PatientPreferencesState(
                patient_nhs_number=TEST_PATIENT,
                opted_out_categories=("pathology",),
                opted_out_organisations=("RPY",),
                version=1,
            )
        ),
    )
    assert await view.decide(clinician("RRV"), PATHOLOGY) == Decision.deny(
        "patient-opt-out-category", "a patient sharing preference (category opt-out) withholds this document from RRV"
    )
    assert (await view.decide(clinician("RRV"), DISCHARGE)).allowed
    assert await view.decide(clinician("RPY"), DISCHARGE) == Decision.deny(
        "patient-opt-out-organisation",
        "a patient sharing preference (organisation opt-out) withholds this document from RPY",
    )
    # The custodian is exempt; another patient's documents are untouched.
    assert (await view.decide(clinician("RJ1"), PATHOLOGY)).allowed
    other = PATHOLOGY.model_copy(update={"patient_nhs_number": "9000000017"})
    assert (await view.decide(clinician("RRV"), other)).allowed
    for decision in [await view.decide(clinician(o), d) for o, d in (("RRV", PATHOLOGY), ("RPY", DISCHARGE))]:
        assert TEST_PATIENT not in decision.reason and "pathology" not in decision.reason
