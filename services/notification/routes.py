"""Notification's HTTP surface: alerts (FHIR Communication, an MDT's or a trust's bed managers'), their live
stream, the coordinator console, cancer pathways (FHIR EpisodeOfCare) with the patient tracking list, and
FHIR Subscriptions (rest-hook, and SSE for care plan changes)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
from datetime import date
from pathlib import Path
from typing import Any

from aiohttp import web
from fhir.resources.R4B.episodeofcare import EpisodeOfCare
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.subscription import Subscription

from services.notification.alerts import ACKNOWLEDGED, CARETEAM_PREFIX, OPEN, AlertQuery
from services.notification.delivery import Deliverer
from services.notification.domain import Notification
from services.notification.live import Change, Expired, Frame, Heartbeat
from services.notification.pathways import ROUTE_URL, tracking_list_parameters
from services.notification.replicas import OtherReplicas
from services.notification.rules import PRIORITIES
from services.notification.stream_tokens import BadStreamToken, StreamTokens
from services.notification.transfer_alerts import beds_key
from shared.auth import Caller
from shared.fhir import dates
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import NHS_NUMBER, identifier_value, valid_nhs_number
from shared.http import caller, fhir_response, read_json, request_id
from shared.web import add_session_script

NOTIFICATION = web.AppKey("notification", Notification)
STREAM_TOKENS = web.AppKey("notification.stream_tokens", StreamTokens)
DELIVERER = web.AppKey("notification.deliverer", Deliverer)
OTHER_REPLICAS = web.AppKey("notification.other_replicas", OtherReplicas)
CONSOLE_DIR = Path(__file__).with_name("console")
ORGANIZATION_PREFIX = "Organization/"


def _team(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value.startswith(CARETEAM_PREFIX) or len(value) == len(CARETEAM_PREFIX):
        raise FhirError.of(Code.INVALID_PARAMETER, f"Search needs {name}=CareTeam/<mdt-id>.", name)
    return value.removeprefix(CARETEAM_PREFIX)


def _alert_audience(request: web.Request, name: str) -> str:
    """An MDT's alerts (``CareTeam/<mdt-id>``), or a trust's bed managers' (``Organization/<ODS>``)."""
    value = request.query.get(name, "")
    if value.startswith(ORGANIZATION_PREFIX) and len(value) > len(ORGANIZATION_PREFIX):
        return beds_key(value.removeprefix(ORGANIZATION_PREFIX))
    return _team(request, name)


async def search_alerts(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "s")
    query = request.query
    status = query.get("status")
    if status not in (None, OPEN, ACKNOWLEDGED):
        raise FhirError.of(Code.INVALID_PARAMETER, f"status must be {OPEN} or {ACKNOWLEDGED}.", "status")
    priority = query.get("priority")
    if priority not in (None, *PRIORITIES):
        raise FhirError.of(Code.INVALID_PARAMETER, f"priority must be one of {', '.join(PRIORITIES)}.", "priority")
    patient = query.get("patient.identifier") or query.get("patient")
    if patient:
        patient = patient.rpartition("|")[2]
    sent = dates.parse_all(query.getall("sent", []), "sent")
    count, offset = page_params(query)
    alert_query = AlertQuery(
        mdt=_alert_audience(request, "recipient"), patient=patient, status=status, priority=priority, sent=sent
    )
    alerts, more = await request.app[NOTIFICATION].alerting.search(
        who, alert_query, count=count, offset=offset, search=request.query_string, request_id=request_id(request)
    )
    kept = {k: v for k, v in query.items() if not k.startswith("_")}
    return fhir_response(searchset(request.path, kept, alerts, count=count, offset=offset, has_more=more))


async def acknowledge(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "u")
    resource = await request.app[NOTIFICATION].alerting.acknowledge(
        request.match_info["id"], who, request_id=request_id(request)
    )
    return fhir_response(resource)


async def reconcile(request: web.Request) -> web.Response:
    raised = await request.app[NOTIFICATION].reconciliation.on_request(caller(request), request_id=request_id(request))
    return fhir_response({"resourceType": "Parameters", "parameter": [{"name": "raised", "valueInteger": raised}]})


