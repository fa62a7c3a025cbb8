"""Intake's HTTP surface: the three ways to submit (inline, multipart, ITI-65 Bundle), read, search
(ITI-67), withdrawal, and the status of an asynchronous bundle."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import BodyPartReader, web
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference

from services.intake import bundles, provide
from services.intake.domain import Accepted, Intake, Pending, StagingUnavailable
from services.intake.limits import RateLimited, RateLimiter, TooManyUploads, UploadSlots
from services.intake.registry import to_fhir
from services.intake.search import search_filter
from services.intake.validation import check_metadata, inline_content
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError, Issue, informational, operation_outcome
from shared.fhir.jsonbody import parse_body
from shared.http import caller, fhir_response, idle_limited, read_body, read_json, request_id
from shared.objects import one_chunk

INTAKE = web.AppKey("intake", Intake)
LIMITER = web.AppKey("intake_limiter", RateLimiter)
UPLOADS = web.AppKey("intake_uploads", UploadSlots)
UPLOAD_RETRY_SECONDS = 5
CHUNK = 256 * 1024
METADATA_LIMIT = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answers_domain_errors(handler: Handler) -> Handler:
    """Intake's domain exceptions as HTTP: the domain says how long to wait, this says Retry-After."""

    @functools.wraps(handler)
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RateLimited as exc:
            raise FhirError.of(Code.RATE_LIMITED, f"Submission rate limit reached for {exc.org}.",
                               headers={"Retry-After": str(exc.wait)}) from None
        except TooManyUploads as exc:
            raise FhirError.of(Code.RATE_LIMITED, f"Too many uploads in progress for {exc.org}; wait for one to "
                               "finish.", headers={"Retry-After": str(UPLOAD_RETRY_SECONDS)}) from None
        except StagingUnavailable:
            raise FhirError.of(Code.UNAVAILABLE, "Document storage is unavailable.",
                               headers={"Retry-After": "5"}) from None

    return handle


def _created(request: web.Request, accepted: list[Accepted], *, status: int | None = None) -> web.Response:
    doc = accepted[0].document
    code = status or (202 if accepted[0].created else 200)
    return fhir_response(to_fhir(doc), status=code, headers={"Location": f"/fhir/DocumentReference/{doc['_id']}"})


@_answers_domain_errors
async def create_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "c")
    intake = request.app[INTAKE]
    request.app[LIMITER].take(who.org)
    key = request.headers.get("Idempotency-Key")
    with request.app[UPLOADS].slot(who.org):
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
        first = await idle_limited(request, reader.next())
        if not isinstance(first, BodyPartReader):
            raise FhirError.of(Code.MALFORMED_REQUEST, "The first part must be the DocumentReference (JSON).")
        raw = await idle_limited(request, first.read(decode=False))
        if len(raw) > METADATA_LIMIT:
            raise FhirError.of(Code.TOO_LARGE, "The DocumentReference part is too large.")
        data = parse_body(raw, what="The first part")
        if not isinstance(data, dict):
            raise FhirError.of(Code.MALFORMED_REQUEST, "The first part must be a DocumentReference.")
        meta = check_metadata(data, who, intake.catalogue, inline=False)
        await intake.check_references([("DocumentReference", meta)], who)
        second = await idle_limited(request, reader.next())
        if not isinstance(second, BodyPartReader):
            raise FhirError.of(Code.MALFORMED_REQUEST, "The second part must be the document.")

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await idle_limited(request, second.read_chunk(CHUNK)):
                yield chunk

        return await intake.stage(meta, chunks())
    except ValueError:
        raise FhirError.of(Code.MALFORMED_REQUEST, "The multipart body could not be read.") from None


@_answers_domain_errors
async def transaction(request: web.Request) -> web.Response:
    """ITI-65: parse, hand the bundle to the use case (services/intake/provide.py), answer."""
    who = caller(request)
    who.require("DocumentReference", "c")
    intake = request.app[INTAKE]
    with request.app[UPLOADS].slot(who.org):
        bundle = bundles.parse(await read_json(request, xml_model=Bundle))
        request.app[LIMITER].take(who.org, cost=len(bundle.documents))
        provided = await provide.provide(intake, bundle, who, request_id=request_id(request),
                                         address=request.remote)
    status_url = f"/fhir/_bundle/{provided.bundle_id}"
    if "respond-async" in request.headers.get("Prefer", ""):
        return _still_storing("Accepted; poll the status URL.", {"Content-Location": status_url})
    docs = await provide.wait_until_decided(intake, provided.document_ids)
    answer = provide.answer(docs, bundle) if docs is not None else None
    if answer is None:
        return _still_storing("Accepted; still being stored. Poll the status URL.", {"Content-Location": status_url})
    return fhir_response(answer)


def _still_storing(diagnostics: str, headers: dict[str, str]) -> web.Response:
    return fhir_response(operation_outcome([Issue(Code.PROCESSING, diagnostics, severity="information")]),
                         status=202, headers=headers)


async def bundle_status(request: web.Request) -> web.Response:
    """The FHIR asynchronous pattern's status URL for a bundle sent with ``Prefer: respond-async``."""
    who = caller(request)
    docs = await request.app[INTAKE].bundle_state(request.match_info["id"], who)
    answer = provide.answer(docs)
    if answer is None:
        return _still_storing("Still being stored.", {"Retry-After": "1"})
    return fhir_response(answer)


async def read_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "r")
    found = await request.app[INTAKE].read(request.match_info["id"], who, request_id=request_id(request),
                                           address=request.remote)
    if isinstance(found, Pending):
        return fhir_response(informational(found.message), status=202,
                             headers={"Retry-After": str(found.retry_after)})
    return fhir_response(found)


async def patch_document(request: web.Request) -> web.Response:
    """JSON Patch limited to what a custodian may change: status -> entered-in-error."""
    who = caller(request)
    who.require("DocumentReference", "u")
    if request.content_type not in ("application/json-patch+json", "application/json"):
        raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "Send a JSON Patch (application/json-patch+json).")
    patch = parse_body(await read_body(request))
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
