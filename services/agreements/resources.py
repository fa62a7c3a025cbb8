"""Policy objects as FHIR resources: Organization, CareTeam and Contract (an ISA)."""

from __future__ import annotations

from typing import Any

from shared.events import AgreementState, AgreementStatus, CareTeamState, OrganisationState
from shared.fhir.identifiers import ODS_CODE

# ISA lifecycle -> FHIR Contract.status (http://hl7.org/fhir/contract-status)
CONTRACT_STATUS = {
    AgreementStatus.PROPOSED: "offered",
    AgreementStatus.ACCEPTED: "executed",
    AgreementStatus.REJECTED: "rejected",
    AgreementStatus.REVOKED: "revoked",
    AgreementStatus.EXPIRED: "terminated",
}
PURPOSE_SYSTEM = "https://lhcie.london/fhir/CodeSystem/sharing-purpose"


def organization(state: OrganisationState) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": state.ods_code,
        "meta": {"versionId": str(state.version)},
        "identifier": [{"system": ODS_CODE, "value": state.ods_code}],
        "active": state.active,
        "type": [{"coding": [{"system": "https://lhcie.london/fhir/CodeSystem/organisation-type", "code": state.kind}]}],
        "name": state.name,
    }


def careteam(state: CareTeamState) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CareTeam",
        "id": state.careteam_id,
        "meta": {"versionId": str(state.version)},
        "status": "active" if state.active else "inactive",
        "name": state.name,
        "managingOrganization": [{"reference": f"Organization/{state.organisation}",
                                  "identifier": {"system": ODS_CODE, "value": state.organisation}}],
        "participant": [
            {"role": [{"text": "MDT coordinator"}], "member": {"display": who}} for who in state.coordinators
        ],
    }
    if state.tumour_site:
        resource["category"] = [{"text": f"{state.tumour_site} cancer MDT"}]
    return resource


def contract(state: AgreementState) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Contract",
        "id": state.agreement_id,
        "meta": {"versionId": str(state.version)},
        "status": CONTRACT_STATUS[state.status],
        "title": state.title,
        "subType": [{"text": "Information Sharing Agreement"}],
        "authority": [{"reference": f"Organization/{p}", "identifier": {"system": ODS_CODE, "value": p}}
                      for p in state.parties],
        "scope": {"coding": [{"system": PURPOSE_SYSTEM, "code": p} for p in state.purposes]},
    }
    if state.valid_from or state.valid_to:
        resource["applies"] = {k: v.isoformat() for k, v in (("start", state.valid_from), ("end", state.valid_to)) if v}
    return resource
