"""The care service's HTTP surface: CarePlan (versioned), Task (repatriation), Bundle (discharge
summaries) and the published Questionnaires. HTTP only: the use cases live in the domain modules."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from services.care.careplans import Versioned, parse_etag
from services.care.domain import Care
from services.care.plans import CATEGORY_SYSTEM, END_OF_LIFE_CATEGORY, RECORD_TYPES
from services.care.questionnaires import FORMS
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import NHS_NUMBER, SNOMED, parse_token, valid_nhs_number
from shared.http import caller, fhir_response, read_json, request_id

CARE = web.AppKey("care", Care)


def _versioned(found: Versioned, *, status: int = 200, location: bool = False) -> web.Response:
    headers = {"ETag": found.etag, "Last-Modified": found.resource["meta"]["lastUpdated"]}
    if location:
        headers["Location"] = f"/fhir/CarePlan/{found.resource['id']}/_history/{found.version}"
    return fhir_response(found.resource, status=status, headers=headers)


def _bundle(kind: str, resources: list[dict[str, Any]], base: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "total": len(resources),
        "entry": [
            {
                "fullUrl": f"{base}/{r['id']}",
                "resource": r,
                **({"search": {"mode": "match"}} if kind == "searchset" else {}),
            }
            for r in resources
        ],
    }


# -- CarePlan ---------------------------------------------------------------------------------------


async def create_plan(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CarePlan", "c")
    data = await read_json(request, resource_type="CarePlan")
    found = await request.app[CARE].plans.create(data, who, request_id=request_id(request))
    return _versioned(found, status=201, location=True)


async def update_plan(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CarePlan", "u")
    data = await read_json(request, resource_type="CarePlan")
    found = await request.app[CARE].plans.update(
        request.match_info["id"],
        data,
        who,
        if_match=parse_etag(request.headers.get("If-Match")),
        request_id=request_id(request),
    )
    return _versioned(found)


async def read_plan(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CarePlan", "r")
    found = await request.app[CARE].plans.read(request.match_info["id"], who, request_id=request_id(request))
    return _versioned(found)


async def vread_plan(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CarePlan", "r")
    vid = request.match_info["vid"]
    if not vid.isdigit():
        raise FhirError.of(Code.NOT_FOUND, "No such version of this plan.")
    found = await request.app[CARE].plans.read(
        request.match_info["id"], who, version=int(vid), request_id=request_id(request)
    )
    return _versioned(found)


async def plan_history(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CarePlan", "r")
    plan_id = request.match_info["id"]
    versions = await request.app[CARE].plans.history(plan_id, who, request_id=request_id(request))
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "history",
            "total": len(versions),
            "entry": [
                {
                    "fullUrl": f"/fhir/CarePlan/{plan_id}",
                    "resource": v["resource"],
                    "request": {
                        "method": v["method"],
                        "url": "CarePlan" if v["method"] == "POST" else f"CarePlan/{plan_id}",
                    },
                    "response": {
                        "status": "201 Created" if v["method"] == "POST" else "200 OK",
                        "etag": f'W/"{v["version"]}"',
                        "lastModified": v["resource"]["meta"]["lastUpdated"],
                    },
                }
                for v in versions
            ],
        }
    )


async def search_plans(request: web.Request) -> web.Response:
    """``GET /fhir/CarePlan?patient.identifier=<system>|<nhs>&category=end-of-life[&status=active]``."""
    who = caller(request)
    who.require("CarePlan", "s")
    params = dict(request.query)
    unknown = set(params) - {"patient.identifier", "category", "status"}
    if unknown:
        raise FhirError.of(Code.INVALID_PARAMETER, f"Unsupported search parameter: {', '.join(sorted(unknown))}.")
    system, nhs = parse_token(params.get("patient.identifier", ""))
    if system not in (None, NHS_NUMBER) or not valid_nhs_number(nhs):
        raise FhirError.of(Code.INVALID_PARAMETER, f"patient.identifier must be {NHS_NUMBER}|<a valid NHS number>.")
    record_types = _record_types(params.get("category"))
    statuses = set(params["status"].split(",")) if params.get("status") else None
    resources = await request.app[CARE].plans.search(
        nhs,
        who,
        record_types=record_types,
        statuses=statuses,
        query=urlencode(sorted(params.items())),
        request_id=request_id(request),
    )
    return fhir_response(_bundle("searchset", resources, "/fhir/CarePlan"))


def _record_types(value: str | None) -> set[str] | None:
    if not value:
        return None
    wanted: set[str] = set()
    for token in value.split(","):
        system, code = parse_token(token)
        if code == END_OF_LIFE_CATEGORY and system in (None, CATEGORY_SYSTEM):
            wanted |= set(RECORD_TYPES)
        elif code in RECORD_TYPES and system in (None, SNOMED):
            wanted.add(code)
        else:
            raise FhirError.of(
                Code.INVALID_PARAMETER,
                f"category must be {END_OF_LIFE_CATEGORY} or a SNOMED record type ({', '.join(RECORD_TYPES)}).",
            )
    return wanted


# -- Task (repatriation) ------------------------------------------------------------------------------


async def create_task(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Task", "c")
    data = await read_json(request, resource_type="Task")
    task = await request.app[CARE].transfers.request(data, who, request_id=request_id(request))
    return fhir_response(task, status=201, headers={"Location": f"/fhir/Task/{task['id']}"})


async def advance_task(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Task", "u")
    data = await read_json(request, resource_type="Parameters")
    task = await request.app[CARE].transfers.advance(
        request.match_info["id"], data, who, request_id=request_id(request)
    )
    return fhir_response(task)


async def read_task(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Task", "r")
    return fhir_response(
        await request.app[CARE].transfers.read(request.match_info["id"], who, request_id=request_id(request))
    )


async def search_tasks(request: web.Request) -> web.Response:
    """The live list: ``owner=<own ODS>`` (incoming, for bed managers) or ``requester=<own ODS>``."""
    who = caller(request)
    who.require("Task", "s")
    params = dict(request.query)
    if set(params) - {"owner", "requester", "status"} or len({"owner", "requester"} & set(params)) != 1:
        raise FhirError.of(
            Code.INVALID_PARAMETER,
            "Search with owner=<your ODS code> or requester=<your ODS code> (and optionally status=pending).",
        )
    party = "receiver" if "owner" in params else "sender"
    if who.role == "bed-manager" and party != "receiver":
        raise FhirError.of(Code.FORBIDDEN, "Bed managers see the transfers coming into their trust (owner=).")
    _, org = parse_token(params.get("owner") or params.get("requester") or "")
    if org != who.org:
        raise FhirError.of(Code.FORBIDDEN, "An organisation sees its own transfers.")
    if params.get("status", "pending") != "pending":
        raise FhirError.of(Code.INVALID_PARAMETER, "status: only pending is supported (transfers still open).")
    tasks = await request.app[CARE].transfers.pending(
        who, as_party=party, query=urlencode(sorted(params.items())), request_id=request_id(request)
    )
    return fhir_response(_bundle("searchset", tasks, "/fhir/Task"))


# -- Bundle (discharge summaries) -----------------------------------------------------------------------


async def submit_summary(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Bundle", "c")
    data = await read_json(request, resource_type="Bundle")
    row = await request.app[CARE].discharges.submit(data, who, request_id=request_id(request))
    return fhir_response(
        row["bundle"],
        status=201,
        headers={"Location": f"/fhir/Bundle/{row['_id']}", "X-ITK-Acknowledgement": "accepted"},
    )


async def read_summary(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Bundle", "r")
    return fhir_response(
        await request.app[CARE].discharges.read(request.match_info["id"], who, request_id=request_id(request))
    )


async def inbox(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Bundle", "s")
    params = dict(request.query)
    _, org = parse_token(params.get("recipient", ""))
    if set(params) != {"recipient"} or org != who.org:
        raise FhirError.of(Code.INVALID_PARAMETER, "Search with recipient=<your ODS code>.")
    bundles = await request.app[CARE].discharges.inbox(
        who, query=urlencode(sorted(params.items())), request_id=request_id(request)
    )
    return fhir_response(_bundle("searchset", bundles, "/fhir/Bundle"))


async def acknowledge(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Bundle", "u")
    data = await read_json(request, resource_type="Parameters")
    return fhir_response(
        await request.app[CARE].discharges.acknowledge(
            request.match_info["id"], data, who, request_id=request_id(request)
        )
    )


async def summary_status(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Bundle", "r")
    return fhir_response(await request.app[CARE].discharges.status(request.match_info["id"], who))


# -- Questionnaire ------------------------------------------------------------------------------------


async def read_questionnaire(request: web.Request) -> web.Response:
    form = FORMS.get(request.match_info["id"])
    if form is None:
        raise FhirError.of(Code.NOT_FOUND)
    return fhir_response(form.to_fhir())


async def search_questionnaires(request: web.Request) -> web.Response:
    return fhir_response(_bundle("searchset", [f.to_fhir() for f in FORMS.values()], "/fhir/Questionnaire"))


def add_routes(app: web.Application) -> None:
    from services.care import views

    app.router.add_post("/fhir/CarePlan", create_plan)
    app.router.add_get("/fhir/CarePlan", search_plans)
    app.router.add_get("/fhir/CarePlan/{id}", read_plan)
    app.router.add_put("/fhir/CarePlan/{id}", update_plan)
    app.router.add_get("/fhir/CarePlan/{id}/_history", plan_history)
    app.router.add_get("/fhir/CarePlan/{id}/_history/{vid}", vread_plan)
    app.router.add_post("/fhir/Task", create_task)
    app.router.add_get("/fhir/Task", search_tasks)
    app.router.add_get("/fhir/Task/{id}", read_task)
    app.router.add_post("/fhir/Task/{id}/$advance", advance_task)
    app.router.add_post("/fhir/Bundle", submit_summary)
    app.router.add_get("/fhir/Bundle", inbox)
    app.router.add_get("/fhir/Bundle/{id}", read_summary)
    app.router.add_post("/fhir/Bundle/{id}/$acknowledge", acknowledge)
    app.router.add_get("/fhir/Bundle/{id}/$status", summary_status)
    app.router.add_get("/fhir/Questionnaire", search_questionnaires)
    app.router.add_get("/fhir/Questionnaire/{id}", read_questionnaire)
    views.add_routes(app)
