"""Checks a submitted DocumentReference: one issue per problem, each with its FHIRPath expression.

fhir.resources' R4B models check the structure (England's UK Core is FHIR R4). They accept an unknown
``status``, a non-base64 ``data`` or ``hash`` and a reference to the wrong resource type, so those are
checked here too, with the business rules: NHS number, the caller's own organisation, a known document
type and a media type it may carry, sane dates.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir.resources.R4B.documentreference import DocumentReference
from pydantic import ValidationError

from services.intake.catalogue import Catalogue, DocumentType
from shared.auth import Caller
from shared.fhir import dates
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE, identifier_value, valid_nhs_number
from shared.media import base_type

KNOWN_STATUSES = {"current", "superseded", "entered-in-error"}
# MHD: relatesTo codes a Document Recipient may not support get a warning, not a failure.
SUPPORTED_RELATIONS = {"replaces"}
UNSUPPORTED_RELATION_WARNINGS = {
    "transforms": "PartialTransformContentNotProcessed",
    "appends": "PartialAppendContentNotProcessed",
    "signs": "PartialSignsContentNotProcessed",
}
CLOCK_SKEW = timedelta(minutes=5)
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
ATTACHMENT = "DocumentReference.content[0].attachment"


@dataclass(frozen=True)
class Metadata:
    """What intake records about a valid submission (the bytes travel separately)."""

    resource: dict[str, Any]
    patient_nhs_number: str
    custodian: str
    document_type: DocumentType
    type_display: str | None
    content_type: str
    related: tuple[str, ...]
    replaces: tuple[str, ...]
    master_identifier: str | None
    declared_size: int | None
    declared_sha1: bytes | None
    authors: tuple[str, ...]
    search: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[Issue, ...] = ()
    # The document's bytes when it came inline (``content[0].attachment.data``), decoded once.
    inline_document: bytes | None = field(default=None, repr=False, compare=False)


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
        # include_input=False: a message describes the rule and never echoes the submitted value
        return [
            Issue(Code.INVALID_RESOURCE, str(err.get("msg", "invalid value"))[:200], _expression(tuple(err["loc"])))
            for err in exc.errors(include_url=False, include_input=False)
        ]
    except Exception:  # fhir_core itself can crash on hostile input (found by the property tests)
        return [Issue(Code.INVALID_RESOURCE, "The DocumentReference could not be read.", "DocumentReference")]
    return []


def decode_base64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _tokens(codings: list[Any]) -> list[str]:
    """Search tokens for codings: ``system|code`` and the bare ``code``."""
    out: list[str] = []
    for coding in codings:
        coding = _dict(coding)
        code = coding.get("code")
        if isinstance(code, str):
            out += [f"{coding.get('system', '')}|{code}", code]
    return out


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value[:10])
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date_issues(data: dict[str, Any]) -> list[Issue]:
    issues = []
    now = datetime.now(UTC)
    context = _dict(data.get("context"))
    period = _dict(context.get("period"))
    candidates = [
        (data.get("date"), "DocumentReference.date"),
        (
            _dict(_dict(_list(data.get("content"))[0] if _list(data.get("content")) else {}).get("attachment")).get(
                "creation"
            ),
            f"{ATTACHMENT}.creation",
        ),
        (period.get("start"), "DocumentReference.context.period.start"),
        (period.get("end"), "DocumentReference.context.period.end"),
    ]
    for value, where in candidates:
        when = _parse_instant(value)
        if when is not None and (when > now + CLOCK_SKEW or when < EARLIEST):
            issues.append(Issue(Code.BUSINESS_RULE, "The date is in the future or before 1900.", where))
    start, end = _parse_instant(period.get("start")), _parse_instant(period.get("end"))
    if start and end and end < start:
        issues.append(
            Issue(Code.BUSINESS_RULE, "context.period ends before it starts.", "DocumentReference.context.period")
        )
    return issues


def check_metadata(data: dict[str, Any], who: Caller, catalogue: Catalogue, *, inline: bool) -> Metadata:
    """The submission's metadata, or ``FhirError`` (422) listing every problem found.

    ``inline``: the document is in ``content[0].attachment.data`` (else it arrives as a separate part).
    """
    if data.get("resourceType") != "DocumentReference":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a DocumentReference resource.", "resourceType")
    content = _list(data.get("content"))
    attachment = _dict(content[0]).get("attachment") if content and isinstance(content[0], dict) else None
    # The inline document, decoded once here: its check below, the structure check and the staging use it.
    document = decode_base64(attachment.get("data")) if inline and isinstance(attachment, dict) else None
    structure = _structure_issues(_with_placeholder_data(data, content, _dict(attachment)) if document else data)
    issues: list[Issue] = []
    warnings: list[Issue] = []

    status = data.get("status")
    if not isinstance(status, str) or status not in KNOWN_STATUSES:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "status must be current, superseded or entered-in-error.",
                "DocumentReference.status",
            )
        )
    elif status != "current":
        issues.append(
            Issue(Code.BUSINESS_RULE, "A new document must have status 'current'.", "DocumentReference.status")
        )

    subject = data.get("subject")
    patient = identifier_value(subject, NHS_NUMBER)
    if patient is None:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"subject.identifier must be an NHS number ({NHS_NUMBER}).",
                "DocumentReference.subject.identifier",
            )
        )
    elif not valid_nhs_number(patient):
        issues.append(
            Issue(
                Code.INVALID_NHS_NUMBER,
                "subject.identifier.value is not a valid NHS number.",
                "DocumentReference.subject.identifier.value",
            )
        )
    if "reference" in _dict(subject) and not str(_dict(subject)["reference"]).startswith("Patient/"):
        issues.append(
            Issue(Code.INVALID_RESOURCE, "subject must reference a Patient.", "DocumentReference.subject.reference")
        )

    custodian = identifier_value(data.get("custodian"), ODS_CODE)
    if custodian is None:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                f"custodian.identifier must be an ODS code ({ODS_CODE}).",
                "DocumentReference.custodian.identifier",
            )
        )
    elif custodian != who.org:
        issues.append(
            Issue(
                Code.WRONG_ORGANISATION,
                "custodian must be the caller's own organisation.",
                "DocumentReference.custodian.identifier.value",
            )
        )
    authors: list[str] = []
    for i, author in enumerate(_list(data.get("author"))):
        ods = identifier_value(author, ODS_CODE)
        if ods is not None:
            authors.append(ods)
            if ods != who.org:
                issues.append(
                    Issue(
                        Code.WRONG_ORGANISATION,
                        "An organisation author must be the caller's own.",
                        f"DocumentReference.author[{i}]",
                    )
                )

    codings = _list(_dict(data.get("type")).get("coding"))
    document_type = next(
        (t for c in codings if (t := catalogue.find(_dict(c).get("system"), _dict(c).get("code")))), None
    )
    if document_type is None:
        accepted = ", ".join(f"{t.system}|{t.code} ({t.display})" for t in catalogue.types)
        issues.append(
            Issue(
                Code.BUSINESS_RULE,
                "type.coding must hold a document type this exchange accepts "
                "(ValueSet/lhcie-document-types, GET /fhir/ValueSet/lhcie-document-types): "
                f"{accepted}.",
                "DocumentReference.type",
            )
        )

    related: list[str] = []
    context = _dict(data.get("context"))
    for i, ref in enumerate(_list(context.get("related"))):
        value = _dict(ref).get("reference")
        if isinstance(value, str):
            if value.count("/") != 1 or not all(value.split("/")):
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "related.reference must be 'Type/id'.",
                        f"DocumentReference.context.related[{i}].reference",
                    )
                )
            else:
                related.append(value)

    replaces: list[str] = []
    for i, relation in enumerate(_list(data.get("relatesTo"))):
        code = _dict(relation).get("code")
        code = code if isinstance(code, str) else None
        target = _dict(_dict(relation).get("target")).get("reference")
        if code in SUPPORTED_RELATIONS:
            if not isinstance(target, str) or not target.startswith("DocumentReference/"):
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "relatesTo.target must reference DocumentReference/<id>.",
                        f"DocumentReference.relatesTo[{i}].target",
                    )
                )
            else:
                replaces.append(target.removeprefix("DocumentReference/"))
        elif code in UNSUPPORTED_RELATION_WARNINGS:
            warnings.append(
                Issue(
                    Code.PROCESSING,
                    UNSUPPORTED_RELATION_WARNINGS[code],
                    f"DocumentReference.relatesTo[{i}]",
                    severity="warning",
                )
            )

    master = _dict(data.get("masterIdentifier"))
    master_identifier = (
        f"{master.get('system', '')}|{master['value']}" if isinstance(master.get("value"), str) else None
    )

    content_type: str | None = None
    declared_size: int | None = None
    declared_sha1: bytes | None = None
    if not isinstance(attachment, dict):
        issues.append(Issue(Code.INVALID_RESOURCE, "content[0].attachment is required.", ATTACHMENT))
    else:
        if inline and "data" not in attachment:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "content[0].attachment.data must hold the document (base64).",
                    f"{ATTACHMENT}.data",
                )
            )
        elif inline:
            if document is None:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE, "content[0].attachment.data is not valid base64.", f"{ATTACHMENT}.data"
                    )
                )
            elif not document:
                issues.append(Issue(Code.INVALID_RESOURCE, "The document is empty.", f"{ATTACHMENT}.data"))
        if not inline and "data" in attachment:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "With a separate document part, attachment.data must be absent.",
                    f"{ATTACHMENT}.data",
                )
            )
        raw_type = attachment.get("contentType")
        if not isinstance(raw_type, str) or "/" not in raw_type:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE, "content[0].attachment.contentType is required.", f"{ATTACHMENT}.contentType"
                )
            )
        else:
            content_type = raw_type
            if document_type is not None and base_type(raw_type) not in document_type.media:
                issues.append(
                    Issue(
                        Code.BUSINESS_RULE,
                        f"A {document_type.display} may be one of: {', '.join(document_type.media)}.",
                        f"{ATTACHMENT}.contentType",
                    )
                )
        if "size" in attachment:
            size = attachment["size"]
            declared_size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
        if "hash" in attachment:
            declared_sha1 = decode_base64(attachment["hash"])
            if declared_sha1 is None or len(declared_sha1) != 20:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "attachment.hash must be the base64 SHA-1 of the document.",
                        f"{ATTACHMENT}.hash",
                    )
                )
    issues += _date_issues(data)

    covered = {i.expression for i in issues}
    issues += [i for i in structure if i.expression not in covered]
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    assert patient and custodian and document_type and content_type

    type_coding = next((_dict(c) for c in codings if _dict(c).get("code") == document_type.code), {})
    return Metadata(
        resource=without_inline_data(data),
        patient_nhs_number=patient,
        custodian=custodian,
        document_type=document_type,
        type_display=type_coding.get("display") or document_type.display,
        content_type=content_type,
        related=tuple(related),
        replaces=tuple(replaces),
        master_identifier=master_identifier,
        declared_size=declared_size,
        declared_sha1=declared_sha1,
        authors=tuple(authors),
        search=search_fields(data, authors, custodian, related),
        warnings=tuple(warnings),
        inline_document=document if inline else None,
    )


# What the structure check sees in place of a valid inline document: it decodes base64 leniently
# (``base64.b64decode``), so the strict decoding above accepting the document means it would too, and only
# the cost differs (a model-building pass over every byte of the document, 0.2-0.8 ms at 10-100 KiB).
PLACEHOLDER_DATA = "AAAA"


def _with_placeholder_data(data: dict[str, Any], content: list[Any], attachment: dict[str, Any]) -> dict[str, Any]:
    return {**data, "content": [{**content[0], "attachment": {**attachment, "data": PLACEHOLDER_DATA}}, *content[1:]]}


def search_fields(data: dict[str, Any], authors: list[str], custodian: str, related: list[str]) -> dict[str, Any]:
    """The values ITI-67 searches match, flattened so the store can index and compare them.

    Dates are kept as ranges (``<name>_low``/``<name>_high``, see shared/fhir/dates.py) so a search compares
    ranges as FHIR says; names as every prefix of their folded form, so ``author.given=jo`` finds "Joan".
    """
    context = _dict(data.get("context"))
    content = [_dict(c) for c in _list(data.get("content"))]
    master = _dict(data.get("masterIdentifier"))
    identifiers = [_dict(i) for i in _list(data.get("identifier"))] + ([master] if master else [])
    period = _dict(context.get("period"))
    creation = _dict(content[0].get("attachment")).get("creation") if content else None
    given, family = _author_names(data)
    related_identifiers = [_dict(_dict(r).get("identifier")) for r in _list(context.get("related"))]
    fields: dict[str, Any] = {
        "type": _tokens(_list(_dict(data.get("type")).get("coding"))),
        "category": [t for cat in _list(data.get("category")) for t in _tokens(_list(_dict(cat).get("coding")))],
        "date": data.get("date"),
        "period_start": period.get("start"),
        "period_end": period.get("end"),
        "creation": creation,
        "identifier": _identifier_tokens(identifiers),
        "author": authors,
        "author_given": given,
        "author_family": family,
        "custodian": custodian,
        "related": related,
        "related_identifier": _identifier_tokens(related_identifiers),
        "event": [t for e in _list(context.get("event")) for t in _tokens(_list(_dict(e).get("coding")))],
        "security_label": [
            t for lab in _list(data.get("securityLabel")) for t in _tokens(_list(_dict(lab).get("coding")))
        ],
        "setting": _tokens(_list(_dict(context.get("practiceSetting")).get("coding"))),
        "facility": _tokens(_list(_dict(context.get("facilityType")).get("coding"))),
        "format": [t for c in content for t in _tokens([c.get("format")] if c.get("format") else [])],
    }
    for name, keys in (
        ("date", _keys(data.get("date"), None, point=True)),
        ("creation", _keys(creation, None, point=True)),
        ("period", _keys(period.get("start"), period.get("end"))),
    ):
        if keys:
            fields[f"{name}_low"], fields[f"{name}_high"] = keys
    return fields


def _keys(start: Any, end: Any, *, point: bool = False) -> tuple[str, str] | None:
    start = start if isinstance(start, str) else None
    end = end if isinstance(end, str) else None
    try:
        return dates.stored_keys(start, end, point=point)
    except dates.BadDate:
        return None  # the structure check has already refused a malformed date


def _identifier_tokens(identifiers: list[dict[str, Any]]) -> list[str]:
    return [
        t
        for i in identifiers
        if isinstance(i.get("value"), str)
        for t in (f"{i.get('system', '')}|{i['value']}", i["value"])
    ]


NAME_PREFIX_LIMIT = 40


def fold(text: str) -> str:
    """FHIR string search is case and accent insensitive."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _prefixes(names: list[str]) -> list[str]:
    out: set[str] = set()
    for name in names:
        folded = fold(name)[:NAME_PREFIX_LIMIT]
        out.update(folded[:n] for n in range(1, len(folded) + 1))
    return sorted(out)


