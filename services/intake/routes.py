"""Intake's HTTP surface: submit a DocumentReference, read one, search a patient's documents."""

from __future__ import annotations

from aiohttp import web

from services.intake.domain import Intake
from services.intake.validation import validate_submission
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import NHS_NUMBER, parse_token, valid_nhs_number
from shared.http import caller, fhir_response, read_json, request_id

INTAKE = web.AppKey("intake", Intake)


async def create_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "c")
    data = await read_json(request)
    submission = validate_submission(data, who)
    resource = await request.app[INTAKE].submit(
        submission, who, request_id=request_id(request), address=request.remote
    )
    return fhir_response(resource, status=202, headers={"Location": f"/fhir/DocumentReference/{resource['id']}"})


async def read_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "r")
    outcome = await request.app[INTAKE].read(request.match_info["id"], who, request_id=request_id(request))
    headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
    return fhir_response(outcome.resource, status=outcome.status, headers=headers)


async def search_documents(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("DocumentReference", "s")
    query = request.query
    token = query.get("patient.identifier") or query.get("patient:identifier") or query.get("subject:identifier")
    if not token:
        raise FhirError.of(Code.INVALID_PARAMETER, "Search needs patient.identifier=<system>|<NHS number>.",
                           "patient.identifier")
    system, value = parse_token(token)
    if system not in (None, NHS_NUMBER) or not valid_nhs_number(value):
        raise FhirError.of(Code.INVALID_PARAMETER, "patient.identifier must be a valid NHS number.",
                           "patient.identifier")
    count, offset = page_params(query)
    resources, more = await request.app[INTAKE].search_by_patient(value, who, count=count, offset=offset)
    kept = {k: v for k, v in query.items() if not k.startswith("_")}
    return fhir_response(searchset(request.path, kept, resources, count=count, offset=offset, has_more=more))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/fhir/DocumentReference", create_document)
    app.router.add_get("/fhir/DocumentReference", search_documents)
    app.router.add_get("/fhir/DocumentReference/{id}", read_document)
