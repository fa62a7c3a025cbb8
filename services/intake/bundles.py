"""MHD ITI-65 Provide Document Bundle: a transaction Bundle holding a SubmissionSet List, one or more
DocumentReferences and their Binaries, resolved by ``fullUrl``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.intake.validation import decode_base64
from shared.fhir.errors import Code, FhirError, Issue

FOLDER_WARNING = "PartialFolderContentNotProcessed"


@dataclass(frozen=True)
class BundleDocument:
    index: int  # position of the DocumentReference entry in the request
    resource: dict[str, Any]  # the DocumentReference with its Binary's bytes put inline
    content: bytes


@dataclass(frozen=True)
class ParsedBundle:
    documents: tuple[BundleDocument, ...]
    submission_set_index: int
    entry_count: int
    warnings: tuple[Issue, ...]
    # entry index of each document's Binary, in the order of ``documents``
    binary_indices: tuple[int, ...] = ()


def _is_submission_set(resource: dict[str, Any]) -> bool:
    codes = [c.get("code") for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
    return resource.get("resourceType") == "List" and "submissionset" in codes


def _is_folder(resource: dict[str, Any]) -> bool:
    codes = [c.get("code") for c in (resource.get("code") or {}).get("coding") or [] if isinstance(c, dict)]
    return resource.get("resourceType") == "List" and "folder" in codes


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
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            issues.append(Issue(Code.INVALID_RESOURCE, "Every entry needs a resource.", f"{where}.resource"))
            continue
        if not isinstance(request, dict) or request.get("method") != "POST":
            issues.append(Issue(Code.INVALID_RESOURCE, "Every entry must be a POST request.", f"{where}.request"))
        kind = resource.get("resourceType")
        if kind == "Binary":
            data = decode_base64(resource.get("data"))
            full_url = entry.get("fullUrl")
            if data is None or not isinstance(full_url, str):
                issues.append(Issue(Code.INVALID_RESOURCE, "A Binary needs a fullUrl and base64 data.", where))
            else:
                binaries[full_url] = (i, data)
        elif kind == "DocumentReference":
            references.append((i, resource))
        elif _is_submission_set(resource):
            submission_sets.append(i)
        elif _is_folder(resource):
            warnings.append(Issue(Code.PROCESSING, FOLDER_WARNING, where, severity="warning"))
        else:
            issues.append(Issue(Code.INVALID_RESOURCE, "Only a SubmissionSet List, DocumentReferences and Binaries "
                                "are accepted.", f"{where}.resource.resourceType"))
    if len(submission_sets) != 1:
        issues.append(Issue(Code.INVALID_RESOURCE, "The Bundle must hold exactly one SubmissionSet List.", "Bundle.entry"))
    if not references:
        issues.append(Issue(Code.INVALID_RESOURCE, "The Bundle holds no DocumentReference.", "Bundle.entry"))
    documents = []
    binary_indices = []
    for i, resource in references:
        content = resource.get("content")
        attachment = content[0].get("attachment") if isinstance(content, list) and content and isinstance(content[0], dict) else None
        url = attachment.get("url") if isinstance(attachment, dict) else None
        if not isinstance(url, str) or url not in binaries:
            issues.append(Issue(Code.INVALID_RESOURCE, "content[0].attachment.url must be the fullUrl of a Binary "
                                "in this Bundle.", f"Bundle.entry[{i}].resource.content[0].attachment.url"))
            continue
        inline = dict(resource)
        inline["content"] = [{**content[0], "attachment": {k: v for k, v in attachment.items() if k != "url"}}, *content[1:]]
        documents.append(BundleDocument(i, inline, binaries[url][1]))
        binary_indices.append(binaries[url][0])
    if issues:
        raise FhirError(issues)
    return ParsedBundle(tuple(documents), submission_sets[0], len(entries), tuple(warnings), tuple(binary_indices))
