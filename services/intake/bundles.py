"""MHD ITI-65 Provide Document Bundle: a transaction Bundle holding a SubmissionSet List, one or more
DocumentReferences and their Binaries, resolved by ``fullUrl``; and the slices MHD allows beside them: the
Patient (0..1, matched by NHS number, never recorded), PATCH entries that mark a replaced DocumentReference
superseded (UpdateDocumentRefs), and Folders (a List coded ``folder``, POST to create, PUT to update)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.intake.validation import decode_base64
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, identifier_value, valid_nhs_number

# The one change a PATCH entry may make, as FHIRPath Patch (IHE's example) and as JSON Patch in a Binary.
SUPERSEDE_JSON_PATCH = [{"op": "replace", "path": "/status", "value": "superseded"}]
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class BundleDocument:
    index: int  # position of the DocumentReference entry in the request
    resource: dict[str, Any]  # the DocumentReference with its Binary's bytes put inline
    content: bytes


@dataclass(frozen=True)
class BundlePatient:
    """ProvideBundle's Patient slice: who the documents are about, for a source without a shared patient
    service. Only its NHS number is used, to match the documents' subject."""

    index: int
    nhs_number: str


@dataclass(frozen=True)
class BundlePatch:
    """An UpdateDocumentRefs entry: ``DocumentReference/{target}`` becomes superseded."""

    index: int
    target: str
    if_match: int | None


@dataclass(frozen=True)
class BundleFolder:
    """A Folder List: created (``folder_id`` None) or, by PUT, the whole new state of an existing one."""

    index: int
    folder_id: str | None
    resource: dict[str, Any]
    patient: str | None  # the subject's NHS number, when it names one
    # each item in order: ("new", position in ``documents``) or ("existing", DocumentReference id)
    items: tuple[tuple[str, Any], ...]
    if_match: int | None = None


@dataclass(frozen=True)
class ParsedBundle:
    documents: tuple[BundleDocument, ...]
    submission_set_index: int
    entry_count: int
    warnings: tuple[Issue, ...]
    # entry index of each document's Binary, in the order of ``documents``
    binary_indices: tuple[int, ...] = ()
    patient: BundlePatient | None = None
    patches: tuple[BundlePatch, ...] = ()
    folders: tuple[BundleFolder, ...] = ()
    submission_set: dict[str, Any] | None = None  # the SubmissionSet List as sent


