"""Intake's HTTP surface: the three ways to submit (inline, multipart, ITI-65 Bundle), read, search
(ITI-67), withdrawal, and the status of an asynchronous bundle."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlencode
from typing import Any

from aiohttp import BodyPartReader, web
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference

from services.intake import bundles
from services.intake.domain import Accepted, Intake
from services.intake.limits import RateLimiter
from services.intake.registry import REJECTED, STORED
from services.intake.search import search_filter
from services.intake.validation import check_metadata, inline_content
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError, Issue, operation_outcome
from shared.http import caller, fhir_response, read_json, request_id
from shared.objects import one_chunk

INTAKE = web.AppKey("intake", Intake)
LIMITER = web.AppKey("intake_limiter", RateLimiter)
CHUNK = 256 * 1024
METADATA_LIMIT = 1024 * 1024
SYNC_WAIT_SECONDS = 30.0


def _created(request: web.Request, accepted: list[Accepted], *, status: int | None = None) -> web.Response:
    doc = accepted[0].document
    resource = _document_view(doc)
    code = status or (202 if accepted[0].created else 200)
    return fhir_response(resource, status=code, headers={"Location": f"/fhir/DocumentReference/{doc['_id']}"})


def _document_view(doc: dict[str, Any]) -> dict[str, Any]:
    from services.intake.registry import to_fhir

    return to_fhir(doc)


async def create_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "c")
    intake = request.app[INTAKE]
    request.app[LIMITER].take(who.org)
    key = request.headers.get("Idempotency-Key")
    if request.content_type.startswith("multipart/"):
        staged = await _stage_multipart(request, intake, who)
    else:
        data = await read_json(request, xml_model=DocumentReference, hint=" (or a multipart document)")
        meta = check_metadata(data, who, intake.catalogue, inline=True)
        content = inline_content(data)
        await intake.check_references([("DocumentReference", meta)], who)
        staged = await intake.stage(meta, one_chunk(content))
    accepted = await intake.accept([staged], who, request_id=request_id(request), address=request.remote,
                                   idempotency_key=key)
    return _created(request, accepted)


async def _stage_multipart(request: web.Request, intake: Intake, who: Any) -> Any:
    """Part one: the DocumentReference JSON; part two: the document, streamed to storage as it arrives."""
    try:
        reader = await request.multipart()
        first = await reader.next()
        if not isinstance(first, BodyPartReader):
            raise FhirError.of(Code.MALFORMED_REQUEST, "The first part must be the DocumentReference (JSON).")
        raw = await first.read(decode=False)
        if len(raw) > METADATA_LIMIT:
            raise FhirError.of(Code.TOO_LARGE, "The DocumentReference part is too large.")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise FhirError.of(Code.MALFORMED_JSON, "The first part is not valid JSON.") from None
        if not isinstance(data, dict):
            raise FhirError.of(Code.MALFORMED_REQUEST, "The first part must be a DocumentReference.")
        meta = check_metadata(data, who, intake.catalogue, inline=False)
        await intake.check_references([("DocumentReference", meta)], who)
        second = await reader.next()
        if not isinstance(second, BodyPartReader):
            raise FhirError.of(Code.MALFORMED_REQUEST, "The second part must be the document.")

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await second.read_chunk(CHUNK):
                yield chunk

        return await intake.stage(meta, chunks())
    except ValueError:
        raise FhirError.of(Code.MALFORMED_REQUEST, "The multipart body could not be read.") from None


async def transaction(request: web.Request) -> web.Response:
    """ITI-65: all documents of the bundle are accepted or none is."""
    who = caller(request)
    who.require("DocumentReference", "c")
    intake = request.app[INTAKE]
    bundle = bundles.parse(await read_json(request, xml_model=Bundle))
    request.app[LIMITER].take(who.org, cost=len(bundle.documents))
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
    await intake.check_references([(f"Bundle.entry[{d.index}].resource", m) for d, m in zip(bundle.documents, metas)],
                                  who)
    staged = []
    try:
        for document, meta in zip(bundle.documents, metas):
            staged.append(await intake.stage(meta, one_chunk(document.content)))
    except BaseException:
        await intake.discard(staged)
        raise
    bundle_id = str(uuid.uuid4())
    accepted = await intake.accept(staged, who, request_id=request_id(request), address=request.remote,
                                   bundle_id=bundle_id)
    status_url = f"/fhir/_bundle/{accepted[0].document.get('bundle_id', bundle_id)}"
    if "respond-async" in request.headers.get("Prefer", ""):
        return fhir_response(operation_outcome([Issue(Code.PROCESSING, "Accepted; poll the status URL.",
                                                      severity="information")]),
                             status=202, headers={"Content-Location": status_url})
    docs = await _wait_until_processed(intake, [a.document["_id"] for a in accepted])
    if docs is None:
        return fhir_response(operation_outcome([Issue(Code.PROCESSING, "Accepted; still being stored. Poll the "
                                                      "status URL.", severity="information")]),
                             status=202, headers={"Content-Location": status_url})
    return _transaction_response(bundle, docs)


async def _wait_until_processed(intake: Intake, ids: list[str]) -> list[dict[str, Any]] | None:
    """MHD: success means stored. Wait (bounded) for storage's verdict on every document."""
    deadline = asyncio.get_running_loop().time() + SYNC_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        docs = [await intake.registry.get(i) for i in ids]
        if all(d is not None and d["status"] in (STORED, REJECTED) for d in docs):
            return [d for d in docs if d is not None]
        await asyncio.sleep(0.05)
    return None


