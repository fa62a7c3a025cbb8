"""Organization and CareTeam as FHIR resources, both ways. Parsing collects one issue per invalid field,
with its expression."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.agreements.vocabulary import (
    ORG_TYPE_SYSTEM,
    ORGANISATION_KINDS,
    ods_reference,
)
from shared.events import (
    CareTeamState,
    OrganisationState,
)
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import ODS_CODE, identifier_value


def organization(state: OrganisationState, contacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": state.ods_code,
        "meta": {"versionId": str(state.version)},
        "identifier": [{"system": ODS_CODE, "value": state.ods_code}],
        "active": state.active,
        "type": [{"coding": [{"system": ORG_TYPE_SYSTEM, "code": state.kind}]}],
        "name": state.name,
    }
    if contacts:
        resource["contact"] = contacts
    return resource


def careteam(state: CareTeamState) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CareTeam",
        "id": state.careteam_id,
        "meta": {"versionId": str(state.version)},
        "status": "active" if state.active else "inactive",
        "name": state.name,
        "managingOrganization": [ods_reference(state.organisation)],
        "participant": [
            {"role": [{"text": "MDT coordinator"}], "member": {"display": who}} for who in state.coordinators
        ],
    }
    if state.tumour_site:
        resource["category"] = [{"text": f"{state.tumour_site} cancer MDT"}]
    return resource


@dataclass(frozen=True)
class OrganisationInput:
    state: OrganisationState
    contacts: list[dict[str, Any]]


def parse_organization(body: dict[str, Any]) -> OrganisationInput:
    issues: list[Issue] = []
    ods = next(
        (i.get("value") for i in body.get("identifier") or [] if isinstance(i, dict) and i.get("system") == ODS_CODE),
        None,
    )
    if not isinstance(ods, str) or not ods.isalnum() or not 3 <= len(ods) <= 10:
        issues.append(
            Issue(Code.INVALID_RESOURCE, f"identifier must hold an ODS code ({ODS_CODE})", "Organization.identifier")
        )
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        issues.append(Issue(Code.INVALID_RESOURCE, "name is required", "Organization.name"))
    kind = next(
        (
            c.get("code")
            for t in body.get("type") or []
            if isinstance(t, dict)
            for c in t.get("coding") or []
            if isinstance(c, dict) and c.get("system") == ORG_TYPE_SYSTEM
        ),
        None,
    )
    if kind not in ORGANISATION_KINDS:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"type must be one of {', '.join(ORGANISATION_KINDS)} ({ORG_TYPE_SYSTEM})",
                "Organization.type",
            )
        )
    contacts = body.get("contact") or []
    if not isinstance(contacts, list) or not all(isinstance(c, dict) for c in contacts):
        issues.append(Issue(Code.INVALID_RESOURCE, "contact must be a list of contacts", "Organization.contact"))
    active = body.get("active", True)
    if not isinstance(active, bool):
        issues.append(Issue(Code.INVALID_RESOURCE, "active must be true or false", "Organization.active"))
    if issues:
        raise FhirError(issues)
    # Only the parts of a contact the console shows are kept: purpose, name and telecom.
    kept = [{k: c[k] for k in ("purpose", "name", "telecom") if k in c} for c in contacts]
    return OrganisationInput(
        OrganisationState(ods_code=str(ods).upper(), name=str(name).strip(), kind=str(kind), active=active, version=1),
        kept,
    )


def parse_careteam(body: dict[str, Any], *, careteam_id: str) -> CareTeamState:
    issues: list[Issue] = []
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        issues.append(Issue(Code.INVALID_RESOURCE, "name is required", "CareTeam.name"))
    managing = body.get("managingOrganization") or []
    org = identifier_value(managing[0], ODS_CODE) if managing else None
    if not org:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "managingOrganization[0].identifier must be an ODS code",
                "CareTeam.managingOrganization",
            )
        )
    coordinators = []
    for i, p in enumerate(body.get("participant") or []):
        who = (p.get("member") or {}).get("display") if isinstance(p, dict) else None
        if not isinstance(who, str) or not who.strip():
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "member.display must name the coordinator's login",
                    f"CareTeam.participant[{i}]",
                )
            )
        else:
            coordinators.append(who.strip())
    category = (body.get("category") or [{}])[0]
    site = category.get("text", "").removesuffix(" cancer MDT").strip() if isinstance(category, dict) else ""
    status = body.get("status", "active")
    if status not in ("active", "inactive"):
        issues.append(Issue(Code.INVALID_RESOURCE, "status must be active or inactive", "CareTeam.status"))
    if issues:
        raise FhirError(issues)
    return CareTeamState(
        careteam_id=careteam_id,
        name=str(name).strip(),
        organisation=str(org),
        tumour_site=site or None,
        coordinators=tuple(coordinators),
        active=status == "active",
        version=1,
    )
