"""Notification's HTTP surface: an MDT's alerts (FHIR Communication) and their acknowledgement."""

from __future__ import annotations

from aiohttp import web

from services.notification.alerts import ACKNOWLEDGED, OPEN
from services.notification.domain import Notification
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.http import caller, fhir_response, request_id

NOTIFICATION = web.AppKey("notification", Notification)


async def search_alerts(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "s")
    recipient = request.query.get("recipient")
    if not recipient:
        raise FhirError.of(Code.INVALID_PARAMETER, "Search needs recipient=CareTeam/<mdt-id>.", "recipient")
    status = request.query.get("status")
    if status not in (None, OPEN, ACKNOWLEDGED):
        raise FhirError.of(Code.INVALID_PARAMETER, f"status must be {OPEN} or {ACKNOWLEDGED}.", "status")
    count, offset = page_params(request.query)
    alerts, more = await request.app[NOTIFICATION].list_for(who, recipient, status=status, count=count, offset=offset)
    kept = {k: v for k, v in request.query.items() if not k.startswith("_")}
    return fhir_response(searchset(request.path, kept, alerts, count=count, offset=offset, has_more=more))


async def acknowledge(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "u")
    resource = await request.app[NOTIFICATION].acknowledge(request.match_info["id"], who, request_id=request_id(request))
    return fhir_response(resource)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/Communication", search_alerts)
    app.router.add_post("/fhir/Communication/{id}/$acknowledge", acknowledge)
