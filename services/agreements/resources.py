"""Policy objects as FHIR resources, both ways: Organization, CareTeam, Contract (an ISA), Consent and
RelatedPerson (a carer grant). Parsing collects one issue per invalid field, with its expression."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.events import (
    AgreementState,
    AgreementStatus,
    CarerGrantState,
    CareTeamState,
    OrganisationState,
    PatientPreferencesState,
)
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, identifier_value
from shared.policy import CATEGORIES, PURPOSES, never_applies

# ISA lifecycle -> FHIR Contract.status (http://hl7.org/fhir/contract-status)
CONTRACT_STATUS = {
    AgreementStatus.PROPOSED: "offered",
    AgreementStatus.ACCEPTED: "executed",
    AgreementStatus.REJECTED: "rejected",
    AgreementStatus.REVOKED: "revoked",
    AgreementStatus.EXPIRED: "terminated",
}
BASE = "https://lhcie.london/fhir"
PURPOSE_SYSTEM = f"{BASE}/CodeSystem/sharing-purpose"
CATEGORY_SYSTEM = f"{BASE}/CodeSystem/document-category"
ORG_TYPE_SYSTEM = f"{BASE}/CodeSystem/organisation-type"
TEMPLATE_EXTENSION = f"{BASE}/StructureDefinition/template-agreement"
# Why no request could ever be admitted under this ISA (shared.policy.never_applies): the DCC warns on it.
NEVER_APPLIES_EXTENSION = f"{BASE}/StructureDefinition/never-applies"
# A template that admits any organisation of this type without its owner's approval (said in advance).
ADMITS_EXTENSION = f"{BASE}/StructureDefinition/template-admits-organisation-type"
# An organisation waiting for the template's owner to approve its joining.
JOIN_REQUEST_EXTENSION = f"{BASE}/StructureDefinition/join-request"
CARER_SUBJECT_SYSTEM = f"{BASE}/Id/login-subject"
ORGANISATION_KINDS = ("acute-trust", "gp-practice", "mental-health", "community", "social-care", "hospice")
PURPOSE_LABELS = {
    "direct-care": "direct care (all sub-purposes)",
    "cancer-care": "cancer care",
    "end-of-life-care": "end-of-life care",
    "transfer-of-care": "transfer of care",
}
# Document categories (shared.policy.CATEGORIES) in the words a data controller or a patient uses.
CATEGORY_LABELS = {
    "care-plan": "care plans",
    "clinic-letter": "clinic letters",
    "discharge-summary": "discharge summaries",
    "end-of-life-care": "end-of-life care records",
    "imaging": "imaging reports (X-ray, CT, MRI)",
    "pathology": "test results (pathology)",
    "referral": "referral letters",
    "transfer-of-care": "transfer of care records",
    "other": "other documents",
}
ORGANISATION_KIND_LABELS = {
    "acute-trust": "hospital trust",
    "gp-practice": "GP practice",
    "mental-health": "mental health trust",
    "community": "community health service",
    "social-care": "social care provider",
    "hospice": "hospice",
}
DECISION_EXTENSION = f"{BASE}/StructureDefinition/agreement-decision"
ATTACHED_BY_EXTENSION = f"{BASE}/StructureDefinition/attached-by"


def category_label(code: str) -> str:
    return CATEGORY_LABELS.get(code, code.replace("-", " "))


def _ods_ref(code: str) -> dict[str, Any]:
    return {"reference": f"Organization/{code}", "identifier": {"system": ODS_CODE, "value": code}}


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
        "managingOrganization": [_ods_ref(state.organisation)],
        "participant": [
            {"role": [{"text": "MDT coordinator"}], "member": {"display": who}} for who in state.coordinators
        ],
    }
    if state.tumour_site:
        resource["category"] = [{"text": f"{state.tumour_site} cancer MDT"}]
    return resource


def contract(state: AgreementState, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """``details``: what agreements keeps beside the state (when each party signed, the PDF's size)."""
    details = details or {}
    signed_at = dict(details.get("signed_at", {}))
    # Signature.when is required (FHIR R4): an agreement recorded before signing times were kept (the demo
    # data, older state) was signed by the time it came into force.
    for party in state.accepted_by or state.parties:
        if party not in signed_at and state.valid_from:
            signed_at[party] = state.valid_from.isoformat()
    resource: dict[str, Any] = {
        "resourceType": "Contract",
        "id": state.agreement_id,
        "meta": {"versionId": str(state.version)},
        "status": CONTRACT_STATUS[state.status],
        "title": state.title,
        "subType": [{"text": "Information Sharing Agreement"}],
        "authority": [_ods_ref(p) for p in state.parties],
        "scope": {
            "coding": [
                {"system": PURPOSE_SYSTEM, "code": p, "display": PURPOSE_LABELS.get(p, p)} for p in state.purposes
            ]
        },
        # Each party that has signed, and when (the signing act is its acceptance in the console or API).
        "signer": [
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/contractsignertypecodes", "code": "PARTNER"},
                "party": _ods_ref(p),
                "signature": [
                    {
                        "type": [
                            {
                                "system": "urn:iso-astm:E1762-95:2013",
                                "code": "1.2.840.10065.1.12.1.7",
                                "display": "Consent Signature",
                            }
                        ],
                        "when": signed_at[p],
                        "who": _ods_ref(p),
                    }
                ],
            }
            for p in (state.accepted_by or (state.parties if state.status is AgreementStatus.ACCEPTED else ()))
            if p in signed_at
        ],
    }
    if state.proposed_by:
        resource["author"] = _ods_ref(state.proposed_by)
    if state.categories:
        resource["term"] = [
            {
                "asset": [
                    {
                        "type": [
                            {"coding": [{"system": CATEGORY_SYSTEM, "code": c, "display": category_label(c)}]}
                            for c in state.categories
                        ]
                    }
                ],
                "offer": {"text": "documents"},
            }
        ]
    if state.valid_from or state.valid_to:
        resource["applies"] = {k: v.isoformat() for k, v in (("start", state.valid_from), ("end", state.valid_to)) if v}
    if state.template:
        resource["extension"] = [{"url": TEMPLATE_EXTENSION, "valueBoolean": True}]
        if details.get("admits"):
            resource["extension"].append({"url": ADMITS_EXTENSION, "valueCode": details["admits"]})
        resource["extension"] += [
            {
                "url": JOIN_REQUEST_EXTENSION,
                "extension": [
                    {"url": "organization", "valueReference": _ods_ref(r["organisation"])},
                    {"url": "requested", "valueDateTime": r["requested_at"]},
                ],
            }
            for r in details.get("join_requests", [])
        ]
    if (why := never_applies(state)) is not None:
        resource.setdefault("extension", []).append(
            {"url": NEVER_APPLIES_EXTENSION, "valueString": f"This agreement can never apply: {why}."}
        )
    if state.supersedes:
        resource["relevantHistory"] = [{"display": f"supersedes Contract/{s}"} for s in state.supersedes]
    if state.replaced_by:
        resource["instantiatesUri"] = f"Contract/{state.replaced_by}"
        resource.setdefault("relevantHistory", []).append({"display": f"replaced by Contract/{state.replaced_by}"})
    if state.document_sha256:
        resource["legallyBindingAttachment"] = {
            "contentType": "application/pdf",
            "url": f"/fhir/Contract/{state.agreement_id}/$document",
            "size": details.get("document_size"),
            "title": "Signed agreement",
        }
        attached = details.get("document_attached")
        if attached:
            resource["legallyBindingAttachment"]["creation"] = attached["at"]
            resource["legallyBindingAttachment"]["extension"] = [
                {"url": ATTACHED_BY_EXTENSION, "valueReference": _ods_ref(attached["organisation"])}
            ]
    # Who rejected, revoked or left it, when, and why: the reason the data controller gave.
    decisions = [
        {
            "url": DECISION_EXTENSION,
            "extension": [
                {"url": "action", "valueCode": d["action"]},
                {"url": "organization", "valueReference": _ods_ref(d["organisation"])},
                *([{"url": "person", "valueString": d["person"]}] if d.get("person") else []),
                {"url": "when", "valueDateTime": d["at"]},
                *([{"url": "reason", "valueString": d["reason"]}] if d.get("reason") else []),
            ],
        }
        for d in details.get("decisions", [])
    ]
    if decisions:
        resource["extension"] = [*resource.get("extension", []), *decisions]
    return resource


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
        reference = _ods_ref(org) | ({"display": names[org]} if org in names else {})
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
    valid_to = _date(
        body.get("period", {}).get("end") if isinstance(body.get("period"), dict) else None,
        "RelatedPerson.period.end",
        issues,
    )
    if issues:
        raise FhirError(issues)
    return CarerRequest(str(subject).strip(), str(name).strip(), relationship, valid_to)


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


