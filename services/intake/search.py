"""ITI-67 search parameters turned into a registry filter (400 for a parameter it cannot honour)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import NHS_NUMBER, parse_token, valid_nhs_number

# parameter -> field of the registry's search facts holding "system|code" and "code" tokens
TOKEN_FIELDS = {
    "type": "search.type",
    "category": "search.category",
    "identifier": "search.identifier",
    "setting": "search.setting",
    "facility": "search.facility",
    "format": "search.format",
}
# parameter -> field holding an ISO date
DATE_FIELDS = {"date": "search.date", "creation": "search.creation", "period": "search.period_start"}
PREFIXES = {"eq": None, "ge": "$gte", "gt": "$gt", "le": "$lte", "lt": "$lt"}
STATUSES = {"current", "superseded", "entered-in-error"}
CONTROL = {"_count", "_offset", "_format"}
KNOWN = {"patient", "patient.identifier", "patient:identifier", "subject:identifier", "status", "author",
         "custodian", "related", *TOKEN_FIELDS, *DATE_FIELDS, *CONTROL}


def _ods(value: str) -> str:
    return value.rpartition("|")[2].removeprefix("Organization/")


def search_filter(params: Mapping[str, str]) -> dict[str, Any]:
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise FhirError.of(Code.INVALID_PARAMETER, f"Unsupported search parameter(s): {', '.join(unknown)}.", unknown[0])
    token = (params.get("patient.identifier") or params.get("patient:identifier") or params.get("subject:identifier"))
    if token is None and params.get("patient"):
        raise FhirError.of(Code.INVALID_PARAMETER, "Search by patient.identifier (NHS number); Patient ids are not "
                           "used by this exchange.", "patient")
    if not token:
        raise FhirError.of(Code.INVALID_PARAMETER, "Search needs patient.identifier=<system>|<NHS number>.",
                           "patient.identifier")
    system, value = parse_token(token)
    if system not in (None, NHS_NUMBER) or not valid_nhs_number(value):
        raise FhirError.of(Code.INVALID_PARAMETER, "patient.identifier must be a valid NHS number.", "patient.identifier")
    where: dict[str, Any] = {"patient": value}

    statuses = [s for s in params.get("status", "current").split(",") if s]
    if not statuses or set(statuses) - STATUSES:
        raise FhirError.of(Code.INVALID_PARAMETER, "status must be current, superseded or entered-in-error.", "status")
    where["fhir_status"] = {"$in": statuses}

    alternatives: list[dict[str, Any]] = []
    for name, field in TOKEN_FIELDS.items():
        if name in params:
            values = [v for v in params[name].split(",") if v]
            if len(values) == 1:
                where[field] = values[0]
            elif alternatives:
                raise FhirError.of(Code.INVALID_PARAMETER, "Only one token parameter may list several values.", name)
            else:
                alternatives = [{field: v} for v in values]  # an element of an array field equals any of them
    if alternatives:
        where["$or"] = alternatives
    for name in ("author", "custodian"):
        if name in params:
            where[f"search.{name}"] = _ods(params[name])
    if "related" in params:
        where["search.related"] = params["related"]
    for name, field in DATE_FIELDS.items():
        if name in params:
            where[field] = _date_condition(name, params[name])
    return where


def _date_condition(name: str, raw: str) -> Any:
    prefix, value = (raw[:2], raw[2:]) if raw[:2] in PREFIXES else ("eq", raw)
    if len(value) < 4 or not value[:4].isdigit():
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must be a date, optionally prefixed ge/gt/le/lt/eq.", name)
    operator = PREFIXES[prefix]
    if operator is None:
        # eq on a date matches any instant that day (or month, or year): a range on its ISO prefix
        return {"$gte": value, "$lt": value + "\uffff"}
    return {operator: value}
