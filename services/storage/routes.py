"""Storage's HTTP surface: ITI-68 retrieval of a document's bytes (whole, a byte range, or a redirect)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.storage import binary_json
from services.storage.domain import Storage
from services.storage.negotiation import acceptable
from services.storage.ranges import RangeMalformed, RangeNotSatisfiable, check_range, parse_range
from shared.fhir.errors import Code, FhirError
from shared.http import FHIR_JSON, caller, request_id
from shared.objects import ObjectNotFound, ObjectStoreUnavailable

log = logging.getLogger(__name__)

STORAGE = web.AppKey("storage", Storage)


def _unavailable() -> FhirError:
    return FhirError.of(Code.UNAVAILABLE, "Document storage is unavailable.", headers={"Retry-After": "5"})


async def _open(
    storage: Storage, key: str, start: int = 0, end: int | None = None
) -> tuple[bytes, AsyncIterator[bytes]]:
    """The first chunk and the rest: a store failure before any byte is sent is still a clean 503."""
    stream = storage.objects.get(key, start=start, end=end)
    try:
        first = await anext(stream, b"")
    except ObjectStoreUnavailable:
        raise _unavailable() from None
    except ObjectNotFound:
        # The index says it was filed: a missing object is an integrity failure (`lhcie storage verify`).
        log.error("storage.object_missing key=%s", key, extra={"code": "STO006"})
        raise FhirError.of(Code.INTERNAL, "The document's content is missing from storage.") from None
    return first, stream


async def read_binary(request: web.Request) -> web.StreamResponse:
    who = caller(request)
    who.require("Binary", "r")
    storage = request.app[STORAGE]
    document_id = request.match_info["id"]
    try:
        check_range(request.headers.get("Range"))
    except RangeMalformed:
        raise FhirError.of(
            Code.MALFORMED_REQUEST, "The Range header asks for a position beyond any document (more than 19 digits)."
        ) from None
    retrieval = await storage.authorise(
        document_id,
        who,
        request_id=request_id(request),
        address=request.remote,
        takes=lambda media: acceptable(request.headers.get("Accept"), media),
    )
    facts = retrieval.facts
    etag = f'"{facts.sha256}"'
    if "application/fhir+json" in request.headers.get("Accept", ""):
        # A FHIR client asked for the Binary resource rather than the raw bytes: streamed, never held whole.
        first, rest = await _open(storage, retrieval.key)
        head, tail = binary_json.envelope(document_id, facts.content_type)
        response = web.StreamResponse(
            headers={
                "Content-Type": FHIR_JSON,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Length": str(len(head) + binary_json.encoded_length(facts.size) + len(tail)),
            }
        )
        return await _send(
            request, response, head, binary_json.base64_pieces(_chained(first, rest)), rest, document_id, tail=tail
        )
    url = await storage.presigned_url(retrieval)
    if url is not None:
        # The bytes come straight from the bucket; the access decision and the audit event are done.
        return web.Response(status=307, headers={"Location": url, "Cache-Control": "no-store"})
    if_range = request.headers.get("If-Range")
    try:
        wanted = parse_range(request.headers.get("Range"), facts.size) if if_range in (None, etag) else None
    except RangeNotSatisfiable:
        raise FhirError.of(Code.RANGE_NOT_SATISFIABLE, headers={"Content-Range": f"bytes */{facts.size}"}) from None
    headers = {
        "Content-Type": facts.content_type,
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if wanted is None:
        first, rest = await _open(storage, retrieval.key)
        response = web.StreamResponse(headers={**headers, "Content-Length": str(facts.size)})
    else:
        first, rest = await _open(storage, retrieval.key, wanted.start, wanted.end)
        response = web.StreamResponse(
            status=206,
            headers={
                **headers,
                "Content-Length": str(wanted.end - wanted.start),
                "Content-Range": wanted.content_range(facts.size),
            },
        )
    return await _send(request, response, first, rest, rest, document_id)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def _send(
    request: web.Request,
    response: web.StreamResponse,
    first: bytes,
    pieces: AsyncIterator[bytes],
    source: AsyncIterator[bytes],
    document_id: str,
    *,
    tail: bytes = b"",
) -> web.StreamResponse:
    try:
        await response.prepare(request)
        await response.write(first)
        async for piece in pieces:
            await response.write(piece)
        if tail:
            await response.write(tail)
    except ObjectStoreUnavailable:
        # Headers are gone: cut the connection so the client sees a short body, never a wrong one.
        log.warning("storage.stream_interrupted document=%s", document_id, extra={"code": "STO007"})
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        await source.aclose()  # type: ignore[attr-defined]  # every source here is an async generator
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/Binary/{id}", read_binary)