def _author_names(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Given and family names of the authors that are (contained) Practitioners or PractitionerRoles."""
    contained = {f"#{r.get('id')}": r for r in (_dict(c) for c in _list(data.get("contained"))) if r.get("id")}
    people = []
    for author in _list(data.get("author")):
        target = contained.get(str(_dict(author).get("reference")))
        if target and target.get("resourceType") == "PractitionerRole":
            target = contained.get(str(_dict(target.get("practitioner")).get("reference")))
        if target and target.get("resourceType") == "Practitioner":
            people.append(target)
    names = [_dict(n) for p in people for n in _list(p.get("name"))]
    given = [g for n in names for g in _list(n.get("given")) if isinstance(g, str)]
    family = [n["family"] for n in names if isinstance(n.get("family"), str)]
    return _prefixes(given), _prefixes(family)


def without_inline_data(data: dict[str, Any]) -> dict[str, Any]:
    resource = {k: v for k, v in data.items() if k not in ("id", "meta")}
    # The source's profile claims and security labels are its own and kept; the rest of meta is the server's.
    meta = {k: v for k, v in _dict(data.get("meta")).items() if k in ("profile", "security", "tag")}
    if meta:
        resource["meta"] = meta
    contents = []
    for item in _list(data.get("content")):
        item = dict(_dict(item))
        item["attachment"] = {k: v for k, v in _dict(item.get("attachment")).items() if k != "data"}
        contents.append(item)
    resource["content"] = contents
    return resource


def content_issues(meta: Metadata, *, size: int, sha1: bytes, media_problem: str | None) -> list[Issue]:
    """Declared size, declared hash and the media type, checked against the bytes received."""
    issues = []
    if meta.declared_size is not None and meta.declared_size != size:
        issues.append(
            Issue(Code.INVALID_RESOURCE, "attachment.size does not match the document.", f"{ATTACHMENT}.size")
        )
    if meta.declared_sha1 is not None and meta.declared_sha1 != sha1:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE, "attachment.hash is not the base64 SHA-1 of the document.", f"{ATTACHMENT}.hash"
            )
        )
    if size == 0:
        issues.append(Issue(Code.INVALID_RESOURCE, "The document is empty.", f"{ATTACHMENT}"))
    if media_problem:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE, media_problem[0].upper() + media_problem[1:] + ".", f"{ATTACHMENT}.contentType"
            )
        )
    return issues