@dataclass(frozen=True)
class ContractInput:
    title: str
    parties: tuple[str, ...]
    purposes: tuple[str, ...]
    categories: tuple[str, ...]
    valid_from: datetime | None
    valid_to: datetime | None
    template: bool
    admits: str | None = None


def parse_contract(body: dict[str, Any]) -> ContractInput:
    issues: list[Issue] = []
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        issues.append(Issue(Code.INVALID_RESOURCE, "title is required", "Contract.title"))
    parties: list[str] = []
    for i, ref in enumerate(body.get("authority") or []):
        org = identifier_value(ref, ODS_CODE)
        if not org:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "each authority must carry an ODS code identifier",
                    f"Contract.authority[{i}]",
                )
            )
        elif org not in parties:
            parties.append(org)
    scope = body["scope"] if isinstance(body.get("scope"), dict) else {}
    purposes = [str(c.get("code")) for c in scope.get("coding") or [] if isinstance(c, dict)]
    if not purposes or any(p not in PURPOSES for p in purposes):
        issues.append(
            Issue(
                Code.INVALID_RESOURCE, f"scope.coding must list purposes from {', '.join(PURPOSES)}", "Contract.scope"
            )
        )
    categories = [
        str(c.get("code"))
        for t in body.get("term") or []
        if isinstance(t, dict)
        for a in t.get("asset") or []
        if isinstance(a, dict)
        for cc in a.get("type") or []
        if isinstance(cc, dict)
        for c in cc.get("coding") or []
        if isinstance(c, dict)
    ]
    if any(c not in CATEGORIES for c in categories):
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"term.asset.type categories must be from {', '.join(CATEGORIES)}",
                "Contract.term",
            )
        )
    applies = body["applies"] if isinstance(body.get("applies"), dict) else {}
    valid_from = _date(applies.get("start"), "Contract.applies.start", issues)
    valid_to = _date(applies.get("end"), "Contract.applies.end", issues)
    if valid_from and valid_to and valid_to <= valid_from:
        issues.append(Issue(Code.INVALID_RESOURCE, "applies.end must be after applies.start", "Contract.applies"))
    template = any(
        isinstance(e, dict) and e.get("url") == TEMPLATE_EXTENSION and e.get("valueBoolean") is True
        for e in body.get("extension") or []
    )
    admits = next(
        (
            e.get("valueCode")
            for e in body.get("extension") or []
            if isinstance(e, dict) and e.get("url") == ADMITS_EXTENSION
        ),
        None,
    )
    if admits is not None and (admits not in ORGANISATION_KINDS or not template):
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"a template may admit one organisation type from {', '.join(ORGANISATION_KINDS)}",
                "Contract.extension",
            )
        )
    if issues:
        raise FhirError(issues)
    return ContractInput(
        str(title).strip(),
        tuple(parties),
        tuple(dict.fromkeys(purposes)),
        tuple(dict.fromkeys(categories)),
        valid_from,
        valid_to,
        template,
        admits,
    )


def _date(value: Any, where: str, issues: list[Issue]) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        issues.append(Issue(Code.INVALID_RESOURCE, "must be an ISO 8601 date-time with a time zone", where))
        return None
    if parsed.tzinfo is None:
        issues.append(Issue(Code.INVALID_RESOURCE, "must carry a time zone", where))
        return None
    return parsed
