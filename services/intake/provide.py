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
from services.intake.registry import REJECTED, STORED
from services.intake.validation import Metadata, check_metadata
from shared.auth import Caller
from shared.fhir.errors import Code, FhirError, Issue
from shared.objects import one_chunk
from shared.store import Document

SYNC_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Provided:
    """An accepted bundle: where its status is kept and the documents it created (in bundle order)."""

    bundle_id: str
    document_ids: list[str]


def check_documents(bundle: ParsedBundle, who: Caller, intake: Intake) -> list[Metadata]:
    """Every DocumentReference's metadata, or one FhirError naming each problem at its bundle entry."""
    metas = []
    issues: list[Issue] = []
    for document in bundle.documents:
        prefix = f"Bundle.entry[{document.index}].resource"
        try:
            metas.append(check_metadata(document.resource, who, intake.catalogue, inline=False))
        except FhirError as exc:
            issues += [Issue(i.code, i.diagnostics, (i.expression or "").replace("DocumentReference", prefix, 1),
                             i.severity) for i in exc.issues]
    if issues:
        raise FhirError(issues, status=max(i.code.status for i in issues))
    return metas


async def provide(intake: Intake, bundle: ParsedBundle, who: Caller, *, request_id: str,
                  address: str | None) -> Provided:
    """All documents of the bundle are accepted or none is: anything staged before a failure is deleted
    (``Intake.accept`` deletes the staged copies itself when its transaction fails)."""
    metas = check_documents(bundle, who, intake)
    await intake.check_references([(f"Bundle.entry[{d.index}].resource", m) for d, m in zip(bundle.documents, metas)],
                                  who)
    staged: list[Staged] = []
    try:
        for document, meta in zip(bundle.documents, metas):
            staged.append(await intake.stage(meta, one_chunk(document.content)))
    except BaseException:
        await intake.discard(staged)
        raise
    bundle_id = str(uuid.uuid4())
    accepted = await intake.accept(staged, who, request_id=request_id, address=address, bundle_id=bundle_id)
    # An idempotent repeat answers with the original bundle's id.
    return Provided(accepted[0].document.get("bundle_id", bundle_id), [a.document["_id"] for a in accepted])


async def wait_until_decided(intake: Intake, document_ids: list[str], *,
                             timeout: float = SYNC_WAIT_SECONDS) -> list[Document] | None:
    """The documents once storage has stored or rejected every one; None if that takes over ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        docs = [await intake.registry.get(i) for i in document_ids]
        if all(d is not None and d["status"] in (STORED, REJECTED) for d in docs):
            return [d for d in docs if d is not None]
        await asyncio.sleep(POLL_SECONDS)
    return None


def answer(docs: list[Document], request: ParsedBundle | None = None) -> dict[str, Any] | None:
    """The transaction-response once every document is stored; None while any is still being stored.

    A document storage rejected fails the whole answer (one issue each). With the ``request`` as parsed
    (the synchronous path) each answer sits at its entry's position, the SubmissionSet's carries the
    bundle's location and any warnings; without it (the status URL, which no longer has the request)
    there is one entry per document, in bundle order.
    """
    rejected = [d for d in docs if d["status"] == REJECTED]
    if rejected:
        raise FhirError([Issue(Code.PROCESSING, f"Document {d['_id']} was rejected by storage: "
                               f"{d['rejection']['reason']}", "Bundle.entry") for d in rejected])
    if not all(d["status"] == STORED for d in docs):
        return None
    if request is None:
        return _response([{"status": "201 Created", "location": f"DocumentReference/{d['_id']}"} for d in docs])
    by_index = {request.documents[i].index: d for i, d in enumerate(docs)}
    entries: list[dict[str, Any]] = []
    for i in range(request.entry_count):
        response: dict[str, Any] = {"status": "201 Created"}
        if i in by_index:
            response["location"] = f"DocumentReference/{by_index[i]['_id']}"
        elif i == request.submission_set_index:
            response["location"] = f"List/{docs[0]['bundle_id']}"
        entries.append(response)
    if request.warnings:
        entries[request.submission_set_index]["outcome"] = {
            "resourceType": "OperationOutcome", "issue": [w.to_fhir() for w in request.warnings]}
    return _response(entries)


def _response(responses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": [{"response": r} for r in responses]}
