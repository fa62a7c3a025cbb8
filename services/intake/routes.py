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

from services.intake import bundles, catalogue, folders, provide
from services.intake.domain import Accepted, Intake, Pending, StagingUnavailable
from services.intake.limits import RateLimited, RateLimiter, TooManyUploads, UploadSlots
from services.intake.registry import to_fhir
from services.intake.search import parse as parse_search
from services.intake.validation import check_metadata
from shared.fhir.bundles import searchset
from shared.fhir.errors import Code, FhirError, Issue, informational, operation_outcome
from shared.fhir.jsonbody import parse_body
from shared.http import caller, fhir_response, idle_limited, read_body, read_json, request_id
from shared.public_url import base_url

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
            raise FhirError.of(
                Code.RATE_LIMITED,
                f"Submission rate limit reached for {exc.org}.",
                headers={"Retry-After": str(exc.wait)},
            ) from None
        except TooManyUploads as exc:
            raise FhirError.of(
                Code.RATE_LIMITED,
                f"Too many uploads in progress for {exc.org}; wait for one to finish.",
                headers={"Retry-After": str(UPLOAD_RETRY_SECONDS)},
            ) from None
        except StagingUnavailable:
            raise FhirError.of(
                Code.UNAVAILABLE, "Document storage is unavailable.", headers={"Retry-After": "5"}
            ) from None

    return handle


def _created(request: web.Request, accepted: list[Accepted], *, status: int | None = None) -> web.Response:
    doc = accepted[0].document
    code = status or (202 if accepted[0].created else 200)
    base = base_url(request)
    resource = public(to_fhir(doc), base)
    return fhir_response(
        resource, status=code, headers={"Location": f"{base}/fhir/DocumentReference/{doc['_id']}", **_etag(resource)}
    )


@_answers_domain_errors
async def create_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "c")
    intake = request.app[INTAKE]
    request.app[LIMITER].take(who.org)
    key = request.headers.get("Idempotency-Key")
    with request.app[UPLOADS].slot(who.org, request.content_length):
        if request.content_type.startswith("multipart/"):
            staged = await _stage_multipart(request, intake, who)
        else:
            data = await read_json(request, xml_model=DocumentReference, hint=" (or a multipart document)")
            meta = check_metadata(data, who, intake.catalogue, inline=True)
            assert meta.inline_document, "check_metadata(inline=True) accepts only a non-empty inline document"
            await intake.check_references([("DocumentReference", meta)], who)
            staged = await intake.stage(meta, meta.inline_document)
    accepted = await intake.accept(
        [staged], who, request_id=request_id(request), address=request.remote, idempotency_key=key
    )
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
    with request.app[UPLOADS].slot(who.org, request.content_length):
        bundle = bundles.parse(await read_json(request, xml_model=Bundle))
        request.app[LIMITER].take(who.org, cost=len(bundle.documents))
        provided = await provide.provide(intake, bundle, who, request_id=request_id(request), address=request.remote)
    status_url = f"{base_url(request)}/fhir/_bundle/{provided.bundle_id}"
    if "respond-async" in request.headers.get("Prefer", ""):
        return _still_storing("Accepted; poll the status URL.", {"Content-Location": status_url})
    docs = await provide.wait_until_decided(intake, provided.document_ids)
    answer = provide.answer(docs) if docs is not None else None
    if answer is None:
        return _still_storing("Accepted; still being stored. Poll the status URL.", {"Content-Location": status_url})
    return fhir_response(answer)


def _still_storing(diagnostics: str, headers: dict[str, str]) -> web.Response:
    return fhir_response(
        operation_outcome([Issue(Code.PROCESSING, diagnostics, severity="information")]), status=202, headers=headers
    )


async def bundle_status(request: web.Request) -> web.Response:
    """The FHIR asynchronous pattern's status URL for a bundle sent with ``Prefer: respond-async``."""
    who = caller(request)
    docs = await request.app[INTAKE].bundle_state(request.match_info["id"], who)
    answer = provide.answer(docs)
    if answer is None:
        return _still_storing("Still being stored.", {"Retry-After": "1"})
    return fhir_response(answer)


