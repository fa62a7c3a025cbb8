"""A patient's sharing preferences (Consent) and carer grants (RelatedPerson, and their Consent) as FHIR
resources, both ways. Parsing collects one issue per invalid field, with its expression."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.agreements.vocabulary import (
    CARER_SUBJECT_SYSTEM,
    CATEGORY_SYSTEM,
    category_label,
    ods_reference,
    parse_date,
)
from shared.events import (
    CarerGrantState,
    PatientPreferencesState,
)
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, identifier_value
from shared.policy import CATEGORIES

CONSENT_SCOPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
}


def preferences_consent(
    state: PatientPreferencesState | None,
    nhs_number: str,
    exceptions: tuple[str, ...],
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``names``: organisation names by ODS code, so that a patient reads who they opted out of."""
    denials: list[dict[str, Any]] = []
    categories = state.opted_out_categories if state else ()
    organisations = state.opted_out_organisations if state else ()
    names = names or {}
    if categories:
        denials.append(
            {
                "type": "deny",
                "class": [{"system": CATEGORY_SYSTEM, "code": c, "display": category_label(c)} for c in categories],
            }
        )
    for org in organisations:
        reference = ods_reference(org) | ({"display": names[org]} if org in names else {})
        denials.append({"type": "deny", "actor": [{"role": {"text": "recipient"}, "reference": reference}]})
    return {
        "resourceType": "Consent",
        "id": "preferences",
        "meta": {"versionId": str(state.version if state else 0)},
        "status": "active",
        "scope": CONSENT_SCOPE,
        "category": [{"text": "Sharing preferences"}],
        "patient": {"identifier": {"system": NHS_NUMBER, "value": nhs_number}},
        "policy": [{"uri": "https://lhcie.london/policy/sharing-exceptions"}],
        "policyRule": {"text": " ".join(exceptions)},
        "provision": {"type": "permit", "provision": denials},
    }


@dataclass(frozen=True)
class Preferences:
    categories: tuple[str, ...]
    organisations: tuple[str, ...]


def parse_preferences(body: dict[str, Any]) -> Preferences:
    """A Consent whose ``provision.provision`` holds deny rules: by ``class`` (category) or ``actor``."""
    issues: list[Issue] = []
    categories: list[str] = []
    organisations: list[str] = []
    provision = body.get("provision")
    rules = provision.get("provision", []) if isinstance(provision, dict) else None
    if not isinstance(rules, list):
        raise FhirError.of(Code.INVALID_RESOURCE, "provision.provision must list the opt-outs.", "Consent.provision")
    for i, rule in enumerate(rules):
        where = f"Consent.provision.provision[{i}]"
        if not isinstance(rule, dict) or rule.get("type") != "deny":
            issues.append(Issue(Code.INVALID_RESOURCE, "each rule must be a deny rule", where))
            continue
        for j, cls in enumerate(rule.get("class") or []):
            code = cls.get("code") if isinstance(cls, dict) else None
            if code not in CATEGORIES:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE, f"category must be one of {', '.join(CATEGORIES)}", f"{where}.class[{j}]"
                    )
                )
            elif code not in categories:
                categories.append(code)
        for j, actor in enumerate(rule.get("actor") or []):
            org = identifier_value(actor.get("reference") if isinstance(actor, dict) else None, ODS_CODE)
            if not org:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE, "actor.reference.identifier must be an ODS code", f"{where}.actor[{j}]"
                    )
                )
            elif org not in organisations:
                organisations.append(org)
        if not rule.get("class") and not rule.get("actor"):
            issues.append(Issue(Code.INVALID_RESOURCE, "a deny rule needs a class or an actor", where))
    if issues:
        raise FhirError(issues)
    return Preferences(tuple(categories), tuple(organisations))


def related_person(grant: CarerGrantState) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": grant.grant_id,
        "meta": {"versionId": str(grant.version)},
        "active": grant.active,
        "identifier": [{"system": CARER_SUBJECT_SYSTEM, "value": grant.carer_subject}],
        "patient": {"identifier": {"system": NHS_NUMBER, "value": grant.patient_nhs_number}},
        "name": [{"text": grant.carer_name}],
    }
    if grant.relationship:
        resource["relationship"] = [{"text": grant.relationship}]
    if grant.valid_to:
        resource["period"] = {"end": grant.valid_to.isoformat()}
    return resource


def carer_consent(grant: CarerGrantState) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"role": {"text": "carer"}, "reference": {"reference": f"RelatedPerson/{grant.grant_id}"}}],
        "action": [{"text": "see which organisations hold records, sharing preferences and access report"}],
    }
    if grant.valid_to:
        provision["period"] = {"end": grant.valid_to.isoformat()}
    return {
        "resourceType": "Consent",
        "id": grant.grant_id,
        "meta": {"versionId": str(grant.version)},
        "status": "active" if grant.active else "inactive",
        "scope": CONSENT_SCOPE,
        "category": [{"text": "Carer access"}],
        "patient": {"identifier": {"system": NHS_NUMBER, "value": grant.patient_nhs_number}},
        "provision": provision,
    }


@dataclass(frozen=True)
class CarerRequest:
    carer_subject: str
    carer_name: str
    relationship: str | None
    valid_to: datetime | None


def parse_related_person(body: dict[str, Any]) -> CarerRequest:
    issues: list[Issue] = []
    subject = next(
        (
            i.get("value")
            for i in body.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == CARER_SUBJECT_SYSTEM
        ),
        None,
    )
    if not isinstance(subject, str) or not subject.strip():
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"identifier must hold the carer's login ({CARER_SUBJECT_SYSTEM})",
                "RelatedPerson.identifier",
            )
        )
    names = body.get("name") or []
    name = names[0].get("text") if names and isinstance(names[0], dict) else None
    if not isinstance(name, str) or not name.strip():
        issues.append(Issue(Code.INVALID_RESOURCE, "name[0].text is required", "RelatedPerson.name"))
    relationships = body.get("relationship") or []
    relationship = relationships[0].get("text") if relationships and isinstance(relationships[0], dict) else None
    valid_to = parse_date(
        body.get("period", {}).get("end") if isinstance(body.get("period"), dict) else None,
        "RelatedPerson.period.end",
        issues,
    )
    if issues:
        raise FhirError(issues)
    return CarerRequest(str(subject).strip(), str(name).strip(), relationship, valid_to)
