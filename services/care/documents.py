"""What a discharge summary must look like: a FHIR document Bundle with the PRSB eDischarge headings.

The Composition's sections carry the headings (coded in the exchange's heading code system, named as the
PRSB eDischarge standard names them). The mandatory headings must be present and not empty; the others
are checked for shape only when sent. The GP practice heading names the practice (an ODS identifier);
the distribution list names the other recipients (the patient's local trust among them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, SNOMED, identifier_value, valid_nhs_number

HEADING_SYSTEM = "https://lhcie.london/fhir/CodeSystem/prsb-edischarge-heading"
DISCHARGE_TYPE = "373942005"  # SNOMED: Discharge summary
MANDATORY = {
    "patient-demographics": "Patient demographics",
    "gp-practice": "GP practice",
    "allergies-and-adverse-reactions": "Allergies and adverse reactions",
    "clinical-summary": "Clinical summary",
    "diagnoses": "Diagnoses",
    "person-completing-record": "Person completing record",
}
REQUIRED_WHERE_KNOWN = {
    "admission-details": "Admission details",
    "discharge-details": "Discharge details",
    "distribution-list": "Distribution list",
    "plan-and-requested-actions": "Plan and requested actions",
    "safety-alerts": "Safety alerts",
    "medications-and-medical-devices": "Medications and medical devices",
    "procedures": "Procedures",
    "investigations-and-results": "Investigation results",
    "information-given": "Information and advice given",
    "patient-and-carer-concerns": "Patient and carer concerns, expectations and wishes",
    "social-context": "Social context",
    "legal-information": "Legal information",
    "participation-in-research": "Participation in research",
}
HEADINGS = {**MANDATORY, **REQUIRED_WHERE_KNOWN}
# ITK3-style acknowledgement codes.
INFRASTRUCTURE_OUTCOMES = ("accepted", "rejected")
REJECTION_CODES = ("duplicate", "payload-validation-failure", "unknown-recipient", "unsupported-payload", "other")
BUSINESS_CODES = ("patient-known", "patient-not-known", "no-longer-at-setting")


@dataclass(frozen=True)
class Summary:
    bundle: dict[str, Any]
    identifier: str
    patient: str
    recipients: tuple[str, ...]
    replaces: str | None


def check_summary(data: dict[str, Any], sender: str) -> Summary:
    """One issue per problem; the caller answers 422 with the ITK code payload-validation-failure."""
    if data.get("resourceType") != "Bundle":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a Bundle resource.", "resourceType")
    issues: list[Issue] = []
    if data.get("type") != "document":
        issues.append(Issue(Code.INVALID_RESOURCE, "type must be document", "Bundle.type"))
    identifier = _dict(data.get("identifier")).get("value")
    if not isinstance(identifier, str) or not identifier.strip():
        issues.append(
            Issue(Code.INVALID_RESOURCE, "identifier.value is required (it tracks the document)", "Bundle.identifier")
        )
    entries = _list(data.get("entry"))
    composition = _dict(entries[0]).get("resource") if entries else None
    if not isinstance(composition, dict) or composition.get("resourceType") != "Composition":
        issues.append(Issue(Code.INVALID_RESOURCE, "the first entry must be the Composition", "Bundle.entry[0]"))
        raise FhirError(issues)
    where = "Bundle.entry[0].resource"
    codes = [c for c in _list(_dict(composition.get("type")).get("coding")) if isinstance(c, dict)]
    if not any(c.get("system") == SNOMED and c.get("code") == DISCHARGE_TYPE for c in codes):
        issues.append(
            Issue(Code.INVALID_RESOURCE, f"type must be {SNOMED}|{DISCHARGE_TYPE} (Discharge summary)", f"{where}.type")
        )
    patient = identifier_value(composition.get("subject"), NHS_NUMBER)
    if not valid_nhs_number(patient):
        issues.append(
            Issue(
                Code.INVALID_NHS_NUMBER, "subject.identifier must be a valid NHS number", f"{where}.subject.identifier"
            )
        )
    sections = _sections(composition, where, issues)
    for code, title in MANDATORY.items():
        if code not in sections:
            issues.append(
                Issue(Code.INVALID_RESOURCE, f"the mandatory heading '{title}' is missing", f"{where}.section")
            )
        elif not _has_content(sections[code][1]):
            issues.append(Issue(Code.INVALID_RESOURCE, f"the mandatory heading '{title}' is empty", sections[code][0]))
    gp = _organisations(sections.get("gp-practice"), issues)
    others = _organisations(sections.get("distribution-list"), issues)
    if "gp-practice" in sections and not gp:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "the GP practice heading must name the practice by ODS code",
                f"{sections['gp-practice'][0]}.entry",
            )
        )
    replaces = None
    for relation in _list(composition.get("relatesTo")):
        if isinstance(relation, dict) and relation.get("code") == "replaces":
            replaces = _dict(relation.get("targetIdentifier")).get("value")
            if not isinstance(replaces, str):
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "relatesTo.targetIdentifier.value must name the replaced document's identifier",
                        f"{where}.relatesTo",
                    )
                )
    if issues:
        raise FhirError(issues)
    assert isinstance(identifier, str) and isinstance(patient, str)
    recipients = tuple(dict.fromkeys(o for o in (*gp, *others) if o != sender))
    return Summary(data, identifier, patient, recipients, replaces)


def _sections(composition: dict[str, Any], where: str, issues: list[Issue]) -> dict[str, tuple[str, dict[str, Any]]]:
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, section in enumerate(_list(composition.get("section"))):
        here = f"{where}.section[{i}]"
        section = _dict(section)
        codes = [
            c.get("code")
            for c in _list(_dict(section.get("code")).get("coding"))
            if isinstance(c, dict) and c.get("system") == HEADING_SYSTEM
        ]
        if not codes or not isinstance(codes[0], str) or codes[0] not in HEADINGS:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    f"code must be a PRSB eDischarge heading from {HEADING_SYSTEM}",
                    f"{here}.code",
                )
            )
        elif codes[0] in found:
            issues.append(Issue(Code.INVALID_RESOURCE, f"the heading '{HEADINGS[codes[0]]}' appears twice", here))
        else:
            found[codes[0]] = (here, section)
    return found


def _has_content(section: dict[str, Any]) -> bool:
    div = _dict(section.get("text")).get("div")
    return (
        bool(section.get("entry"))
        or bool(section.get("emptyReason"))
        or (isinstance(div, str) and len(div.strip()) > len("<div></div>"))
    )


def _organisations(found: tuple[str, dict[str, Any]] | None, issues: list[Issue]) -> list[str]:
    if found is None:
        return []
    here, section = found
    codes = []
    for j, entry in enumerate(_list(section.get("entry"))):
        value = identifier_value(entry, ODS_CODE)
        if value is None or not value.isalnum() or len(value) > 10:
            issues.append(
                Issue(Code.INVALID_RESOURCE, "must identify an organisation by ODS code", f"{here}.entry[{j}]")
            )
        else:
            codes.append(value.upper())
    return codes


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
