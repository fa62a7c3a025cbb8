"""The embedded run's demo data: London trusts (real ODS codes), one cancer MDT each, accepted ISAs,
and one patient (the test NHS number) who has authorised a carer.

The Royal Free (RAL) has no ISA with anyone, so the demo can show a refusal.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.agreements.domain import AgreementsService
from shared.events import (
    AgreementState,
    AgreementStatus,
    CarerGrantState,
    CareTeamState,
    OrganisationState,
    RoutingKey,
)

ORGANISATIONS = (
    ("RJ1", "Guy's and St Thomas' NHS Foundation Trust"),
    ("RRV", "University College London Hospitals NHS Foundation Trust"),
    ("RPY", "The Royal Marsden NHS Foundation Trust"),
    ("RAL", "Royal Free London NHS Foundation Trust"),
)
MDTS = (
    ("rj1-lung", "Guy's and St Thomas' Lung Cancer MDT", "RJ1", "lung"),
    ("rrv-haematology", "UCLH Haematological Cancer MDT", "RRV", "haematology"),
    ("rpy-breast", "Royal Marsden Breast Cancer MDT", "RPY", "breast"),
    ("ral-colorectal", "Royal Free Colorectal Cancer MDT", "RAL", "colorectal"),
)
AGREEMENTS = (
    ("isa-rj1-rrv", "South East London and North Central London cancer ISA", ("RJ1", "RRV")),
    ("isa-rj1-rpy", "RM Partners cancer network ISA (GSTT)", ("RJ1", "RPY")),
    ("isa-rrv-rpy", "RM Partners cancer network ISA (UCLH)", ("RRV", "RPY")),
)
PURPOSES = ("direct-care", "cancer-care", "transfer-of-care", "end-of-life-care")
# Patients and carers sign in through the patient-facing login, not an organisation; their tokens
# carry this pseudo-organisation (``lhcie token --org NHSLOGIN --role patient --patient 9000000009``).
PATIENT_LOGIN_ORG = "NHSLOGIN"
DEMO_PATIENT = "9000000009"
DEMO_CARER_SUBJECT = f"carer@{PATIENT_LOGIN_ORG}"  # what ``lhcie token --org NHSLOGIN --role carer`` carries


async def seed(service: AgreementsService) -> bool:
    """Load the demo data into an empty registry; returns whether it did."""
    registry = service.registry
    if not await registry.is_empty():
        return False
    for ods, name in ORGANISATIONS:
        await registry.save(
            OrganisationState(ods_code=ods, name=name, kind="acute-trust", version=1),
            RoutingKey.POLICY_ORGANISATION_UPDATED,
            details={
                "contacts": [
                    {
                        "purpose": {"text": "Data controller"},
                        "telecom": [{"system": "email", "value": f"dcc@{ods.lower()}.nhs.example"}],
                    }
                ]
            },
        )
    for careteam_id, name, org, site in MDTS:
        await registry.save(
            CareTeamState(
                careteam_id=careteam_id,
                name=name,
                organisation=org,
                tumour_site=site,
                coordinators=(f"mdt-coordinator@{org}",),
                version=1,
            ),
            RoutingKey.POLICY_CARETEAM_UPDATED,
        )
    for agreement_id, title, parties in AGREEMENTS:
        await registry.save(
            AgreementState(
                agreement_id=agreement_id,
                title=title,
                parties=parties,
                purposes=PURPOSES,
                status=AgreementStatus.ACCEPTED,
                valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                valid_to=datetime(2029, 12, 31, tzinfo=UTC),
                proposed_by=parties[0],
                accepted_by=parties,
                version=1,
            ),
            RoutingKey.POLICY_AGREEMENT_ACCEPTED,
        )
    await registry.save(
        CarerGrantState(
            grant_id="grant-demo",
            patient_nhs_number=DEMO_PATIENT,
            carer_subject=DEMO_CARER_SUBJECT,
            carer_name="T. Brown",
            relationship="daughter",
            version=1,
        ),
        RoutingKey.POLICY_CONSENT_CARER_GRANTED,
    )
    return True
