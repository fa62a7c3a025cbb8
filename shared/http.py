"""What a service's routes need from HTTP: the caller, FHIR responses, and request bodies read within limits.

The edge itself (app assembly, middleware, refusals, health and metadata) is ``shared/edge.py``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from shared.app_keys import CALLER, REQUEST_ID, RUNTIME
from shared.auth import Caller, Unauthorized
from shared.fhir.errors import Code, FhirError
from shared.fhir.jsonbody import parse_body
from shared.fhir.typed import validated
from shared.media import MediaMismatch, safe_xml

log = logging.getLogger(__name__)
T = TypeVar("T")

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_TYPES = {FHIR_JSON, "application/json"}
# The edge's own open paths; each service adds its own (``ServiceSpec.public_paths``, with its reasons).


def fhir_response(
    resource: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(resource, separators=(",", ":")).encode(),
        status=status,
        content_type=FHIR_JSON,
        headers=headers,
    )


def caller(request: web.Request) -> Caller:
    """The verified caller; raises ``Unauthorized`` (401) when the token is missing or invalid."""
    verifier = request.app[RUNTIME].verifier
    if verifier is None:
        raise Unauthorized("token verification is not configured", reason_code="no-verifier")
    found = request.get(CALLER)
    if found is None:
        found = request[CALLER] = verifier.verify(request.headers.get("Authorization"))
    return found


async def read_json(
    request: web.Request,
    *,
    resource_type: str | None = None,
    xml_model: Any = None,
    model: Any = None,
    hint: str = "",
) -> dict[str, Any]:
    """The request body as a FHIR resource in JSON form: 415 for a wrong media type, 400 for bad JSON or
    XML, 413 when too large. ``xml_model`` (a fhir.resources class) also accepts ``application/fhir+xml``;
    ``model`` (a fhir.resources class) checks every field's type (422 naming the field)."""
    media = request.content_type
    accepted = JSON_TYPES | ({FHIR_XML} if xml_model is not None else set())
    if media not in accepted:
        wanted = f"{FHIR_JSON} or {FHIR_XML}" if xml_model is not None else FHIR_JSON
        raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, f"Send {wanted}{hint}; got {media or 'none'}.")
    body = await read_body(request)
    data = _from_xml(body, xml_model) if media == FHIR_XML else parse_body(body)
    if not isinstance(data, dict):
        raise FhirError.of(Code.MALFORMED_REQUEST, "The body must be a JSON object (a FHIR resource).")
    if resource_type and data.get("resourceType") != resource_type:
        raise FhirError.of(Code.INVALID_RESOURCE, f"Expected a {resource_type} resource.", "resourceType")
    if model is not None:
        validated(model, data)
    return data


async def idle_limited(request: web.Request, pending: Awaitable[T]) -> T:
    """One read of a request body, bounded: a client that stops sending is answered 408 and disconnected."""
    idle = request.app[RUNTIME].settings.http_body_idle_seconds
    try:
        async with asyncio.timeout(idle):
            return await pending
    except TimeoutError:
        raise FhirError.of(
            Code.REQUEST_TIMEOUT,
            f"No part of the request body arrived for {idle:g} seconds.",
            headers={"Connection": "close"},
        ) from None


async def read_body(request: web.Request) -> bytes:
    """The whole body, no larger than the app's limit (413), with no pause longer than the idle limit (408)."""
    limit = request.app[RUNTIME].settings.max_inline_bytes * 2
    if (request.content_length or 0) > limit:
        raise FhirError.of(Code.TOO_LARGE, "The request body exceeds the size limit.")
    body = bytearray()
    while chunk := await idle_limited(request, request.content.readany()):
        body.extend(chunk)
        if len(body) > limit:
            raise FhirError.of(Code.TOO_LARGE, "The request body exceeds the size limit.")
    return bytes(body)


def _from_xml(body: bytes, model: Any) -> dict[str, Any]:
    try:
        safe_xml(body)  # no DTD: no entity expansion, no external entities, before any parser sees it
        data: dict[str, Any] = model.model_validate_xml(body).model_dump(mode="json", by_alias=True, exclude_none=True)
        return data
    except MediaMismatch as exc:
        raise FhirError.of(Code.MALFORMED_REQUEST, f"The XML body is not accepted: {exc}.") from None
    except Exception:  # the FHIR XML parser can fail in many ways on hostile input; none is a 500
        raise FhirError.of(
            Code.MALFORMED_REQUEST, "The XML body is not a valid FHIR resource of the expected type."
        ) from None


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]