def _transaction_response(bundle: bundles.ParsedBundle, docs: list[dict[str, Any]]) -> web.Response:
    rejected = [d for d in docs if d["status"] == REJECTED]
    if rejected:
        raise FhirError([Issue(Code.PROCESSING, f"Document {d['_id']} was rejected by storage: "
                               f"{d['rejection']['reason']}", "Bundle.entry") for d in rejected])
    by_index = {bundle.documents[i].index: d for i, d in enumerate(docs)}
    entries: list[dict[str, Any]] = []
    warnings = [w.to_fhir() for w in bundle.warnings]
    for i in range(bundle.entry_count):
        response: dict[str, Any] = {"status": "201 Created"}
        if i in by_index:
            response["location"] = f"DocumentReference/{by_index[i]['_id']}"
        elif i == bundle.submission_set_index:
            response["location"] = f"List/{docs[0]['bundle_id']}"
        entries.append({"response": response})
    if warnings:
        entries[bundle.submission_set_index]["response"]["outcome"] = {"resourceType": "OperationOutcome",
                                                                       "issue": warnings}
    return fhir_response({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


async def bundle_status(request: web.Request) -> web.Response:
    """The FHIR asynchronous pattern's status URL for a bundle sent with ``Prefer: respond-async``."""
    who = caller(request)
    docs = await request.app[INTAKE].bundle_state(request.match_info["id"], who)
    if any(d["status"] == REJECTED for d in docs):
        raise FhirError([Issue(Code.PROCESSING, f"Document {d['_id']} was rejected: {d['rejection']['reason']}",
                               "Bundle.entry") for d in docs if d["status"] == REJECTED])
    if not all(d["status"] == STORED for d in docs):
        return fhir_response(operation_outcome([Issue(Code.PROCESSING, "Still being stored.", severity="information")]),
                             status=202, headers={"Retry-After": "1"})
    return fhir_response({
        "resourceType": "Bundle", "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created", "location": f"DocumentReference/{d['_id']}"}} for d in docs],
    })


async def read_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "r")
    outcome = await request.app[INTAKE].read(request.match_info["id"], who, request_id=request_id(request))
    headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
    return fhir_response(outcome.resource, status=outcome.status, headers=headers)


async def patch_document(request: web.Request) -> web.Response:
    """JSON Patch limited to what a custodian may change: status -> entered-in-error."""
    who = caller(request)
    who.require("DocumentReference", "u")
    if request.content_type not in ("application/json-patch+json", "application/json"):
        raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "Send a JSON Patch (application/json-patch+json).")
    try:
        patch = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise FhirError.of(Code.MALFORMED_JSON) from None
    if patch != [{"op": "replace", "path": "/status", "value": "entered-in-error"}]:
        raise FhirError.of(Code.BUSINESS_RULE, "The only change allowed is "
                           '[{"op": "replace", "path": "/status", "value": "entered-in-error"}].')
    resource = await request.app[INTAKE].withdraw(request.match_info["id"], who, request_id=request_id(request))
    return fhir_response(resource)


async def search_documents(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "s")
    params = dict(request.query)
    if request.method == "POST":
        if request.content_type != "application/x-www-form-urlencoded":
            raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "POST _search takes application/x-www-form-urlencoded.")
        params.update({k: str(v) for k, v in (await request.post()).items()})
    where = search_filter(params)
    count, offset = page_params(params)
    query = urlencode(sorted(params.items()))
    resources, more = await request.app[INTAKE].search(where, who, count=count, offset=offset, query=query,
                                                       request_id=request_id(request), address=request.remote)
    kept = {k: v for k, v in params.items() if not k.startswith("_")}
    return fhir_response(searchset("/fhir/DocumentReference", kept, resources, count=count, offset=offset,
                                   has_more=more))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/fhir", transaction)
    app.router.add_post("/fhir/DocumentReference", create_document)
    app.router.add_get("/fhir/DocumentReference", search_documents)
    app.router.add_post("/fhir/DocumentReference/_search", search_documents)
    app.router.add_get("/fhir/DocumentReference/{id}", read_document)
    app.router.add_patch("/fhir/DocumentReference/{id}", patch_document)
    app.router.add_get("/fhir/_bundle/{id}", bundle_status)
