"""Audit's HTTP surface: search AuditEvents, verify the hash chain, export a date range, and the
patient's access report. There is deliberately no route that changes or removes a record."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.audit.domain import Audit
from services.audit.params import export_range, patient_of, search_filter
from services.audit.report import bundle, html_page
from services.audit.verifying import Verification
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.http import caller, fhir_response, request_id

AUDIT = web.AppKey("audit", Audit)
NDJSON = "application/x-ndjson"


async def search_audit(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("AuditEvent", "s")
    where = search_filter(request.query, request.query.getall("date", []), request.query.getall("sequence", []))
    count, offset = page_params(request.query)
    records, more = await request.app[AUDIT].search(
        who,
        where,
        count=count,
        offset=offset,
        query=request.query_string,
        address=request.remote,
        request_id=request_id(request),
    )
    # Repeats kept (date=ge..&date=le..): the next page's link must search the same range.
    kept = [(k, v) for k, v in request.query.items() if not k.startswith("_")]
    return fhir_response(searchset(request.path, kept, records, count=count, offset=offset, has_more=more))


def verification_parameters(result: Verification) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "intact", "valueBoolean": result.intact},
        {"name": "count", "valueInteger": result.count},
    ]
    if result.first_broken is not None:
        parameters.append({"name": "firstBroken", "valueInteger": result.first_broken})
        parameters.append({"name": "problem", "valueString": result.problem})
    if result.since is not None:
        parameters.append({"name": "sinceCheckpoint", "valueInteger": result.since})
    parameters.append({"name": "checkpoints", "valueInteger": result.checkpoints})
    if result.intact:
        parameters.append({"name": "unsigned", "valueInteger": result.unsigned})
    return {"resourceType": "Parameters", "parameter": parameters}


async def verify_chain(request: web.Request) -> web.Response:
    who = caller(request)
    since: int | str | None = None
    if (value := request.query.get("since")) is not None:
        if value != "latest" and (not value.isdigit() or int(value) < 1):
            raise FhirError.of(
                Code.INVALID_PARAMETER, "since must be a checkpoint's record number or 'latest'.", "since"
            )
        since = value if value == "latest" else int(value)
    result = await request.app[AUDIT].verify(who, since=since)
    return fhir_response(verification_parameters(result))


async def export_audit(request: web.Request) -> web.StreamResponse:
    who = caller(request)
    start, end = export_range(request.query.get("start"), request.query.get("end"))
    lines = await request.app[AUDIT].export(who, start, end, address=request.remote, request_id=request_id(request))
    response = web.StreamResponse(
        headers={
            "Content-Type": NDJSON,
            "Content-Disposition": f'attachment; filename="audit-{start[:10]}-{end[:10]}.ndjson"',
        }
    )
    await response.prepare(request)
    async for record in lines:
        await response.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
    await response.write_eof()
    return response


def _wants_html(request: web.Request) -> bool:
    fmt = request.query.get("_format")
    if fmt is not None:
        return fmt in ("html", "text/html")
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "fhir+json" not in accept


async def access_report(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("AuditEvent", "r")
    patient = request.query.get("patient")
    report = await request.app[AUDIT].access_report(
        who,
        patient_of(patient) if patient else None,
        address=request.remote,
        request_id=request_id(request),
    )
    if _wants_html(request):
        return web.Response(
            text=html_page(report, carer=who.role == "carer"), content_type="text/html", charset="utf-8"
        )
    return fhir_response(bundle(report))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/AuditEvent", search_audit)
    app.router.add_get("/fhir/AuditEvent/$verify", verify_chain)
    app.router.add_get("/fhir/AuditEvent/$export", export_audit)
    app.router.add_get("/fhir/AuditEvent/$access-report", access_report)
