"""MHD's ``intendedRecipient`` (ITI TF-2 3.65.4.1.3): the Document Recipient makes reasonable efforts to
determine whether each recipient a SubmissionSet (or a DocumentReference) names can be notified.

A recipient is resolved to something the exchange can alert: an organisation by its ODS code (an
Organization, or a PractitionerRole's organisation, or a Practitioner's through a PractitionerRole contained
beside it) or an MDT (``CareTeam/<id>``). Each resolved recipient the sharing policy admits for a document is
carried on that document's ``document.received`` facts, and notification alerts it once the document is
stored. Any other gets MHD's warning code (``UnknownRecipient``: not recognised; ``UnavailableRecipient``: known
but not to be notified) and no reason beyond that: a refusal may rest on the patient's own preferences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.auth import Caller
from shared.events import DocumentFacts
from shared.fhir.errors import Code, Issue
from shared.fhir.identifiers import ODS_CODE, identifier_value
from shared.policy import PolicyView

INTENDED_RECIPIENT = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-intendedRecipient"
ORGANIZATION, CARETEAM = "Organization/", "CareTeam/"
UNKNOWN = "UnknownRecipient: the intended recipient is not one the exchange recognises; it was not notified."
UNAVAILABLE = "UnavailableRecipient: the exchange does not notify this intended recipient of this submission."
# The documents' facts are not final before staging; the policy decision reads neither hash nor size.
NO_CONTENT = "0" * 64


@dataclass(frozen=True)
class Named:
    """One ``intendedRecipient``: where it was named, and what it resolves to (None: not resolvable)."""

    expression: str
    target: str | None


def _contained(resource: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in resource.get("contained") or [] if isinstance(c, dict) and isinstance(c.get("id"), str)}


def _ods_of(organization: dict[str, Any]) -> str | None:
    return next(
        (
            i["value"]
            for i in organization.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == ODS_CODE and isinstance(i.get("value"), str)
        ),
        None,
    )


def _id_after(ref: Any, prefix: str) -> str | None:
    """The id of a relative reference ``{prefix}{id}``, or None."""
    if not isinstance(ref, str) or not ref.startswith(prefix):
        return None
    rest = ref.removeprefix(prefix)
    return rest if rest and "/" not in rest else None


def _organisation(reference: Any, contained: dict[str, dict[str, Any]]) -> str | None:
    """``Organization/<ODS>`` for a reference to an organisation: by ODS identifier, by id or contained."""
    if not isinstance(reference, dict):
        return None
    ods = identifier_value(reference, ODS_CODE)
    if ods and reference.get("type") in (None, "Organization"):
        return f"{ORGANIZATION}{ods}"
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith("#"):
        target = contained.get(ref[1:])
        if target is None or target.get("resourceType") != "Organization":
            return None
        ods = _ods_of(target)
        return f"{ORGANIZATION}{ods}" if ods else None
    # The exchange names an organisation by its ODS code (Organization/<ODS>).
    ods = _id_after(ref, ORGANIZATION)
    return f"{ORGANIZATION}{ods}" if ods else None


def resolve(reference: Any, contained: dict[str, dict[str, Any]]) -> str | None:
    """What the exchange can alert for one ``intendedRecipient`` reference, or None."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if _id_after(ref, CARETEAM):
        return str(ref)
    if isinstance(ref, str) and ref.startswith("#"):
        target = contained.get(ref[1:])
        kind = target.get("resourceType") if target else None
        if target is None:
            return None
        if kind == "Organization":
            return _organisation(reference, contained)
        if kind == "PractitionerRole":
            return _organisation(target.get("organization"), contained)
        if kind == "Practitioner":
            # A Practitioner has no organisation; a contained PractitionerRole of theirs may name one.
            roles = [
                c
                for c in contained.values()
                if c.get("resourceType") == "PractitionerRole" and (c.get("practitioner") or {}).get("reference") == ref
            ]
            return next((o for o in (_organisation(r.get("organization"), contained) for r in roles) if o), None)
        return None
    return _organisation(reference, contained)


def named(resource: dict[str, Any], where: str) -> list[Named]:
    """Every ``intendedRecipient`` extension of ``resource`` (at ``where`` in the bundle), resolved."""
    contained = _contained(resource)
    found = []
    for i, extension in enumerate(resource.get("extension") or []):
        if isinstance(extension, dict) and extension.get("url") == INTENDED_RECIPIENT:
            found.append(Named(f"{where}.extension[{i}]", resolve(extension.get("valueReference"), contained)))
    return found


def facts_for_decision(
    document_id: str, patient: str, custodian: str, type_system: str | None, type_code: str | None
) -> DocumentFacts:
    return DocumentFacts(
        document_id=document_id,
        patient_nhs_number=patient,
        custodian=custodian,
        type_system=type_system,
        type_code=type_code,
        content_type="application/octet-stream",
        size=0,
        sha256=NO_CONTENT,
    )


async def _receiver(policy: PolicyView, target: str) -> Caller | None:
    """Who the recipient is to the sharing policy; None when the exchange does not know it (or not as active)."""
    if target.startswith(CARETEAM):
        team = await policy.careteam(target.removeprefix(CARETEAM))
        if team is None or not team.active:
            return None
        return Caller(
            org=team.organisation, role="mdt-coordinator", subject=target, scopes=frozenset(), mdt=team.careteam_id
        )
    ods = target.removeprefix(ORGANIZATION)
    organisation = await policy.organisation(ods)
    if organisation is None or not organisation.active:
        return None
    return Caller(org=ods, role="clinician", subject=target, scopes=frozenset())


async def admit(
    policy: PolicyView, recipients: Sequence[tuple[Named, Sequence[int]]], documents: Sequence[DocumentFacts]
) -> tuple[list[tuple[str, ...]], list[Issue]]:
    """For each document (in order) the recipients to notify of it, and a warning for each recipient that
    cannot be notified of a document it was named for. ``recipients`` pairs each one named with the
    positions of the documents it is named for (all of them for the SubmissionSet's)."""
    admitted: list[list[str]] = [[] for _ in documents]
    warnings: list[Issue] = []
    for recipient, positions in recipients:
        receiver = await _receiver(policy, recipient.target) if recipient.target else None
        if receiver is None:
            warnings.append(Issue(Code.PROCESSING, UNKNOWN, recipient.expression, severity="warning"))
            continue
        refused = False
        for position in positions:
            if (await policy.decide(receiver, documents[position])).allowed:
                if recipient.target not in admitted[position]:
                    admitted[position].append(str(recipient.target))
            else:
                refused = True
        if refused:
            warnings.append(Issue(Code.PROCESSING, UNAVAILABLE, recipient.expression, severity="warning"))
    return [tuple(a) for a in admitted], warnings
