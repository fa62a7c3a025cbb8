"""Audit's HTTP surface: search AuditEvents, verify the hash chain."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.audit.domain import Audit
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.http import caller, fhir_response

AUDIT = web.AppKey("audit", Audit)


async def search_audit(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("AuditEvent", "s")
    where: dict[str, Any] = {}
    if entity := request.query.get("entity"):
        if entity.count("/") != 1:
            raise FhirError.of(Code.INVALID_PARAMETER, "entity must be Type/id.", "entity")
        where["entities"] = entity
    if agent := request.query.get("agent"):
        where["orgs"] = agent.rpartition("|")[2]
    count, offset = page_params(request.query)
    if "orgs" in where and who.role != "dcc-admin" and where["orgs"] != who.org:
        raise FhirError.of(Code.FORBIDDEN, "An organisation may only search records that involve it.")
    records, more = await request.app[AUDIT].search(who, where, count=count, offset=offset)
    kept = {k: v for k, v in request.query.items() if not k.startswith("_")}
    return fhir_response(searchset(request.path, kept, records, count=count, offset=offset, has_more=more))


async def verify_chain(request: web.Request) -> web.Response:
    who = caller(request)
    result = await request.app[AUDIT].verify(who)
    parameters: list[dict[str, Any]] = [
        {"name": "intact", "valueBoolean": result.intact},
        {"name": "count", "valueInteger": result.count},
    ]
    if result.first_broken is not None:
        parameters.append({"name": "firstBroken", "valueInteger": result.first_broken})
        parameters.append({"name": "problem", "valueString": result.problem})
    return fhir_response({"resourceType": "Parameters", "parameter": parameters})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/AuditEvent", search_audit)
    app.router.add_get("/fhir/AuditEvent/$verify", verify_chain)