def _etag(resource: dict[str, Any]) -> dict[str, str]:
    return {"ETag": f'W/"{resource["meta"]["versionId"]}"'}


def _version(raw: str, what: str) -> int:
    """A version id from a URL or from ``If-Match: W/"3"`` (weak or strong, quoted or not)."""
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or int(text) < 1:
        raise FhirError.of(
            Code.NOT_FOUND if what == "vid" else Code.MALFORMED_REQUEST,
            f"{what} must name a version (a whole number from 1).",
        )
    return int(text)


async def document_types(request: web.Request) -> web.Response:
    """The accepted document types as a ValueSet (public, like /fhir/metadata: it holds no patient data)."""
    if request.match_info["id"] != catalogue.VALUE_SET_ID:
        raise FhirError.of(Code.NOT_FOUND)
    return fhir_response(catalogue.value_set(request.app[INTAKE].catalogue))


async def submission_set(request: web.Request) -> web.Response:
    """``List/{id}``, where a transaction-response's SubmissionSet and Folder entries point: the submitting
    organisation reads which documents the submission made, or the folder (others see 404, as for the
    bundle's status URL)."""
    who = caller(request)
    who.require("DocumentReference", "r")
    intake = request.app[INTAKE]
    folder = await intake.folders.get(request.match_info["id"])
    if folder is not None and folder["org"] == who.org:
        resource = folders.to_fhir(folder)
        return fhir_response(resource, headers=_etag(resource))
    docs = await intake.bundle_state(request.match_info["id"], who)
    return fhir_response(provide.submission_set(request.match_info["id"], docs))


async def bundle_patient(request: web.Request) -> web.Response:
    """``Patient/{id}``, where the Patient entry of an ITI-65 bundle points: the patient it was matched to."""
    who = caller(request)
    who.require("DocumentReference", "r")
    docs = await request.app[INTAKE].bundle_state(request.match_info["id"], who)
    return fhir_response(provide.matched_patient(request.match_info["id"], docs))


async def read_document(request: web.Request) -> web.Response:
    """read, vread (``/_history/{vid}``) and the instance history (``/_history``) of a DocumentReference."""
    who = caller(request)
    who.require("DocumentReference", "r")
    vid = request.match_info.get("vid")
    history = request.path.rstrip("/").endswith("/_history")
    found = await request.app[INTAKE].read(
        request.match_info["id"],
        who,
        request_id=request_id(request),
        address=request.remote,
        history=history,
        version=_version(vid, "vid") if vid is not None else None,
    )
    if isinstance(found, Pending):
        return fhir_response(informational(found.message), status=202, headers={"Retry-After": str(found.retry_after)})
    base = base_url(request)
    if isinstance(found, list):
        return fhir_response(history_bundle([public(r, base) for r in found], base))
    resource = public(found, base)
    headers = _etag(resource)
    if vid is None:
        headers["Content-Location"] = (
            f"{base}/fhir/DocumentReference/{resource['id']}/_history/{resource['meta']['versionId']}"
        )
    return fhir_response(resource, headers=headers)


def history_bundle(versions: list[dict[str, Any]], base: str) -> dict[str, Any]:
    """Every version of one DocumentReference, newest first (FHIR's instance history)."""
    entries = []
    for resource in versions:
        url = f"DocumentReference/{resource['id']}"
        first = resource["meta"]["versionId"] == "1"
        entries.append(
            {
                "fullUrl": f"{base}/fhir/{url}",
                "resource": resource,
                "request": {"method": "POST" if first else "PATCH", "url": "DocumentReference" if first else url},
                "response": {
                    "status": "201 Created" if first else "200 OK",
                    "etag": f'W/"{resource["meta"]["versionId"]}"',
                    "lastModified": resource["meta"]["lastUpdated"],
                },
            }
        )
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(entries),
        "link": [{"relation": "self", "url": f"{base}/fhir/DocumentReference/{versions[0]['id']}/_history"}],
        "entry": entries,
    }


