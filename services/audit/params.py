"""Audit search parameters turned into store filters (FHIR search syntax, validated: 400 on nonsense)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.audit.records import index_date
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import NHS_NUMBER, parse_token, valid_nhs_number

_DATE = re.compile(r"^(eq|ge|gt|le|lt)?(\d{4})(?:-(\d{2})(?:-(\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)?)?$")
OUTCOMES = ("0", "4", "8", "12")
_SEQUENCE = re.compile(r"^(eq|ne|gt|ge|lt|le)?(\d{1,18})$")
# One search names at most this many values of a parameter (a client batching document ids, say).
MAX_OR_VALUES = 100


def date_bounds(value: str, name: str = "date") -> tuple[str, datetime, datetime]:
    """A FHIR date(time) with optional prefix: the prefix and the instant range its precision covers."""
    m = _DATE.match(value)
    if not m:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} must be a FHIR date or dateTime, e.g. ge2026-11-01.", name)
    prefix, year, month, day, time_part = m.groups()
    try:
        if time_part:
            text = f"{year}-{month}-{day}{time_part}".replace("Z", "+00:00")
            lo = datetime.fromisoformat(text)
            lo = lo.replace(tzinfo=UTC) if lo.tzinfo is None else lo.astimezone(UTC)
            hi = lo + timedelta(seconds=1) if "." not in time_part else lo + timedelta(microseconds=1)
        elif day:
            lo = datetime(int(year), int(month), int(day), tzinfo=UTC)
            hi = lo + timedelta(days=1)
        elif month:
            lo = datetime(int(year), int(month), 1, tzinfo=UTC)
            hi = datetime(int(year) + (int(month) == 12), int(month) % 12 + 1, 1, tzinfo=UTC)
        else:
            lo, hi = datetime(int(year), 1, 1, tzinfo=UTC), datetime(int(year) + 1, 1, 1, tzinfo=UTC)
    except ValueError:
        raise FhirError.of(Code.INVALID_PARAMETER, f"{name} is not a real date.", name) from None
    return prefix or "eq", lo, hi


def date_filter(values: Sequence[str]) -> dict[str, str]:
    ops: dict[str, str] = {}
    for value in values:
        prefix, lo, hi = date_bounds(value)
        if prefix in ("eq", "ge"):
            ops["$gte"] = index_date(lo)
        if prefix == "gt":
            ops["$gte"] = index_date(hi)
        if prefix in ("eq", "le"):
            ops["$lt"] = index_date(hi)
        if prefix == "lt":
            ops["$lt"] = index_date(lo)
    return ops


def patient_of(value: str) -> str:
    system, code = parse_token(value)
    if system not in (None, NHS_NUMBER) or not valid_nhs_number(code):
        raise FhirError.of(
            Code.INVALID_PARAMETER,
            f"patient.identifier must be a valid NHS number ({NHS_NUMBER}|<number>).",
            "patient.identifier",
        )
    return code


def or_values(value: str) -> list[str]:
    """A search parameter's values: FHIR reads ``a,b`` as a OR b; ``\\,`` is a comma inside a value."""
    values: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            current.append(nxt if nxt in (",", "\\") else ch + nxt)
        elif ch == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(ch)
    values.append("".join(current))
    return values


def _entity(value: str) -> str:
    if value.count("/") != 1 or not all(value.split("/")):
        raise FhirError.of(Code.INVALID_PARAMETER, "entity must be Type/id (several: Type/id,Type/id).", "entity")
    return value


def _token(value: str) -> str:
    system, code = parse_token(value)
    return f"{system}|{code}" if system else code


def _outcome(value: str) -> str:
    if value not in OUTCOMES:
        raise FhirError.of(Code.INVALID_PARAMETER, "outcome must be 0, 4, 8 or 12.", "outcome")
    return value


def sequence_filter(values: Sequence[str]) -> dict[str, int]:
    """``sequence``, a FHIR number parameter on the record's place in the chain (its ``id``): ``gt``, ``ge``,
    ``lt``, ``le``, ``eq`` or ``ne`` and a whole number; repeated, every value applies (a range)."""
    ops: dict[str, int] = {}
    for value in values:
        m = _SEQUENCE.match(value)
        if not m:
            raise FhirError.of(
                Code.INVALID_PARAMETER,
                "sequence must be a record number with an optional prefix (gt, ge, lt, le, eq, ne), e.g. gt1200; "
                "repeat the parameter for a range.",
                "sequence",
            )
        prefix, number = m.group(1) or "eq", int(m.group(2))
        ops[f"${'gte' if prefix == 'ge' else 'lte' if prefix == 'le' else prefix}"] = number
    return ops


# Each parameter: the search field it filters and how one of its values becomes that field's value.
_MATCHES: dict[str, tuple[str, Callable[[str], str]]] = {
    "entity": ("entities", _entity),
    "agent": ("agent_orgs", lambda v: v.rpartition("|")[2]),
    "type": ("types", _token),
    "subtype": ("subtypes", _token),
    "outcome": ("outcome", _outcome),
    "request-id": ("request_id", lambda v: v),
}


def search_filter(query: Mapping[str, str], dates: Sequence[str], sequences: Sequence[str] = ()) -> dict[str, Any]:
    """``patient.identifier``, ``entity``, ``agent``, ``type``, ``subtype``, ``outcome``, ``request-id``
    (each with comma-separated values, any of which matches), ``date`` and ``sequence`` (prefixed, repeated
    for a range) as one filter on the records' search fields."""
    where: dict[str, Any] = {}
    if value := query.get("patient.identifier"):
        # One patient per search: the search's own record names the patient it looked at.
        if len(or_values(value)) > 1:
            raise FhirError.of(Code.INVALID_PARAMETER, "patient.identifier takes one patient.", "patient.identifier")
        where["patient"] = patient_of(value)
    either: list[dict[str, Any]] = []
    for name, (field, value_of) in _MATCHES.items():
        if not (raw := query.get(name)):
            continue
        values = list(dict.fromkeys(value_of(v) for v in or_values(raw)))
        if len(values) > MAX_OR_VALUES:
            raise FhirError.of(Code.INVALID_PARAMETER, f"{name} takes at most {MAX_OR_VALUES} values.", name)
        if len(values) == 1:
            where[field] = values[0]
        else:
            either.append({"$or": [{field: v} for v in values]})
    if either:
        # Under $and: the caller's scope may bring an $or of its own.
        where["$and"] = either
    if dates:
        where["date"] = date_filter(dates)
    if sequences:
        where["seq"] = sequence_filter(sequences)
    return where


def export_range(start: str | None, end: str | None) -> tuple[str, str]:
    """``start`` and ``end`` (both inclusive at their precision: end=2026-11-30 includes that day)."""
    if not start or not end:
        raise FhirError.of(
            Code.INVALID_PARAMETER,
            "Give both start and end, e.g. start=2026-11-01&end=2026-11-30.",
            "start" if not start else "end",
        )
    _, lo, _ = date_bounds(start, "start")
    _, _, hi = date_bounds(end, "end")
    if hi <= lo:
        raise FhirError.of(Code.INVALID_PARAMETER, "end must not be before start.", "end")
    return index_date(lo), index_date(hi)
