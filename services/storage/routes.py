"""Storage's HTTP surface: ITI-68 retrieval of a document's bytes."""

from __future__ import annotations

import base64

from aiohttp import web

from services.storage.domain import Storage
from shared.http import caller, fhir_response, request_id

STORAGE = web.AppKey("storage", Storage)


async def read_binary(request: web.Request) -> web.StreamResponse:
    who = caller(request)
    who.require("Binary", "r")
    storage = request.app[STORAGE]
    document_id = request.match_info["id"]
    retrieval = await storage.authorise(document_id, who, request_id=request_id(request), address=request.remote)
    facts = retrieval.facts
    if "application/fhir+json" in request.headers.get("Accept", ""):
        # A FHIR client asked for the Binary resource rather than the raw bytes.
        data = await storage.objects.read_all(retrieval.key)
        return fhir_response({
            "resourceType": "Binary",
            "id": document_id,
            "contentType": facts.content_type,
            "data": base64.b64encode(data).decode(),
        })
    response = web.StreamResponse(headers={
        "Content-Type": facts.content_type,
        "Content-Length": str(facts.size),
        "ETag": f'"{facts.sha256}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    })
    await response.prepare(request)
    async for chunk in storage.objects.get(retrieval.key):
        await response.write(chunk)
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/Binary/{id}", read_binary)
