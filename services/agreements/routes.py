"""Agreements' HTTP surface: the directory, the ISA lifecycle, and the patient's view and controls.

HTTP only: each handler checks the caller's scopes, parses the body and hands over to the domain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from fhir.resources.R4B.careteam import CareTeam
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.contract import Contract
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.relatedperson import RelatedPerson

from services.agreements import consent_fhir, contract_fhir, directory_fhir, pages, vocabulary
from services.agreements.domain import AgreementsService
from services.agreements.isas import MAX_DOCUMENT_BYTES, overlap_json
from services.agreements.patients import EXCEPTIONS
from shared.auth import Caller
from shared.events import AgreementState, AgreementStatus, CareTeamState, OrganisationState, Payload
from shared.fhir.bundles import page_params, searchset
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import ODS_CODE
from shared.http import caller, fhir_response, read_json, request_id

AGREEMENTS = web.AppKey("agreements", AgreementsService)
HOLDING_EXTENSION = f"{vocabulary.BASE}/StructureDefinition/record-holding"
TEAM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def _service(request: web.Request) -> AgreementsService:
    return request.app[AGREEMENTS]


async def _contract(service: AgreementsService, state: AgreementState) -> dict[str, Any]:
    return contract_fhir.contract(state, await service.registry.details_of(AgreementState, state.agreement_id))


async def _organization(service: AgreementsService, state: OrganisationState) -> dict[str, Any]:
    details = await service.registry.details_of(OrganisationState, state.ods_code)
    return directory_fhir.organization(state, details.get("contacts"))


_TYPES: dict[str, tuple[type[Payload], str | None]] = {
    # resource type -> (state model, field a search by organisation filters on)
    "Organization": (OrganisationState, None),
    "CareTeam": (CareTeamState, "organisation"),
    "Contract": (AgreementState, "parties"),
}


async def _to_fhir(service: AgreementsService, state: Payload) -> dict[str, Any]:
    if isinstance(state, AgreementState):
        return await _contract(service, state)
    if isinstance(state, OrganisationState):
        return await _organization(service, state)
    assert isinstance(state, CareTeamState)
    return directory_fhir.careteam(state)


def _search(resource_type: str) -> Callable[[web.Request], Any]:
    kind, org_field = _TYPES[resource_type]

    async def search(request: web.Request) -> web.Response:
        caller(request).require(resource_type, "s")
        count, offset = page_params(request.query)
        where: dict[str, Any] = {}
        if org_field and (org := request.query.get("organization") or request.query.get("party")):
            where[org_field] = org.rpartition("|")[2].removeprefix("Organization/")
        if kind is AgreementState and (status := request.query.get("status")):
            by_fhir = {v: k for k, v in vocabulary.CONTRACT_STATUS.items()}
            wanted = by_fhir.get(status) or next((s for s in AgreementStatus if s.value == status), None)
            if wanted is None:
                raise FhirError.of(Code.INVALID_PARAMETER, "status must be a Contract status.", "status")
            where["status"] = wanted.value
        found = await _service(request).registry.all(kind, where, limit=count + 1, skip=offset)
        kept = {k: v for k, v in request.query.items() if not k.startswith("_")}
        entries = [await _to_fhir(_service(request), s) for s in found[:count]]
        return fhir_response(
            searchset(request.path, kept, entries, count=count, offset=offset, has_more=len(found) > count)
        )

    return search


def _read(resource_type: str) -> Callable[[web.Request], Any]:
    kind, _ = _TYPES[resource_type]

    async def read(request: web.Request) -> web.Response:
        caller(request).require(resource_type, "r")
        state = await _service(request).registry.require(kind, request.match_info["id"])
        return fhir_response(await _to_fhir(_service(request), state))

    return read


def _collection(resources_: list[dict[str, Any]]) -> dict[str, Any]:
    """A searchset without paging, for views that are small by nature (one organisation, one patient)."""
    return searchset("", {}, resources_, count=max(len(resources_), 1), offset=0, has_more=False) | {"link": []}


# -- directory ----------------------------------------------------------------------------------------


async def create_organization(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Organization", "c")
    given = directory_fhir.parse_organization(
        await read_json(request, resource_type="Organization", model=Organization)
    )
    state = await _service(request).directory.register(who, given)
    return fhir_response(
        await _organization(_service(request), state),
        status=201,
        headers={"Location": f"/fhir/Organization/{state.ods_code}"},
    )


async def update_organization(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Organization", "u")
    given = directory_fhir.parse_organization(
        await read_json(request, resource_type="Organization", model=Organization)
    )
    state = await _service(request).directory.update(who, request.match_info["id"], given)
    return fhir_response(await _organization(_service(request), state))


async def create_careteam(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CareTeam", "c")
    body = await read_json(request, resource_type="CareTeam", model=CareTeam)
    team_id = body.get("id")
    if not isinstance(team_id, str) or not TEAM_ID.match(team_id):
        raise FhirError.of(Code.INVALID_RESOURCE, "id must be a short lower-case slug, e.g. rj1-lung.", "CareTeam.id")
    state = await _service(request).directory.save_team(
        who, directory_fhir.parse_careteam(body, careteam_id=team_id), create=True
    )
    return fhir_response(directory_fhir.careteam(state), status=201, headers={"Location": f"/fhir/CareTeam/{team_id}"})


async def update_careteam(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("CareTeam", "u")
    body = await read_json(request, resource_type="CareTeam", model=CareTeam)
    team = directory_fhir.parse_careteam(body, careteam_id=request.match_info["id"])
    state = await _service(request).directory.save_team(who, team, create=False)
    return fhir_response(directory_fhir.careteam(state))


# -- ISAs -----------------------------------------------------------------------------------------------


async def propose(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "c")
    draft = contract_fhir.parse_contract(await read_json(request, resource_type="Contract", model=Contract))
    state = await _service(request).isas.propose(who, draft)
    return fhir_response(
        await _contract(_service(request), state),
        status=201,
        headers={"Location": f"/fhir/Contract/{state.agreement_id}"},
    )


async def _accept(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "u")
    state = await _service(request).isas.accept(who, request.match_info["id"])
    return fhir_response(await _contract(_service(request), state))


def _decision(action: str) -> Callable[[web.Request], Any]:
    """$reject and $revoke: an optional Parameters body gives the reason, kept with the agreement."""

    async def decide(request: web.Request) -> web.Response:
        who = caller(request)
        who.require("Contract", "u")
        reason = None
        if request.body_exists:
            given = _parameters(await read_json(request, resource_type="Parameters", model=Parameters), "reason")
            reason = given[0] if given else None
        state = await getattr(_service(request).isas, action)(who, request.match_info["id"], reason)
        return fhir_response(await _contract(_service(request), state))

    return decide


async def join(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "u")
    state, joined = await _service(request).isas.join(who, request.match_info["id"])
    # 202: the request waits for the template's owner.
    return fhir_response(await _contract(_service(request), state), status=200 if joined else 202)


def _join_decision(approve: bool) -> Callable[[web.Request], Any]:
    async def decide(request: web.Request) -> web.Response:
        who = caller(request)
        who.require("Contract", "u")
        orgs = [
            o.rpartition("|")[2].removeprefix("Organization/")
            for o in _parameters(await read_json(request, resource_type="Parameters", model=Parameters), "organization")
        ]
        if len(orgs) != 1:
            raise FhirError.of(
                Code.INVALID_RESOURCE, "Name the one organisation (organization).", "Parameters.parameter"
            )
        state = await _service(request).isas.decide_join(who, request.match_info["id"], orgs[0], approve=approve)
        return fhir_response(await _contract(_service(request), state))

    return decide


async def pending(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "s")
    found = await _service(request).isas.pending_on(who.org)
    return fhir_response(_collection([await _contract(_service(request), s) for s in found]))


async def templates(request: web.Request) -> web.Response:
    caller(request).require("Contract", "s")
    found = await _service(request).isas.templates()
    return fhir_response(_collection([await _contract(_service(request), s) for s in found]))


async def duplicates(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "s")
    party = request.query.get("party")
    found = await _service(request).isas.duplicates_for(
        who,
        party.rpartition("|")[2].removeprefix("Organization/") if party else None,
        request_id=request_id(request),
        address=request.remote,
    )
    return fhir_response(
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "overlap",
                    "part": [
                        *(
                            {"name": "agreement", "valueReference": {"reference": f"Contract/{a}", "display": t}}
                            for a, t in zip(o["agreements"], o["titles"], strict=True)
                        ),
                        *({"name": "party", "valueString": p} for p in o["parties"]),
                        *({"name": "purpose", "valueCode": p} for p in o["purposes"]),
                    ],
                }
                for o in map(overlap_json, found)
            ],
        }
    )


def _parameters(body: dict[str, Any], name: str) -> list[Any]:
    if body.get("resourceType") != "Parameters":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a Parameters resource.", "resourceType")
    values = []
    for p in body.get("parameter") or []:
        if isinstance(p, dict) and p.get("name") == name:
            ref = (
                (p.get("valueReference") or {}).get("reference") if isinstance(p.get("valueReference"), dict) else None
            )
            values.append(ref.removeprefix("Contract/") if isinstance(ref, str) else p.get("valueString"))
    return [v for v in values if isinstance(v, str) and v]


async def retire(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "u")
    kept = _parameters(await read_json(request, resource_type="Parameters", model=Parameters), "replacedBy")
    if len(kept) != 1:
        raise FhirError.of(
            Code.INVALID_RESOURCE, "Name the one agreement that replaces it (replacedBy).", "Parameters.parameter"
        )
    state = await _service(request).isas.retire(who, request.match_info["id"], kept[0])
    return fhir_response(await _contract(_service(request), state))


async def merge(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "c")
    body = await read_json(request, resource_type="Parameters", model=Parameters)
    ids = tuple(_parameters(body, "agreement"))
    titles = _parameters(body, "title")
    state = await _service(request).isas.merge(
        who, ids, titles[0] if titles else "Merged information sharing agreement"
    )
    return fhir_response(
        await _contract(_service(request), state),
        status=201,
        headers={"Location": f"/fhir/Contract/{state.agreement_id}"},
    )


async def upload_document(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Contract", "u")
    if request.content_type != "application/pdf":
        raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "Send the signed agreement as application/pdf.")
    if (request.content_length or 0) > MAX_DOCUMENT_BYTES:
        raise FhirError.of(Code.TOO_LARGE, "The signed agreement exceeds 20 MiB.")
    content = await request.read()
    state = await _service(request).isas.attach_document(who, request.match_info["id"], content)
    return fhir_response(await _contract(_service(request), state))


async def download_document(request: web.Request) -> web.StreamResponse:
    who = caller(request)
    who.require("Contract", "r")
    state, data = await _service(request).isas.read_document(
        who, request.match_info["id"], request_id=request_id(request), address=request.remote
    )
    return web.Response(
        body=data,
        content_type="application/pdf",
        headers={"ETag": f'"{state.document_sha256}"', "Cache-Control": "no-store"},
    )


# -- the patient's view -----------------------------------------------------------------------------


def _patient_reader(request: web.Request) -> tuple[Caller, str]:
    """A patient or carer reading about a patient: both hold a DocumentReference search scope."""
    who = caller(request)
    who.require("DocumentReference", "s")
    return who, _service(request).patients.patient_of(who, request.query.get("patient"))


async def _on_record(request: web.Request, who: Caller, nhs: str, resource: str) -> None:
    await _service(request).patients.on_record(
        who, nhs, resource, request_id=request_id(request), address=request.remote
    )


async def record_holders(request: web.Request) -> web.Response:
    who, nhs = _patient_reader(request)
    holders = await _service(request).patients.record_holders(who, nhs)
    await _on_record(request, who, nhs, "Organization/$record-holders")
    entries = []
    for h in holders:
        org = await _service(request).registry.one(OrganisationState, h["organisation"])
        resource = (
            directory_fhir.organization(org)
            if org
            else {
                "resourceType": "Organization",
                "id": h["organisation"],
                "name": h["name"],
                "identifier": [{"system": ODS_CODE, "value": h["organisation"]}],
            }
        )
        resource["extension"] = [
            {
                "url": HOLDING_EXTENSION,
                "extension": [
                    {"url": "documents", "valueInteger": h["documents"]},
                    *({"url": "category", "valueCode": c} for c in h["categories"]),
                    {"url": "firstStored", "valueDateTime": h["first_stored"]},
                    {"url": "lastStored", "valueDateTime": h["last_stored"]},
                ],
            }
        ]
        entries.append(resource)
    return fhir_response(_collection(entries))


async def consents(request: web.Request) -> web.Response:
    who, nhs = _patient_reader(request)
    patients = _service(request).patients
    preferences = await patients.preferences(who, nhs)
    grants = await patients.carers(who, nhs)
    await _on_record(request, who, nhs, "Consent")
    return fhir_response(
        _collection(
            [
                consent_fhir.preferences_consent(preferences, nhs, EXCEPTIONS),
                *(consent_fhir.carer_consent(g) for g in grants),
            ]
        )
    )


async def _names(service: AgreementsService, codes: tuple[str, ...]) -> dict[str, str]:
    found = {code: await service.registry.one(OrganisationState, code) for code in codes}
    return {code: org.name for code, org in found.items() if org is not None}


async def read_preferences(request: web.Request) -> web.Response:
    who, nhs = _patient_reader(request)
    preferences = await _service(request).patients.preferences(who, nhs)
    await _on_record(request, who, nhs, "Consent/preferences")
    names = await _names(_service(request), preferences.opted_out_organisations if preferences else ())
    return fhir_response(consent_fhir.preferences_consent(preferences, nhs, EXCEPTIONS, names))


async def set_preferences(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Consent", "u")
    nhs = _service(request).patients.patient_of(who, request.query.get("patient"))
    wanted = consent_fhir.parse_preferences(await read_json(request, resource_type="Consent", model=Consent))
    state = await _service(request).patients.set_preferences(who, nhs, wanted)
    names = await _names(_service(request), state.opted_out_organisations)
    return fhir_response(consent_fhir.preferences_consent(state, nhs, EXCEPTIONS, names))


async def list_carers(request: web.Request) -> web.Response:
    who, nhs = _patient_reader(request)
    grants = await _service(request).patients.carers(who, nhs)
    await _on_record(request, who, nhs, "RelatedPerson")
    return fhir_response(_collection([consent_fhir.related_person(g) for g in grants]))


async def grant_carer(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Consent", "c")
    nhs = _service(request).patients.patient_of(who, request.query.get("patient"))
    wanted = consent_fhir.parse_related_person(
        await read_json(request, resource_type="RelatedPerson", model=RelatedPerson)
    )
    grant = await _service(request).patients.grant(who, nhs, wanted)
    return fhir_response(
        consent_fhir.related_person(grant), status=201, headers={"Location": f"/fhir/RelatedPerson/{grant.grant_id}"}
    )


async def revoke_carer(request: web.Request) -> web.Response:
    who = caller(request)
    who.require("Consent", "u")
    grant = await _service(request).patients.revoke(who, request.match_info["id"])
    return fhir_response(consent_fhir.related_person(grant))


def add_routes(app: web.Application) -> None:
    r = app.router
    # Operations first: "/fhir/Contract/$pending" must not be read as a Contract with id "$pending".
    r.add_get("/fhir/Contract/$pending", pending)
    r.add_get("/fhir/Contract/$templates", templates)
    r.add_get("/fhir/Contract/$duplicates", duplicates)
    r.add_post("/fhir/Contract/$merge", merge)
    r.add_get("/fhir/Organization/$record-holders", record_holders)
    r.add_get("/fhir/Consent/preferences", read_preferences)
    r.add_put("/fhir/Consent/preferences", set_preferences)
    for resource_type in _TYPES:
        r.add_get(f"/fhir/{resource_type}", _search(resource_type))
        r.add_get(f"/fhir/{resource_type}/{{id}}", _read(resource_type))
    r.add_post("/fhir/Organization", create_organization)
    r.add_put("/fhir/Organization/{id}", update_organization)
    r.add_post("/fhir/CareTeam", create_careteam)
    r.add_put("/fhir/CareTeam/{id}", update_careteam)
    r.add_post("/fhir/Contract", propose)
    r.add_post("/fhir/Contract/{id}/$accept", _accept)
    for action in ("reject", "revoke"):
        r.add_post(f"/fhir/Contract/{{id}}/${action}", _decision(action))
    r.add_post("/fhir/Contract/{id}/$join", join)
    r.add_post("/fhir/Contract/{id}/$approve-join", _join_decision(approve=True))
    r.add_post("/fhir/Contract/{id}/$reject-join", _join_decision(approve=False))
    r.add_post("/fhir/Contract/{id}/$retire", retire)
    r.add_put("/fhir/Contract/{id}/$document", upload_document)
    r.add_get("/fhir/Contract/{id}/$document", download_document)
    r.add_get("/fhir/Consent", consents)
    r.add_get("/fhir/RelatedPerson", list_carers)
    r.add_post("/fhir/RelatedPerson", grant_carer)
    r.add_post("/fhir/RelatedPerson/{id}/$revoke", revoke_carer)
    pages.add_routes(app)
