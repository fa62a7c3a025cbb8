"""Agreements' HTTP surface: read organisations, MDTs and ISAs (the DCC console's writes come later)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.agreements import resources
from services.agreements.registry import Registry
from shared.events import AgreementState, CareTeamState, OrganisationState, Payload
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.http import caller, fhir_response

AGREEMENTS = web.AppKey("agreements", Registry)

_TYPES: dict[str, tuple[type[Payload], Callable[[Any], dict[str, Any]], str | None]] = {
    # resource type -> (state model, FHIR mapping, field a search by organisation filters on)
    "Organization": (OrganisationState, resources.organization, None),
    "CareTeam": (CareTeamState, resources.careteam, "organisation"),
    "Contract": (AgreementState, resources.contract, "parties"),
}


def _search(resource_type: str) -> Callable[[web.Request], Any]:
    kind, to_fhir, org_field = _TYPES[resource_type]

    async def search(request: web.Request) -> web.Response:
        caller(request).require(resource_type, "s")
        count, offset = page_params(request.query)
        where = {}
        if org_field and (org := request.query.get("organization") or request.query.get("party")):
            where[org_field] = org.rpartition("|")[2].removeprefix("Organization/")
        found = await request.app[AGREEMENTS].all(kind, where, limit=count + 1, skip=offset)
        kept = {k: v for k, v in request.query.items() if not k.startswith("_")}
        return fhir_response(searchset(request.path, kept, [to_fhir(s) for s in found[:count]],
                                       count=count, offset=offset, has_more=len(found) > count))

    return search


def _read(resource_type: str) -> Callable[[web.Request], Any]:
    kind, to_fhir, _ = _TYPES[resource_type]

    async def read(request: web.Request) -> web.Response:
        caller(request).require(resource_type, "r")
        state = await request.app[AGREEMENTS].one(kind, request.match_info["id"])
        if state is None:
            raise FhirError.of(Code.NOT_FOUND)
        return fhir_response(to_fhir(state))

    return read


def add_routes(app: web.Application) -> None:
    for resource_type in _TYPES:
        app.router.add_get(f"/fhir/{resource_type}", _search(resource_type))
        app.router.add_get(f"/fhir/{resource_type}/{{id}}", _read(resource_type))