def _is_submission_set(resource: dict[str, Any]) -> bool:
    codes = [c.get("code") for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
    return resource.get("resourceType") == "List" and "submissionset" in codes


def _is_folder(resource: dict[str, Any]) -> bool:
    codes = [c.get("code") for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
    return resource.get("resourceType") == "List" and "folder" in codes


def _target(url: Any, kind: str) -> str | None:
    """The id in ``{kind}/{id}`` (a request URL, relative or absolute), or None."""
    if not isinstance(url, str) or f"{kind}/" not in url:
        return None
    head, _, rest = url.rpartition(f"{kind}/")
    if head and not head.endswith("/"):
        return None
    return rest if rest and "/" not in rest and "?" not in rest else None


def _if_match(request: dict[str, Any]) -> int | str | None:
    raw = request.get("ifMatch")
    if raw is None:
        return None
    text = str(raw).strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() and int(text) > 0 else "invalid"


def _is_supersede(resource: dict[str, Any]) -> bool:
    """The patch IHE's replace example sends, as FHIRPath Patch Parameters or as JSON Patch in a Binary."""
    if resource.get("resourceType") == "Binary":
        data = decode_base64(resource.get("data"))
        if resource.get("contentType") != JSON_PATCH or data is None:
            return False
        try:
            return bool(json.loads(data) == SUPERSEDE_JSON_PATCH)
        except ValueError:
            return False
    if resource.get("resourceType") != "Parameters":
        return False
    operations = resource.get("parameter")
    if not isinstance(operations, list) or len(operations) != 1 or not isinstance(operations[0], dict):
        return False
    parts = {p.get("name"): p for p in operations[0].get("part") or [] if isinstance(p, dict)}
    return (
        operations[0].get("name") == "operation"
        and set(parts) == {"type", "path", "value"}
        and parts["type"].get("valueCode") == "replace"
        and parts["path"].get("valueString") == "DocumentReference.status"
        and parts["value"].get("valueCode") == "superseded"
    )


def _patient_nhs_number(resource: dict[str, Any]) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == NHS_NUMBER:
            value = identifier.get("value")
            return value if isinstance(value, str) else None
    return None


def _subject(
    resource: dict[str, Any], patient_url: str | None, patient: BundlePatient | None, where: str, issues: list[Issue]
) -> dict[str, Any] | None:
    """The subject with a reference to the bundle's Patient entry turned into its NHS number (the
    entry's ``urn:uuid`` means nothing once the bundle is gone); an NHS number that is not the Patient
    entry's is refused."""
    subject = resource.get("subject")
    if not isinstance(subject, dict) or patient is None:
        return None
    named = identifier_value(subject, NHS_NUMBER)
    points_at_entry = patient_url is not None and subject.get("reference") == patient_url
    if named is not None and named != patient.nhs_number:
        issues.append(
            Issue(
                Code.BUSINESS_RULE,
                "subject names a different NHS number from the bundle's Patient "
                f"entry (Bundle.entry[{patient.index}]).",
                f"{where}.subject",
            )
        )
        return None
    if not points_at_entry:
        return None
    return {k: v for k, v in subject.items() if k != "reference"} | {
        "identifier": {"system": NHS_NUMBER, "value": patient.nhs_number}
    }


def parse(bundle: dict[str, Any]) -> ParsedBundle:
    """Split a Provide Document Bundle into its documents, or raise ``FhirError`` listing every problem."""
    if bundle.get("resourceType") != "Bundle":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a transaction Bundle.", "Bundle.resourceType")
    if bundle.get("type") == "document":
        raise FhirError.of(Code.FHIR_DOCUMENT_NOT_SUPPORTED, expression="Bundle.type")
    if bundle.get("type") != "transaction":
        raise FhirError.of(Code.INVALID_RESOURCE, "Bundle.type must be 'transaction'.", "Bundle.type")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise FhirError.of(Code.INVALID_RESOURCE, "The Bundle has no entries.", "Bundle.entry")
    issues: list[Issue] = []
    warnings: list[Issue] = []
    binaries: dict[str, tuple[int, bytes]] = {}
    references: list[tuple[int, dict[str, Any]]] = []
    submission_sets: list[int] = []
    patients: list[tuple[int, str | None, dict[str, Any]]] = []
    patches: list[BundlePatch] = []
    folders: list[tuple[int, str | None, dict[str, Any], int | None]] = []
    reference_urls: dict[str, int] = {}  # fullUrl of a DocumentReference entry -> its entry index
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            issues.append(Issue(Code.INVALID_RESOURCE, "Every entry needs a resource.", f"{where}.resource"))
            continue
        request = request if isinstance(request, dict) else {}
        method = request.get("method")
        kind = resource.get("resourceType")
        if method == "PATCH":
            target = _target(request.get("url"), "DocumentReference")
            if_match = _if_match(request)
            if target is None:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "A PATCH entry's request.url must be DocumentReference/{id}.",
                        f"{where}.request.url",
                    )
                )
            elif not _is_supersede(resource):
                issues.append(
                    Issue(
                        Code.BUSINESS_RULE,
                        "The only change a PATCH entry may make is status -> "
                        "superseded (FHIRPath Patch: replace DocumentReference.status with "
                        f"'superseded'; or JSON Patch {json.dumps(SUPERSEDE_JSON_PATCH)} in a Binary of "
                        f"type {JSON_PATCH}).",
                        f"{where}.resource",
                    )
                )
            elif if_match == "invalid":
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        'request.ifMatch must name a version, as W/"3".',
                        f"{where}.request.ifMatch",
                    )
                )
            else:
                patches.append(BundlePatch(i, target, if_match if isinstance(if_match, int) else None))
            continue
        if _is_folder(resource):
            if_match = _if_match(request)
            if if_match == "invalid":
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        'request.ifMatch must name a version, as W/"3".',
                        f"{where}.request.ifMatch",
                    )
                )
            elif method == "POST":
                folders.append((i, None, resource, None))
            elif method == "PUT" and (folder_id := _target(request.get("url"), "List")) is not None:
                folders.append((i, folder_id, resource, if_match if isinstance(if_match, int) else None))
            else:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "A Folder is created with POST List or updated with PUT List/{id}.",
                        f"{where}.request",
                    )
                )
            continue
        if method != "POST":
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "Every entry must be a POST request (a PATCH of a replaced DocumentReference, a PUT of a Folder).",
                    f"{where}.request",
                )
            )
        full_url = entry.get("fullUrl")
        if kind == "Binary":
            data = decode_base64(resource.get("data"))
            if data is None or not isinstance(full_url, str):
                issues.append(Issue(Code.INVALID_RESOURCE, "A Binary needs a fullUrl and base64 data.", where))
            else:
                binaries[full_url] = (i, data)
        elif kind == "DocumentReference":
            references.append((i, resource))
            if isinstance(full_url, str):
                reference_urls[full_url] = i
        elif _is_submission_set(resource):
            submission_sets.append(i)
        elif kind == "Patient":
            patients.append((i, full_url if isinstance(full_url, str) else None, resource))
        else:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "Only a SubmissionSet, Folders, DocumentReferences, their "
                    "Binaries, one Patient and PATCHes of replaced DocumentReferences are accepted.",
                    f"{where}.resource.resourceType",
                )
            )
    if len(submission_sets) != 1:
        issues.append(
            Issue(Code.INVALID_RESOURCE, "The Bundle must hold exactly one SubmissionSet List.", "Bundle.entry")
        )
    if not references:
        issues.append(Issue(Code.INVALID_RESOURCE, "The Bundle holds no DocumentReference.", "Bundle.entry"))
    patient, patient_url = None, None
    if len(patients) > 1:
        issues.append(
            Issue(
                Code.INVALID_RESOURCE,
                "A Provide Document Bundle holds at most one Patient.",
                f"Bundle.entry[{patients[1][0]}]",
            )
        )
    elif patients:
        index, patient_url, resource = patients[0]
        nhs_number = _patient_nhs_number(resource)
        if nhs_number is None:
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    f"The Patient must carry an NHS number ({NHS_NUMBER}): the "
                    "exchange matches patients by NHS number.",
                    f"Bundle.entry[{index}].resource.identifier",
                )
            )
        elif not valid_nhs_number(nhs_number):
            issues.append(
                Issue(
                    Code.INVALID_NHS_NUMBER,
                    "The Patient's NHS number is not valid.",
                    f"Bundle.entry[{index}].resource.identifier",
                )
            )
        else:
            patient = BundlePatient(index, nhs_number)
    documents: list[BundleDocument] = []
    binary_indices = []
    positions: dict[int, int] = {}  # entry index of a DocumentReference -> its position in ``documents``
    for i, resource in references:
        content = resource.get("content")
        attachment = (
            content[0].get("attachment")
            if isinstance(content, list) and content and isinstance(content[0], dict)
            else None
        )
        url = attachment.get("url") if isinstance(attachment, dict) else None
        if not isinstance(url, str) or url not in binaries or not isinstance(attachment, dict):
            issues.append(
                Issue(
                    Code.INVALID_RESOURCE,
                    "content[0].attachment.url must be the fullUrl of a Binary in this Bundle.",
                    f"Bundle.entry[{i}].resource.content[0].attachment.url",
                )
            )
            continue
        inline = dict(resource)
        assert isinstance(content, list)  # attachment came from content[0]
        inline["content"] = [
            {**content[0], "attachment": {k: v for k, v in attachment.items() if k != "url"}},
            *content[1:],
        ]
        subject = _subject(resource, patient_url, patient, f"Bundle.entry[{i}].resource", issues)
        if subject is not None:
            inline["subject"] = subject
        positions[i] = len(documents)
        documents.append(BundleDocument(i, inline, binaries[url][1]))
        binary_indices.append(binaries[url][0])
    parsed_folders = []
    for i, folder_id, resource, folder_if_match in folders:
        subject = _subject(resource, patient_url, patient, f"Bundle.entry[{i}].resource", issues) or resource.get(
            "subject"
        )
        items: list[tuple[str, Any]] = []
        for n, item in enumerate(resource.get("entry") or []):
            ref = (item.get("item") or {}).get("reference") if isinstance(item, dict) else None
            existing = (
                _target(ref, "DocumentReference") if isinstance(ref, str) and not ref.startswith("urn:") else None
            )
            if ref in reference_urls and reference_urls[ref] in positions:
                items.append(("new", positions[reference_urls[ref]]))
            elif existing is not None:
                items.append(("existing", existing))
            else:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        "A Folder's entry.item must be a DocumentReference of this "
                        "Bundle (its fullUrl) or DocumentReference/{id}.",
                        f"Bundle.entry[{i}].resource.entry[{n}].item",
                    )
                )
        parsed_folders.append(
            BundleFolder(i, folder_id, resource, identifier_value(subject, NHS_NUMBER), tuple(items), folder_if_match)
        )
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    return ParsedBundle(
        tuple(documents),
        submission_sets[0],
        len(entries),
        tuple(warnings),
        tuple(binary_indices),
        patient,
        tuple(patches),
        tuple(parsed_folders),
        entries[submission_sets[0]]["resource"],
    )
