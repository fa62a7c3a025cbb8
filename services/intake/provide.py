"""ITI-65 Provide Document Bundle as a use case: every document of the bundle is checked, staged and
recorded, or none is; and the one transaction-response, for the synchronous answer and for the status
URL of an asynchronous one.

MHD says a synchronous success means stored, so the synchronous path waits (bounded) for storage's verdict
on every document before answering.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from services.intake.bundles import ParsedBundle
from services.intake.domain import Intake, Staged
from services.intake.folders import PlannedFolder
from services.intake.recipients import Named, admit, facts_for_decision
from services.intake.recipients import named as recipients_named
from services.intake.registry import REJECTED, STORED, version_of
from services.intake.validation import Metadata, check_metadata
from shared.auth import Caller
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE
from shared.store import Document

SYNC_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Provided:
    """An accepted bundle: where its status is kept and the documents it created (in bundle order)."""

    bundle_id: str
    document_ids: list[str]


def _layout(
    bundle: ParsedBundle,
    metas: list[Metadata],
    bundle_id: str,
    folders: list[PlannedFolder],
    recipient_warnings: list[Issue],
) -> dict[str, Any]:
    """What the transaction-response needs of the request, kept with the bundle so the status URL of an
    asynchronous submission answers exactly what the synchronous answer would have."""
    # [entry index, status, location] of the entries that are not documents: the Patient was matched, not
    # created (200, as a conditional create that found its match); a patched DocumentReference was updated.
    responses: list[list[Any]] = []
    if bundle.patient is not None:
        responses.append([bundle.patient.index, "200 OK", f"Patient/{bundle_id}"])
    responses += [[p.index, "200 OK", f"DocumentReference/{p.target}"] for p in bundle.patches]
    responses += [[f.index, "201 Created" if f.created else "200 OK", f"List/{f.folder_id}"] for f in folders]
    warnings = [w.to_fhir() for w in bundle.warnings]
    for document, meta in zip(bundle.documents, metas, strict=False):
        prefix = f"Bundle.entry[{document.index}].resource"
        warnings += [
            Issue(
                w.code, w.diagnostics, (w.expression or "").replace("DocumentReference", prefix, 1), w.severity
            ).to_fhir()
            for w in meta.warnings
        ]
    warnings += [w.to_fhir() for w in recipient_warnings]
    return {
        "entry_count": bundle.entry_count,
        "submission_set_index": bundle.submission_set_index,
        "documents": [d.index for d in bundle.documents],
        "binaries": list(bundle.binary_indices),
        "warnings": warnings,
        "responses": responses,
    }


def check_documents(bundle: ParsedBundle, who: Caller, intake: Intake) -> list[Metadata]:
    """Every DocumentReference's metadata, or one FhirError naming each problem at its bundle entry."""
    metas = []
    issues: list[Issue] = []
    for document in bundle.documents:
        prefix = f"Bundle.entry[{document.index}].resource"
        try:
            metas.append(check_metadata(document.resource, who, intake.catalogue, inline=False))
        except FhirError as exc:
            issues += [
                Issue(i.code, i.diagnostics, (i.expression or "").replace("DocumentReference", prefix, 1), i.severity)
                for i in exc.issues
            ]
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    return metas


async def check_patches(intake: Intake, bundle: ParsedBundle, metas: list[Metadata], who: Caller) -> list[Issue]:
    """UpdateDocumentRefs: the custodian's own document, one this bundle replaces, at the version named.

    The patched document becomes superseded when its replacement is stored (``Intake.on_stored``), so the
    patch and the replacement take effect together or not at all.
    """
    replaced = {target for meta in metas for target in meta.replaces}
    issues = []
    for patch in bundle.patches:
        where = f"Bundle.entry[{patch.index}].request"
        old = await intake.registry.get(patch.target)
        if old is None or old["custodian"] != who.org:
            issues.append(
                Issue(Code.FORBIDDEN, "Only the custodian of a DocumentReference may patch it.", f"{where}.url")
            )
        elif patch.target not in replaced:
            issues.append(
                Issue(
                    Code.BUSINESS_RULE,
                    "A PATCH entry marks superseded a document that a DocumentReference "
                    f"of this bundle replaces (relatesTo replaces DocumentReference/{patch.target}).",
                    f"{where}.url",
                )
            )
        elif patch.if_match is not None and patch.if_match != version_of(old):
            issues.append(
                Issue(Code.PRECONDITION_FAILED, f"The document is at version {version_of(old)}.", f"{where}.ifMatch")
            )
    return issues


async def intended_recipients(
    intake: Intake, bundle: ParsedBundle, metas: list[Metadata]
) -> tuple[list[tuple[str, ...]], list[Issue]]:
    """The SubmissionSet's intended recipients (for every document) and each DocumentReference's own (for
    it): whom to notify of each document, and a warning for each that cannot be notified."""
    everyone = list(range(len(bundle.documents)))
    named: list[tuple[Named, list[int]]] = []
    if bundle.submission_set is not None:
        where = f"Bundle.entry[{bundle.submission_set_index}].resource"
        named += [(n, everyone) for n in recipients_named(bundle.submission_set, where)]
    for position, document in enumerate(bundle.documents):
        named += [
            (n, [position]) for n in recipients_named(document.resource, f"Bundle.entry[{document.index}].resource")
        ]
    if not named:
        return [() for _ in metas], []
    facts = [
        facts_for_decision(
            f"Bundle.entry[{d.index}]", m.patient_nhs_number, m.custodian, m.document_type.system, m.document_type.code
        )
        for d, m in zip(bundle.documents, metas, strict=True)
    ]
    return await admit(intake.policy, named, facts)