async def patch_document(request: web.Request) -> web.Response:
    """JSON Patch limited to what a custodian may change: status -> entered-in-error."""
    who = caller(request)
    who.require("DocumentReference", "u")
    if request.content_type not in ("application/json-patch+json", "application/json"):
        raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "Send a JSON Patch (application/json-patch+json).")
    patch = parse_body(await read_body(request))
    if patch != [{"op": "replace", "path": "/status", "value": "entered-in-error"}]:
        raise FhirError.of(
            Code.BUSINESS_RULE,
            'The only change allowed is [{"op": "replace", "path": "/status", "value": "entered-in-error"}].',
        )
    if_match = request.headers.get("If-Match")
    resource = await request.app[INTAKE].withdraw(
        request.match_info["id"],
        who,
        request_id=request_id(request),
        if_match=_version(if_match, "If-Match") if if_match else None,
    )
    resource = public(resource, base_url(request))
    return fhir_response(resource, headers=_etag(resource))


async def search_documents(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "s")
    # A multidict read as pairs: date=ge…&date=le… keeps both halves.
    pairs = [(k, v) for k, v in request.query.items()]
    if request.method == "POST":
        if request.content_type != "application/x-www-form-urlencoded":
            raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "POST _search takes application/x-www-form-urlencoded.")
        pairs += [(k, str(v)) for k, v in (await request.post()).items()]
    strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
    search = parse_search(pairs, strict=strict)
    found = await request.app[INTAKE].search(
        search.where,
        who,
        count=search.count,
        offset=search.offset,
        query=urlencode(sorted(pairs)),
        request_id=request_id(request),
        address=request.remote,
    )
    base = base_url(request)
    outcome = None
    if search.ignored:
        outcome = operation_outcome(
            [Issue(Code.PROCESSING, f"Search parameter(s) ignored: {', '.join(search.ignored)}.", severity="warning")]
        )
    if search.summary_count:
        bundle = searchset(
            "/fhir/DocumentReference",
            [*search.used, ("_summary", "count")],
            [],
            count=0,
            offset=0,
            has_more=False,
            total=found.total,
            outcome=outcome,
            base=base,
        )
        return fhir_response(bundle)
    resources = [public(r, base) for r in found.resources]
    return fhir_response(
        searchset(
            "/fhir/DocumentReference",
            [(k, v) for k, v in search.used if k != "_summary"],
            resources,
            count=search.count,
            offset=search.offset,
            has_more=found.more,
            total=found.total,
            outcome=outcome,
            base=base,
        )
    )


def public(resource: dict[str, Any], base: str) -> dict[str, Any]:
    """The DocumentReference as a client sees it: ``attachment.url`` a full URL (ITI-67 says SHALL)."""
    content = []
    for item in resource.get("content") or []:
        attachment = item.get("attachment") or {}
        url = attachment.get("url")
        if isinstance(url, str) and url.startswith("/fhir/"):
            item = {**item, "attachment": {**attachment, "url": base + url}}
        content.append(item)
    return {**resource, "content": content} if content else resource


def add_routes(app: web.Application) -> None:
    app.router.add_post("/fhir", transaction)
    app.router.add_post("/fhir/DocumentReference", create_document)
    app.router.add_get("/fhir/DocumentReference", search_documents)
    app.router.add_post("/fhir/DocumentReference/_search", search_documents)
    app.router.add_get("/fhir/DocumentReference/{id}", read_document)
    app.router.add_get("/fhir/DocumentReference/{id}/_history", read_document)
    app.router.add_get("/fhir/DocumentReference/{id}/_history/{vid}", read_document)
    app.router.add_patch("/fhir/DocumentReference/{id}", patch_document)
    app.router.add_get("/fhir/_bundle/{id}", bundle_status)
    app.router.add_get("/fhir/List/{id}", submission_set)
    app.router.add_get("/fhir/Patient/{id}", bundle_patient)
    app.router.add_get("/fhir/ValueSet/{id}", document_types)
