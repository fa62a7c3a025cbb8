"""Audit search parameters turned into store filters (FHIR search syntax, validated: 400 on nonsense)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.audit.records import index_date
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import NHS_NUMBER, parse_token, valid_nhs_number

_DATE = re.compile(r"^(eq|ge|gt|le|lt)?(\d{4})(?:-(\d{2})(?:-(\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)?)?$")
OUTCOMES = ("0", "4", "8", "12")


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


def search_filter(query: Mapping[str, str], dates: Sequence[str]) -> dict[str, Any]:
    """``patient.identifier``, ``entity``, ``agent``, ``type``, ``subtype``, ``date``, ``outcome``,
    ``request-id`` as one filter on the records' search fields."""
    where: dict[str, Any] = {}
    if value := query.get("patient.identifier"):
        where["patient"] = patient_of(value)
    if entity := query.get("entity"):
        if entity.count("/") != 1 or not all(entity.split("/")):
            raise FhirError.of(Code.INVALID_PARAMETER, "entity must be Type/id.", "entity")
        where["entities"] = entity
    if agent := query.get("agent"):
        where["agent_orgs"] = agent.rpartition("|")[2]
    for name in ("type", "subtype"):
        if value := query.get(name):
            system, code = parse_token(value)
            where[f"{name}s"] = f"{system}|{code}" if system else code
    if outcome := query.get("outcome"):
        if outcome not in OUTCOMES:
            raise FhirError.of(Code.INVALID_PARAMETER, "outcome must be 0, 4, 8 or 12.", "outcome")
        where["outcome"] = outcome
    if request_id := query.get("request-id"):
        where["request_id"] = request_id
    if dates:
        where["date"] = date_filter(dates)
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
