"""Checks a submitted DocumentReference and turns it into a submission, or into one issue per problem.

fhir.resources' R4B models check the structure (England's UK Core is FHIR R4). They accept an unknown
``status``, a non-base64 ``data`` or ``hash`` and a reference to the wrong resource type, so those are
checked here too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.documentreference import DocumentReference
from pydantic import ValidationError

from shared.auth import Caller
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, identifier_value, valid_nhs_number

SUBMITTABLE_STATUSES = {"current"}
KNOWN_STATUSES = {"current", "superseded", "entered-in-error"}


@dataclass(frozen=True)
class Submission:
    resource: dict[str, Any]  # the DocumentReference as received, without the inline bytes
    content: bytes
    content_type: str
    patient_nhs_number: str
    custodian: str
    type_system: str | None
    type_code: str | None
    type_display: str | None
    related: tuple[str, ...]


def _expression(loc: tuple[Any, ...]) -> str:
    path = "DocumentReference"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith("function-"):
            path += f".{part}"
    return path


def _structure_issues(data: dict[str, Any]) -> list[Issue]:
    try:
        DocumentReference.model_validate(data)
    except ValidationError as exc:
        return [
            Issue(Code.INVALID_RESOURCE, _safe_message(err), _expression(tuple(err["loc"])))
            for err in exc.errors(include_url=False, include_input=False)
        ]
    except (ValueError, TypeError):
        return [Issue(Code.INVALID_RESOURCE, "The DocumentReference could not be read.", "DocumentReference")]
    return []


def _safe_message(err: Any) -> str:
    # pydantic's messages describe the rule, never echo the value (include_input=False above).
    return str(err.get("msg", "invalid value"))[:200]


def _decode_base64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def validate_submission(data: dict[str, Any], who: Caller) -> Submission:
    """The submission ``data`` describes, or ``FhirError`` (422) listing every problem found."""
    if data.get("resourceType") != "DocumentReference":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a DocumentReference resource.", "resourceType")
    structure = _structure_issues(data)
    issues: list[Issue] = []

    status = data.get("status")
    if status not in KNOWN_STATUSES:
        issues.append(Issue(Code.INVALID_RESOURCE, "status must be current, superseded or entered-in-error.",
                            "DocumentReference.status"))
    elif status not in SUBMITTABLE_STATUSES:
        issues.append(Issue(Code.BUSINESS_RULE, "A new document must have status 'current'.",
                            "DocumentReference.status"))

    subject = data.get("subject")
    patient = identifier_value(subject, NHS_NUMBER)
    if patient is None:
        issues.append(Issue(Code.INVALID_RESOURCE, f"subject.identifier must be an NHS number ({NHS_NUMBER}).",
                            "DocumentReference.subject.identifier"))
    elif not valid_nhs_number(patient):
        issues.append(Issue(Code.INVALID_NHS_NUMBER, "subject.identifier.value is not a valid NHS number.",
                            "DocumentReference.subject.identifier.value"))
    if isinstance(subject, dict) and "reference" in subject and not str(subject["reference"]).startswith("Patient/"):
        issues.append(Issue(Code.INVALID_RESOURCE, "subject must reference a Patient.",
                            "DocumentReference.subject.reference"))

    custodian = identifier_value(data.get("custodian"), ODS_CODE)
    if custodian is None:
        issues.append(Issue(Code.INVALID_RESOURCE, f"custodian.identifier must be an ODS code ({ODS_CODE}).",
                            "DocumentReference.custodian.identifier"))
    elif custodian != who.org:
        issues.append(Issue(Code.WRONG_ORGANISATION,
                            "custodian must be the caller's own organisation.",
                            "DocumentReference.custodian.identifier.value"))
    authors = data.get("author")
    for i, author in enumerate(authors if isinstance(authors, list) else []):
        ods = identifier_value(author, ODS_CODE)
        if ods is not None and ods != who.org:
            issues.append(Issue(Code.WRONG_ORGANISATION, "An organisation author must be the caller's own.",
                                f"DocumentReference.author[{i}]"))

    related: list[str] = []
    context = data.get("context")
    for i, ref in enumerate((context or {}).get("related") or [] if isinstance(context, dict) else []):
        value = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(value, str):
            if value.count("/") != 1 or not all(value.split("/")):
                issues.append(Issue(Code.INVALID_RESOURCE, "related.reference must be 'Type/id'.",
                                    f"DocumentReference.context.related[{i}].reference"))
            else:
                related.append(value)

    content = data.get("content")
    attachment = content[0].get("attachment") if isinstance(content, list) and content and isinstance(content[0], dict) else None
    raw: bytes | None = None
    content_type = None
    if not isinstance(attachment, dict) or "data" not in attachment:
        issues.append(Issue(Code.INVALID_RESOURCE, "content[0].attachment.data must hold the document (base64).",
                            "DocumentReference.content[0].attachment.data"))
    else:
        raw = _decode_base64(attachment.get("data"))
        if raw is None:
            issues.append(Issue(Code.INVALID_RESOURCE, "content[0].attachment.data is not valid base64.",
                                "DocumentReference.content[0].attachment.data"))
        elif not raw:
            issues.append(Issue(Code.INVALID_RESOURCE, "The document is empty.",
                                "DocumentReference.content[0].attachment.data"))
        content_type = attachment.get("contentType")
        if not isinstance(content_type, str) or "/" not in content_type:
            issues.append(Issue(Code.INVALID_RESOURCE, "content[0].attachment.contentType is required.",
                                "DocumentReference.content[0].attachment.contentType"))
        if raw is not None and "size" in attachment and attachment["size"] != len(raw):
            issues.append(Issue(Code.INVALID_RESOURCE, "attachment.size does not match the document.",
                                "DocumentReference.content[0].attachment.size"))
        if raw is not None and "hash" in attachment:
            declared = _decode_base64(attachment["hash"])
            # R4's Attachment.hash is the base64 SHA-1 of the data.
            if declared is None or declared != hashlib.sha1(raw, usedforsecurity=False).digest():
                issues.append(Issue(Code.INVALID_RESOURCE, "attachment.hash is not the base64 SHA-1 of the document.",
                                    "DocumentReference.content[0].attachment.hash"))

    # The explicit checks word their findings better; keep the model's only for other fields.
    covered = {i.expression for i in issues}
    issues += [i for i in structure if i.expression not in covered]
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    assert raw is not None and patient is not None and custodian is not None and content_type is not None

    coding = ((data.get("type") or {}).get("coding") or [{}])[0]
    resource = _without_inline_data(data)
    return Submission(
        resource=resource,
        content=raw,
        content_type=content_type,
        patient_nhs_number=patient,
        custodian=custodian,
        type_system=coding.get("system"),
        type_code=coding.get("code"),
        type_display=coding.get("display"),
        related=tuple(related),
    )


def _without_inline_data(data: dict[str, Any]) -> dict[str, Any]:
    resource = dict(data)
    contents = []
    for item in data.get("content") or []:  # validated above: a list of objects
        item = dict(item)
        attachment = {k: v for k, v in (item.get("attachment") or {}).items() if k != "data"}
        item["attachment"] = attachment
        contents.append(item)
    resource["content"] = contents
    return resource
