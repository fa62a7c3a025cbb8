"""Contract (an ISA) as a FHIR resource, both ways. Parsing collects one issue per invalid field, with its
expression."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.agreements.vocabulary import (
    ADMITS_EXTENSION,
    ATTACHED_BY_EXTENSION,
    CATEGORY_SYSTEM,
    CONTRACT_STATUS,
    DECISION_EXTENSION,
    JOIN_REQUEST_EXTENSION,
    NEVER_APPLIES_EXTENSION,
    ORGANISATION_KINDS,
    PURPOSE_LABELS,
    PURPOSE_SYSTEM,
    TEMPLATE_EXTENSION,
    category_label,
    ods_reference,
    parse_date,
)
from shared.events import (
    AgreementState,
    AgreementStatus,
)
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import ODS_CODE, identifier_value
from shared.policy import CATEGORIES, PURPOSES, never_applies


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
        "authority": [ods_reference(p) for p in state.parties],
        "scope": {
            "coding": [
                {"system": PURPOSE_SYSTEM, "code": p, "display": PURPOSE_LABELS.get(p, p)} for p in state.purposes
            ]
        },
        # Each party that has signed, and when (the signing act is its acceptance in the console or API).
        "signer": [
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/contractsignertypecodes", "code": "PARTNER"},
                "party": ods_reference(p),
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
                        "who": ods_reference(p),
                    }
                ],
            }
            for p in (state.accepted_by or (state.parties if state.status is AgreementStatus.ACCEPTED else ()))
            if p in signed_at
        ],
    }
    if state.proposed_by:
        resource["author"] = ods_reference(state.proposed_by)
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
                    {"url": "organization", "valueReference": ods_reference(r["organisation"])},
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
                {"url": ATTACHED_BY_EXTENSION, "valueReference": ods_reference(attached["organisation"])}
            ]
    # Who rejected, revoked or left it, when, and why: the reason the data controller gave.
    decisions = [
        {
            "url": DECISION_EXTENSION,
            "extension": [
                {"url": "action", "valueCode": d["action"]},
                {"url": "organization", "valueReference": ods_reference(d["organisation"])},
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
    valid_from = parse_date(applies.get("start"), "Contract.applies.start", issues)
    valid_to = parse_date(applies.get("end"), "Contract.applies.end", issues)
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