# -- the live stream --


async def stream_token(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "s")
    notification = request.app[NOTIFICATION]
    mdt = _alert_audience(request, "team")
    position = await notification.live.position(who, mdt, request_id=request_id(request))
    token, expires = request.app[STREAM_TOKENS].issue(
        mdt=mdt, subject=who.subject, org=who.org, role=who.role, ttl=notification.settings.stream_token_seconds
    )
    return web.json_response({"token": token, "expires": expires, "lastEventId": str(position)})


async def alert_stream(request: web.Request) -> web.StreamResponse:
    try:
        grant = request.app[STREAM_TOKENS].verify(request.query.get("token"))
    except (BadStreamToken, ValueError, KeyError):
        raise FhirError.of(
            Code.UNAUTHORIZED,
            "A valid stream token is required (POST /alerts/stream-token).",
            headers={"WWW-Authenticate": 'Bearer realm="lhcie"'},
        ) from None
    live = request.app[NOTIFICATION].live
    who = Caller(org=grant.org, role=grant.role, subject=grant.subject, scopes=frozenset(), mdt=grant.mdt)
    async with live.admitted(who, grant.mdt, request_id=request_id(request)):
        last = request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or ""
        after = int(last) if last.isdigit() else await live.last()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        try:
            frames = live.follow(grant.mdt, after, expires=grant.expires, gone=lambda: _gone(request))
            async with contextlib.aclosing(frames):
                async for frame in frames:
                    await response.write(_event(frame))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def _gone(request: web.Request) -> bool:
    """The client of a stream has closed its connection (the transport is dropped or closing)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _event(frame: Frame) -> bytes:
    """One server-sent event; the console resumes from the last ``id`` it saw."""
    match frame:
        case Change(seq=seq, kind=kind, alert=alert):
            data = json.dumps({"kind": kind, "alert": alert}, separators=(",", ":"))
            return f"id: {seq}\nevent: alert\ndata: {data}\n\n".encode()
        case Expired():
            return b"event: expired\ndata: {}\n\n"
        case Heartbeat():
            return b": heartbeat\n\n"
    raise AssertionError(frame)


# -- the console --

# The DCC's policy (services/agreements/pages.py), with 'self' for the console's own static script and
# style in place of the DCC's nonces; frame-ancestors 'none' so no other site can frame its Acknowledge button;
# frame-src blob: for a document the page itself fetched with the person's token and shows in place.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' blob:; frame-src blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def console_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(CONSOLE_DIR / "index.html", headers=CONSOLE_HEADERS)


# -- pathways --


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("resourceType") != "Parameters":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a Parameters resource.", "resourceType")
    values: dict[str, Any] = {}
    for parameter in body.get("parameter") or []:
        if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
            values[parameter["name"]] = value
    return values


def _date_param(values: dict[str, Any], default: date) -> date:
    raw = values.get("date")
    if raw is None:
        return default
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise FhirError.of(
            Code.INVALID_RESOURCE, "date must be a FHIR date (YYYY-MM-DD).", "Parameters.parameter.where(name='date')"
        ) from None


async def search_pathways(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "s")
    found = await request.app[NOTIFICATION].pathway_actions.for_mdt(
        who, _team(request, "team"), search=request.query_string, request_id=request_id(request)
    )
    return fhir_response(
        searchset(request.path, dict(request.query), found, count=len(found) or 1, offset=0, has_more=False)
    )


async def register_pathway(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "u")
    await request.app[NOTIFICATION].access.member(
        who, resource="EpisodeOfCare", action="create", request_id=request_id(request)
    )
    body = await read_json(request, resource_type="EpisodeOfCare", model=EpisodeOfCare)
    patient = identifier_value(body.get("patient"), NHS_NUMBER)
    if not valid_nhs_number(patient):
        raise FhirError.of(Code.INVALID_NHS_NUMBER, None, "EpisodeOfCare.patient.identifier")
    teams = body.get("team") if isinstance(body.get("team"), list) else []
    reference = teams[0].get("reference") if teams and isinstance(teams[0], dict) else None
    if not isinstance(reference, str) or not reference.startswith(CARETEAM_PREFIX):
        raise FhirError.of(Code.INVALID_RESOURCE, "team must name the MDT (CareTeam/<mdt-id>).", "EpisodeOfCare.team")
    route = next(
        (e.get("valueCode") for e in body.get("extension") or [] if isinstance(e, dict) and e.get("url") == ROUTE_URL),
        None,
    )
    period: dict[str, Any] = body["period"] if isinstance(body.get("period"), dict) else {}
    notification = request.app[NOTIFICATION]
    try:
        on = date.fromisoformat(str(period["start"])[:10]) if period.get("start") else notification.today()
    except ValueError:
        raise FhirError.of(
            Code.INVALID_RESOURCE, "period.start must be a date.", "EpisodeOfCare.period.start"
        ) from None
    created = await notification.pathway_actions.register(
        who,
        patient=str(patient),
        mdt=reference.removeprefix(CARETEAM_PREFIX),
        route=str(route),
        on=on,
        request_id=request_id(request),
    )
    return fhir_response(created, status=201, headers={"Location": f"/fhir/EpisodeOfCare/{created['id']}"})


async def read_pathway(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "s")
    return fhir_response(
        await request.app[NOTIFICATION].pathway_actions.read(
            who, request.match_info["id"], request_id=request_id(request)
        )
    )


async def record_event(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "u")
    await request.app[NOTIFICATION].access.member(
        who, resource=f"EpisodeOfCare/{request.match_info['id']}", action="update", request_id=request_id(request)
    )
    notification = request.app[NOTIFICATION]
    values = _parameters(await read_json(request, resource_type="Parameters", model=Parameters))
    name = values.get("event")
    if not isinstance(name, str):
        raise FhirError.of(
            Code.INVALID_RESOURCE, "Parameters need event (valueCode).", "Parameters.parameter.where(name='event')"
        )
    on = _date_param(values, notification.today())
    corrects, reason = values.get("corrects"), values.get("reason")
    if corrects is not None and not isinstance(corrects, str):
        raise FhirError.of(
            Code.INVALID_RESOURCE,
            "corrects is the id of a recorded event (valueString).",
            "Parameters.parameter.where(name='corrects')",
        )
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
        raise FhirError.of(
            Code.INVALID_RESOURCE,
            "reason is a short text (valueString, at most 500 characters).",
            "Parameters.parameter.where(name='reason')",
        )
    return fhir_response(
        await notification.pathway_actions.record_event(
            who, request.match_info["id"], name, on, corrects=corrects, reason=reason, request_id=request_id(request)
        )
    )


async def transfer(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "u")
    await request.app[NOTIFICATION].access.member(
        who, resource=f"EpisodeOfCare/{request.match_info['id']}", action="transfer", request_id=request_id(request)
    )
    notification = request.app[NOTIFICATION]
    values = _parameters(await read_json(request, resource_type="Parameters", model=Parameters))
    team = values.get("team")
    reference = team.get("reference") if isinstance(team, dict) else None
    if not isinstance(reference, str) or not reference.startswith(CARETEAM_PREFIX):
        raise FhirError.of(
            Code.INVALID_RESOURCE,
            "Parameters need team (valueReference CareTeam/<mdt-id>).",
            "Parameters.parameter.where(name='team')",
        )
    on = _date_param(values, notification.today())
    return fhir_response(
        await notification.pathway_actions.transfer(
            who, request.match_info["id"], reference.removeprefix(CARETEAM_PREFIX), on, request_id=request_id(request)
        )
    )


CSV_COLUMNS = ("pathway", "patient", "tumour_site", "route", "start", "day", "bucket", "decision_to_treat")


async def tracking_list(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Communication", "s")
    # The operation's output is FHIR Parameters; the same list as a spreadsheet is CSV, asked for by name.
    as_csv = request.query.get("_format") == "csv" or "text/csv" in request.headers.get("Accept", "")
    report = await request.app[NOTIFICATION].pathway_actions.tracking_list(
        who, _team(request, "team"), export=as_csv, search=request.query_string, request_id=request_id(request)
    )
    if as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(report["rows"])
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="ptl.csv"'},
        )
    return fhir_response(tracking_list_parameters(report))


# -- FHIR Subscriptions --


async def create_subscription(request: web.Request) -> web.Response:
    who = caller(request)
    request.app[NOTIFICATION].subscribers.require_subscriber(who)  # refused before the body is read
    resource = await read_json(request, resource_type="Subscription", model=Subscription)
    created = await request.app[NOTIFICATION].subscribers.subscribe(who, resource)
    return fhir_response(created, status=201, headers={"Location": f"/fhir/Subscription/{created['id']}"})


async def read_subscription(request: web.Request) -> web.Response:
    return fhir_response(await request.app[NOTIFICATION].subscribers.read(caller(request), request.match_info["id"]))


async def subscription_status(request: web.Request) -> web.Response:
    status = await request.app[NOTIFICATION].subscribers.status(caller(request), request.match_info["id"])
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 1,
            "entry": [{"resource": status, "search": {"mode": "match"}}],
        }
    )


def _number(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must be a non-negative integer.", name)
    return int(raw)


async def subscription_events(request: web.Request) -> web.Response:
    content = request.query.get("content")
    if content not in (None, "empty", "id-only", "full-resource"):
        raise FhirError.of(Code.INVALID_PARAMETER, "content must be empty, id-only or full-resource.", "content")
    bundle = await request.app[NOTIFICATION].subscribers.events(
        caller(request),
        request.match_info["id"],
        _number(request, "eventsSinceNumber"),
        _number(request, "eventsUntilNumber"),
        content,
    )
    return fhir_response(bundle)


async def subscription_stream(request: web.Request) -> web.StreamResponse:
    """A care plan subscription's SSE channel: its notification bundles as they are made."""
    notification = request.app[NOTIFICATION]
    sub = await notification.subscribers.get(caller(request), request.match_info["id"])
    streams = notification.subscription_streams
    streams.check(sub)
    last = request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or "0"
    after = int(last) if last.isdigit() else 0
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    await response.write(b"retry: 1000\n\n")
    # Bounded like a console's grant: the token is checked again when the subscriber reconnects.
    frames = streams.follow(sub, after, seconds=notification.settings.stream_token_seconds, gone=lambda: _gone(request))
    try:
        async with contextlib.aclosing(frames):
            async for frame in frames:
                if isinstance(frame, Heartbeat):
                    await response.write(b": heartbeat\n\n")
                    continue
                number, bundle = frame
                data = json.dumps(bundle, separators=(",", ":"))
                await response.write(f"id: {number}\nevent: notification\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/Communication", search_alerts)
    app.router.add_post("/fhir/Communication/$reconcile", reconcile)
    app.router.add_post("/fhir/Communication/{id}/$acknowledge", acknowledge)
    app.router.add_post("/alerts/stream-token", stream_token)
    app.router.add_get("/alerts/stream", alert_stream)
    app.router.add_get("/console/", console_page)
    add_session_script(app, "/console/static")
    app.router.add_static("/console/static", CONSOLE_DIR / "static")
    app.router.add_get("/fhir/EpisodeOfCare", search_pathways)
    app.router.add_post("/fhir/EpisodeOfCare", register_pathway)
    app.router.add_get("/fhir/EpisodeOfCare/$tracking-list", tracking_list)
    app.router.add_get("/fhir/EpisodeOfCare/{id}", read_pathway)
    app.router.add_post("/fhir/EpisodeOfCare/{id}/$record-event", record_event)
    app.router.add_post("/fhir/EpisodeOfCare/{id}/$transfer", transfer)
    app.router.add_post("/fhir/Subscription", create_subscription)
    app.router.add_get("/fhir/Subscription/{id}", read_subscription)
    app.router.add_get("/fhir/Subscription/{id}/$status", subscription_status)
    app.router.add_get("/fhir/Subscription/{id}/$events", subscription_events)
    app.router.add_get("/fhir/Subscription/{id}/$stream", subscription_stream)
