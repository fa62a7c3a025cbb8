"""ITI-67 search parameters turned into a registry filter.

The query is read as a list of (name, value) pairs: a repeated parameter (``date=ge…&date=le…``) is ANDed,
a comma inside one value ORed, as FHIR says. Parameters this Responder does not know are ignored and
reported (MHD: a Document Responder shall ignore them), unless the client asked for
``Prefer: handling=strict``, which keeps the 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.intake.validation import fold
from shared.fhir import dates
from shared.fhir.bundles import DEFAULT_PAGE, MAX_OFFSET, MAX_PAGE
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
    "event": "search.event",
    "security-label": "search.security_label",
    "related:identifier": "search.related_identifier",
}
# parameter -> the pair of fields holding the target's range (shared/fhir/dates.py, range_filter)
DATE_FIELDS = {
    "date": ("search.date_low", "search.date_high"),
    "creation": ("search.creation_low", "search.creation_high"),
    "period": ("search.period_low", "search.period_high"),
    "_lastUpdated": ("updated_low", "updated_high"),
}
STRING_FIELDS = {"author.given": "search.author_given", "author.family": "search.author_family"}
REFERENCE_PARAMS = {"author", "custodian", "related"}
PATIENT_IDENTIFIER = ("patient.identifier", "patient:identifier", "subject:identifier")
PATIENT_REFERENCE = ("patient", "subject")
STATUS_SYSTEM = "http://hl7.org/fhir/document-reference-status"
STATUSES = {"current", "superseded", "entered-in-error"}
PAGING = {"_count", "_offset", "_summary"}
FORMAT = {"_format"}  # answered by the response layer
KNOWN = {
    *PATIENT_IDENTIFIER,
    *PATIENT_REFERENCE,
    "status",
    "_id",
    *TOKEN_FIELDS,
    *DATE_FIELDS,
    *STRING_FIELDS,
    *REFERENCE_PARAMS,
    *PAGING,
    *FORMAT,
}
# For the CapabilityStatement: every parameter with its FHIR type.
PARAM_TYPES = {
    "patient": "reference",
    "patient.identifier": "token",
    "status": "token",
    "_id": "token",
    **{name: "token" for name in TOKEN_FIELDS if ":" not in name},
    **{name: "date" for name in DATE_FIELDS},
    **{name: "string" for name in STRING_FIELDS},
    **{name: "reference" for name in REFERENCE_PARAMS},
}


@dataclass
class Search:
    """A parsed ITI-67 query: the registry filter, the page, and what was used and what ignored."""

    patient: str
    where: dict[str, Any]
    count: int = DEFAULT_PAGE
    offset: int = 0
    summary_count: bool = False
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def parse(pairs: Sequence[tuple[str, str]], *, strict: bool = False) -> Search:
    names = {name for name, _ in pairs}
    unknown = sorted(names - KNOWN)
    if unknown and strict:
        raise FhirError.of(
            Code.INVALID_PARAMETER, f"Unsupported search parameter(s): {', '.join(unknown)}.", unknown[0]
        )
    ignored = set(unknown)
    patient = _patient(pairs)
    where: dict[str, Any] = {"patient": patient}
    conditions: list[dict[str, Any]] = []
    statuses: set[str] | None = None
    search = Search(patient, where)
    for name, value in pairs:
        if name in ignored or name in PATIENT_IDENTIFIER or name in PATIENT_REFERENCE:
            continue
        if name in FORMAT:  # kept in the paging links, so the next page comes in the same format
            search.used.append((name, value))
            continue
        if name == "status":
            found = _statuses(value)
            statuses = found if statuses is None else statuses & found
        elif name == "_id":
            conditions.append({"_id": {"$in": _values(name, value)}})
        elif name in TOKEN_FIELDS:
            conditions.append(_any_of(TOKEN_FIELDS[name], _values(name, value)))
        elif name in STRING_FIELDS:
            conditions.append(_any_of(STRING_FIELDS[name], [fold(v) for v in _values(name, value)]))
        elif name in REFERENCE_PARAMS:
            refs = [_ods(v) if name != "related" else v for v in _values(name, value)]
            conditions.append(_any_of(f"search.{name}", refs))
        elif name in DATE_FIELDS:
            conditions.append(_date(name, value))
        elif name == "_summary":
            if value != "count":
                ignored.add("_summary")
                continue
            search.summary_count = True
        elif name in ("_count", "_offset"):
            _paging(search, name, value)
        search.used.append((name, value))
    where["fhir_status"] = {"$in": sorted(statuses if statuses is not None else {"current"})}
    if conditions:
        where["$and"] = conditions
    search.used = [*((n, v) for n, v in pairs if n in PATIENT_IDENTIFIER or n in PATIENT_REFERENCE), *search.used]
    search.ignored = sorted(ignored)
    return search


def _patient(pairs: Sequence[tuple[str, str]]) -> str:
    """The one patient of the search, by NHS number (patient.identifier) or by reference (patient).

    The exchange has no Patient store of its own: a Patient's logical id here is its NHS number, so
    ``patient=Patient/9000000009`` and ``patient.identifier=…|9000000009`` are the same search.
    """
    found: set[str] = set()
    for name, value in pairs:
        if name in PATIENT_IDENTIFIER:
            system, number = parse_token(value)
            if system not in (None, NHS_NUMBER) or not valid_nhs_number(number):
                raise FhirError.of(Code.INVALID_PARAMETER, "patient.identifier must be a valid NHS number.", name)
            found.add(number)
        elif name in PATIENT_REFERENCE:
            number = value.rstrip("/").rpartition("/")[2] if "/" in value else value
            if not valid_nhs_number(number) or ("/" in value and value.rstrip("/").split("/")[-2] != "Patient"):
                raise FhirError.of(
                    Code.INVALID_PARAMETER,
                    "patient must reference Patient/<NHS number>: a Patient's id on this exchange is its NHS number.",
                    name,
                )
            found.add(number)
    if not found:
        raise FhirError.of(
            Code.INVALID_PARAMETER,
            "Search needs patient=Patient/<NHS number> or patient.identifier=<system>|<NHS number>.",
            "patient.identifier",
        )
    if len(found) > 1:
        raise FhirError.of(Code.INVALID_PARAMETER, "Search one patient at a time.", "patient")
    return found.pop()


def _values(name: str, value: str) -> list[str]:
    values = [v for v in value.split(",") if v]
    if not values:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} has no value.", name)
    return values


def _any_of(path: str, values: list[str]) -> dict[str, Any]:
    # An element of an array field equals any of them.
    return {path: values[0]} if len(values) == 1 else {"$or": [{path: v} for v in values]}


def _statuses(value: str) -> set[str]:
    found = set()
    for item in _values("status", value):
        system, code = parse_token(item)
        if system not in (None, "", STATUS_SYSTEM) or code not in STATUSES:
            raise FhirError.of(
                Code.INVALID_PARAMETER,
                f"status must be current, superseded or entered-in-error (system {STATUS_SYSTEM}).",
                "status",
            )
        found.add(code)
    return found


def _ods(value: str) -> str:
    return value.rpartition("|")[2].rstrip("/").rpartition("/")[2]


def _date(name: str, value: str) -> dict[str, Any]:
    low, high = DATE_FIELDS[name]
    return dates.range_filter(dates.parse(value, name), low, high)


def _paging(search: Search, name: str, value: str) -> None:
    try:
        number = int(value)
    except ValueError:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must be a whole number.", name) from None
    if number < 0:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must not be negative.", name)
    if name == "_offset":
        if number > MAX_OFFSET:  # deeper paging is an export; and SQLite integers end at 2**63 - 1
            raise FhirError.of(Code.INVALID_PARAMETER, f"_offset must be 0..{MAX_OFFSET}.", "_offset")
        search.offset = number
    elif number == 0:
        search.summary_count = True
    else:
        search.count = min(number, MAX_PAGE)  # FHIR: a server may return fewer than asked, silently
