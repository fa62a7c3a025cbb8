"""What an end-of-life CarePlan must look like, and how a stored version is shown.

A plan is a FHIR CarePlan in the end-of-life category, typed with one of the SNOMED record types the
National Record Locator uses, whose content is a contained QuestionnaireResponse to the published
end-of-life form (the ReSPECT / Universal Care Plan sections). ``draft`` may be incomplete; ``active``
(completed by a clinician, with the patient's consent recorded) must answer every required section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.care.questionnaires import END_OF_LIFE, check_response, with_displays
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, SNOMED, identifier_value, valid_nhs_number

CATEGORY_SYSTEM = "https://lhcie.london/fhir/CodeSystem/careplan-category"
END_OF_LIFE_CATEGORY = "end-of-life"
RECORD_TYPES = {
    "861421000000109": "End of life care coordination summary",
    "736373009": "End of life care plan",
    "1382601000000107": "ReSPECT form",
}
STATUSES = ("draft", "active", "revoked")
CHANGE_REASON = "https://lhcie.london/fhir/StructureDefinition/change-reason"
CHANGED_BY = "https://lhcie.london/fhir/StructureDefinition/changed-by"


@dataclass(frozen=True)
class PlanInput:
    resource: dict[str, Any]
    patient: str
    record_type: str
    status: str
    reason: str | None


def check_plan(data: dict[str, Any]) -> PlanInput:
    """One issue per problem (422); the resource is kept as sent, less what the server owns."""
    issues: list[Issue] = []
    if data.get("resourceType") != "CarePlan":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a CarePlan resource.", "resourceType")
    status = data.get("status")
    if status not in STATUSES:
        issues.append(Issue(Code.INVALID_RESOURCE, f"status must be one of {', '.join(STATUSES)}", "CarePlan.status"))
    if data.get("intent") != "plan":
        issues.append(Issue(Code.INVALID_RESOURCE, "intent must be plan", "CarePlan.intent"))
    patient = identifier_value(data.get("subject"), NHS_NUMBER)
    if not valid_nhs_number(patient):
        issues.append(
            Issue(
                Code.INVALID_NHS_NUMBER, "subject.identifier must be a valid NHS number", "CarePlan.subject.identifier"
            )
        )
    codings = [
        c
        for cat in _list(data.get("category"))
        if isinstance(cat, dict)
        for c in _list(cat.get("coding"))
        if isinstance(c, dict)
    ]
    if not any(c.get("system") == CATEGORY_SYSTEM and c.get("code") == END_OF_LIFE_CATEGORY for c in codings):
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"category must include {CATEGORY_SYSTEM}|{END_OF_LIFE_CATEGORY}",
                "CarePlan.category",
            )
        )
    types = [
        c["code"]
        for c in codings
        if c.get("system") == SNOMED and isinstance(c.get("code"), str) and c["code"] in RECORD_TYPES
    ]
    if len(types) != 1:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "category must include exactly one SNOMED record type: "
                + ", ".join(f"{k} {v}" for k, v in RECORD_TYPES.items()),
                "CarePlan.category",
            )
        )
    form = _form(data, issues)
    if form is not None:
        # A completed plan answers every required section, the patient's consent among them.
        issues += check_response(END_OF_LIFE, form, "CarePlan.contained[0]", complete=status == "active")
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    reason = None
    kept = []
    for ext in _list(data.get("extension")):
        if isinstance(ext, dict) and ext.get("url") == CHANGE_REASON:
            reason = str(ext.get("valueString") or "")[:500] or None
        else:
            kept.append(ext)
    resource = {k: v for k, v in data.items() if k not in ("id", "meta", "extension")}
    resource["contained"] = [with_displays(END_OF_LIFE, data["contained"][0])]
    if kept:
        resource["extension"] = kept
    assert isinstance(patient, str) and isinstance(status, str)
    return PlanInput(resource, patient, types[0], status, reason)


def _form(data: dict[str, Any], issues: list[Issue]) -> dict[str, Any] | None:
    contained = data.get("contained")
    if not isinstance(contained, list) or len(contained) != 1 or not isinstance(contained[0], dict):
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "contained must hold the plan's form (one QuestionnaireResponse)",
                "CarePlan.contained",
            )
        )
        return None
    form = contained[0]
    ref = f"#{form.get('id')}"
    if not any(isinstance(s, dict) and s.get("reference") == ref for s in _list(data.get("supportingInfo"))):
        issues.append(
            Issue(Code.INVALID_RESOURCE, f"supportingInfo must reference the form ({ref})", "CarePlan.supportingInfo")
        )
    return form


def form_of(resource: dict[str, Any]) -> dict[str, Any]:
    form: dict[str, Any] = resource["contained"][0]
    return form


def version_view(
    plan_id: str,
    version: int,
    resource: dict[str, Any],
    *,
    updated: str,
    custodian: str,
    changed_by: str,
    reason: str | None,
) -> dict[str, Any]:
    """The stored form of one version: the server's id, meta and author added."""
    meta: dict[str, Any] = {
        "versionId": str(version),
        "lastUpdated": updated,
        "extension": [{"url": CHANGED_BY, "valueString": changed_by}],
    }
    if reason:
        meta["extension"].append({"url": CHANGE_REASON, "valueString": reason})
    out = {
        "resourceType": "CarePlan",
        "id": plan_id,
        "meta": meta,
        **{k: v for k, v in resource.items() if k != "resourceType"},
    }
    out["author"] = {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": custodian}}
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
