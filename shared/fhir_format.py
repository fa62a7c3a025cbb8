"""FHIR's two formats on the way out: JSON, or XML when the client asks for it (``Accept`` or ``_format``).

Handlers always build JSON; the edge turns a FHIR JSON answer into XML at the end, so every read, search,
transaction-response and OperationOutcome is served in both. An ``Accept`` that names neither format
(nor a wildcard) is 406. ``/fhir/Binary`` is left alone: it serves the document's own media type.
"""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

from aiohttp import web

from shared.fhir.errors import Code, FhirError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_NAMES = {FHIR_JSON, "application/json", "json", "application/json+fhir", "*/*", "application/*"}
XML_NAMES = {FHIR_XML, "application/xml", "text/xml", "xml", "application/xml+fhir"}
JSON, XML = "json", "xml"


UNSERVED = "unserved"  # the client accepts neither FHIR format: 406 unless the handler serves what it asked


def negotiate(request: web.Request) -> str | None:
    """``json``, ``xml`` or ``unserved`` for a FHIR URL; None where this does not apply.

    A few operations serve other formats themselves (``$access-report?_format=html``,
    ``$tracking-list?_format=csv``), so an unknown format is not refused up front: ``finish`` refuses it
    when the handler answered FHIR JSON anyway.
    """
    if not request.path.startswith("/fhir") or request.path.startswith("/fhir/Binary"):
        return None
    explicit = request.query.get("_format")
    if explicit is not None:
        name = explicit.split(";")[0].strip().lower()
        return XML if name in XML_NAMES else JSON if name in JSON_NAMES else UNSERVED
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return JSON
    ranked = []
    for position, item in enumerate(accept.split(",")):
        name, *params = [p.strip() for p in item.split(";")]
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, name.lower()))
    for _, _, name in sorted(ranked):
        if name in XML_NAMES:
            return XML
        if name in JSON_NAMES:
            return JSON
    return UNSERVED


def finish(wanted: str | None, response: web.StreamResponse) -> web.StreamResponse | FhirError:
    """The answer in the format asked for, or a 406 for a successful FHIR answer in a format nobody asked."""
    if wanted == XML:
        return to_xml(response)
    if wanted == UNSERVED and response.status < 400 and response.content_type == FHIR_JSON:
        return FhirError.of(Code.NOT_ACCEPTABLE, f"This answer is available as {FHIR_JSON} or {FHIR_XML}.")
    return response


def to_xml(response: web.StreamResponse) -> web.StreamResponse:
    """The same answer in FHIR XML (headers and status kept); unchanged if it is not a FHIR JSON body."""
    if not isinstance(response, web.Response) or response.content_type != FHIR_JSON:
        return response
    if not isinstance(response.body, bytes | bytearray):  # no body, or a streamed payload: not ours to convert
        return response
    try:
        data = json.loads(bytes(response.body))
        body = _model(data["resourceType"]).model_validate(data).model_dump_xml()
    except Exception:  # a resource the XML models refuse: answer it in JSON rather than fail (and say so)
        log.warning("http.xml_unavailable", extra={"code": "HTTP406X"})
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-type", "content-length")}
    return web.Response(body=body, status=response.status, headers=headers, content_type=FHIR_XML, charset="utf-8")


def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    return getattr(module, resource_type)