async def provide(
    intake: Intake, bundle: ParsedBundle, who: Caller, *, request_id: str, address: str | None
) -> Provided:
    """All documents of the bundle are accepted or none is: anything staged before a failure is deleted
    (``Intake.accept`` deletes the staged copies itself when its transaction fails). Folders are written
    in the same transaction as the documents."""
    metas = check_documents(bundle, who, intake)
    issues = await check_patches(intake, bundle, metas, who)
    planned, folder_issues = await intake.folders.plan(
        bundle.folders, [m.patient_nhs_number for m in metas], who, intake.registry
    )
    issues += folder_issues
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    await intake.check_references(
        [(f"Bundle.entry[{d.index}].resource", m) for d, m in zip(bundle.documents, metas, strict=False)], who
    )
    recipients, recipient_warnings = await intended_recipients(intake, bundle, metas)
    staged: list[Staged] = []
    try:
        for document, meta in zip(bundle.documents, metas, strict=False):
            staged.append(await intake.stage(meta, document.content))
    except BaseException:
        await intake.discard(staged)
        raise
    bundle_id = str(uuid.uuid4())
    folders = [f.document(who.org, [s.document_id for s in staged]) for f in planned]
    accepted = await intake.accept(
        staged,
        who,
        request_id=request_id,
        address=address,
        bundle_id=bundle_id,
        bundle_layout=_layout(bundle, metas, bundle_id, planned, recipient_warnings),
        folders=folders,
        recipients=recipients,
    )
    # An idempotent repeat answers with the original bundle's id.
    return Provided(accepted[0].document.get("bundle_id", bundle_id), [a.document["_id"] for a in accepted])


async def wait_until_decided(
    intake: Intake, document_ids: list[str], *, timeout: float = SYNC_WAIT_SECONDS
) -> list[Document] | None:
    """The documents once storage has stored or rejected every one; None if that takes over ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        docs = [await intake.registry.get(i) for i in document_ids]
        if all(d is not None and d["status"] in (STORED, REJECTED) for d in docs):
            return [d for d in docs if d is not None]
        await asyncio.sleep(POLL_SECONDS)
    return None


def answer(docs: list[Document]) -> dict[str, Any] | None:
    """The transaction-response once every document is stored; None while any is still being stored.

    A document storage rejected fails the whole answer (one issue each). The answer is built from the
    bundle's layout kept with its first document, so the synchronous answer and the status URL's are the
    same, entry for entry: each at its request entry's position, each with a ``location``, and the
    warnings (relatesTo codes not processed, intended recipients not notified) on the SubmissionSet's entry.
    """
    rejected = [d for d in docs if d["status"] == REJECTED]
    if rejected:
        raise FhirError(
            [
                Issue(
                    Code.PROCESSING,
                    f"Document {d['_id']} was rejected by storage: {d['rejection']['reason']}",
                    "Bundle.entry",
                )
                for d in rejected
            ]
        )
    if not all(d["status"] == STORED for d in docs):
        return None
    layout = docs[0].get("bundle_layout")
    if layout is None:  # recorded before layouts were kept
        return _response([{"status": "201 Created", "location": f"DocumentReference/{d['_id']}"} for d in docs])
    entries: list[dict[str, Any]] = [{"status": "201 Created"} for _ in range(layout["entry_count"])]
    for position, (index, doc) in enumerate(zip(layout["documents"], docs, strict=False)):
        entries[index]["location"] = f"DocumentReference/{doc['_id']}"
        if position < len(layout["binaries"]):
            entries[layout["binaries"][position]]["location"] = f"Binary/{doc['_id']}"
    entries[layout["submission_set_index"]]["location"] = f"List/{docs[0]['bundle_id']}"
    for index, status, location in layout.get("responses", []):
        entries[index] = {"status": status, "location": location}
    if layout["warnings"]:
        entries[layout["submission_set_index"]]["outcome"] = {
            "resourceType": "OperationOutcome",
            "issue": layout["warnings"],
        }
    return _response(entries)


def submission_set(bundle_id: str, docs: list[Document]) -> dict[str, Any]:
    """The SubmissionSet of an accepted bundle as a List: who sent it, when, and its documents."""
    first = docs[0]
    return {
        "resourceType": "List",
        "id": bundle_id,
        "meta": {"lastUpdated": first["received_at"]},
        "status": "current",
        "mode": "working",
        "code": {
            "coding": [{"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "submissionset"}]
        },
        "subject": {"identifier": {"system": NHS_NUMBER, "value": first["patient"]}},
        "source": {"identifier": {"system": ODS_CODE, "value": first["submitted_by"]["org"]}},
        "date": first["received_at"],
        "entry": [{"item": {"reference": f"DocumentReference/{d['_id']}"}} for d in docs],
    }


def matched_patient(bundle_id: str, docs: list[Document]) -> dict[str, Any]:
    """Where a bundle's Patient entry points: the patient its documents were filed under. Intake keeps no
    patient record; this is the match, named by NHS number only."""
    if not any(
        location == f"Patient/{bundle_id}"
        for _, _, location in (docs[0].get("bundle_layout") or {}).get("responses", [])
    ):
        raise FhirError.of(Code.NOT_FOUND)
    return {
        "resourceType": "Patient",
        "id": bundle_id,
        "meta": {"lastUpdated": docs[0]["received_at"]},
        "identifier": [{"system": NHS_NUMBER, "value": docs[0]["patient"]}],
    }


def _response(responses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": r} for r in responses]}
