"""FHIR date search (R4 search.html, "date"): one parser and one set of matching rules for every service.

Both sides of a date search are ranges of time. A value written to some precision stands for all of it
(``2013-01-14`` is 00:00 on the 14th up to, not including, 00:00 on the 15th); an instant is a point,
here the one microsecond it names; a Period is its own bounds, open where one is missing. The prefix says
how the target's range must relate to the search value's, and a parameter given more than once
(``date=ge2026-01-01&date=le2026-01-31``) matches only what every one of its values matches.

Ranges are half-open, ``[start, end)``, in UTC; ``None`` is an open end. A date without a time, or a
time without a zone, is read in ``zone`` (UTC unless the caller says otherwise).

Two ways to put the rules to a document store: ``instant_filter`` for a field holding one instant
(notification's ``sent``), and ``range_filter`` for a date or Period kept as the pair of its bounds
(intake's ``date``, ``period``, ``_lastUpdated``), each bound written by ``key`` as fixed-width UTC text so
that the store compares them as strings (``stored_keys`` computes the pair when the resource is written).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from shared.fhir.errors import Code, FhirError

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# The width of an instant: the finest step a datetime holds.
TICK = timedelta(microseconds=1)
# ``ap``: the spec's recommendation, a tenth of the distance between now and the value.
APPROXIMATELY = 0.1

_VALUE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    # A '+' left unencoded in a query string arrives as a space.
    r"(?P<zone>Z|[+\- ]\d{2}:\d{2})?)?)?)?$"
)


class BadDate(ValueError):
    """Not a FHIR date, dateTime or instant, or not a real one (2026-02-30)."""


@dataclass(frozen=True)
class Range:
    start: datetime | None  # inclusive; None: since ever
    end: datetime | None  # exclusive; None: for ever

    @classmethod
    def instant(cls, at: datetime) -> Range:
        at = _utc(at, UTC)
        return cls(at, at + TICK)

    @classmethod
    def period(cls, start: str | None, end: str | None, *, zone: tzinfo = UTC) -> Range:
        """A FHIR Period: from the first moment of ``start`` to the last of ``end`` (2026-03 ends with March)."""
        return cls(
            value_range(start, zone=zone).start if start else None, value_range(end, zone=zone).end if end else None
        )

    def contains(self, other: Range) -> bool:
        return _le(self.start, other.start, low=True) and _le(other.end, self.end, low=False)

    def overlaps(self, other: Range) -> bool:
        return _lt(self.start, other.end) and _lt(other.start, self.end)


def _le(a: datetime | None, b: datetime | None, *, low: bool) -> bool:
    """a <= b, where None is minus infinity for lower bounds and plus infinity for upper ones."""
    if a is None or b is None:
        return (a is None) if low else (b is None)
    return a <= b


def _lt(start: datetime | None, end: datetime | None) -> bool:
    """start < end for a lower and an upper bound (open ends always satisfy it)."""
    return start is None or end is None or start < end


def _utc(at: datetime, zone: tzinfo) -> datetime:
    return (at.replace(tzinfo=zone) if at.tzinfo is None else at).astimezone(UTC)


def value_range(text: str, *, zone: tzinfo = UTC) -> Range:
    """The range a FHIR date, dateTime or instant written to its precision stands for; BadDate if it is not one."""
    m = _VALUE.match(text)
    if not m:
        raise BadDate(text)
    g = m.groupdict()
    year, month, day = int(g["year"]), int(g["month"] or 1), int(g["day"] or 1)
    try:
        if g["zone"]:
            zone = UTC if g["zone"] == "Z" else datetime.strptime(g["zone"].replace(" ", "+"), "%z").tzinfo or UTC
        if g["hour"] is None:
            start = datetime(year, month, day)
            if g["day"]:
                end: datetime | None = _plus(start, timedelta(days=1))
            elif g["month"]:
                end = datetime(year + month // 12, month % 12 + 1, 1) if year < 9999 or month < 12 else None
            else:
                end = datetime(year + 1, 1, 1) if year < 9999 else None
        else:
            fraction = (g["fraction"] or "")[:6]
            start = datetime(
                year,
                month,
                day,
                int(g["hour"]),
                int(g["minute"]),
                int(g["second"] or 0),
                int(fraction.ljust(6, "0")) if fraction else 0,
            )
            if g["fraction"]:
                step = timedelta(microseconds=10 ** (6 - len(fraction)))
            else:
                step = timedelta(seconds=1) if g["second"] else timedelta(minutes=1)
            end = _plus(start, step)
    except (ValueError, OverflowError):
        raise BadDate(text) from None
    return Range(_utc(start, zone), _utc(end, zone) if end else None)


def _plus(at: datetime, step: timedelta) -> datetime | None:
    try:
        return at + step
    except OverflowError:
        return None


@dataclass(frozen=True)
class DateSearch:
    """One value of a date search parameter: its prefix and the range it names (widened for ``ap``)."""

    prefix: str
    value: Range

    def matches(self, target: Range) -> bool:
        """The spec's rule for this prefix, between the search value's range and the target's."""
        s, t = self.value, target
        above = _lt(s.end, t.end) if s.end is not None else False  # the range after the value meets the target
        below = _lt(t.start, s.start) if s.start is not None else False  # the range before it meets the target
        match self.prefix:
            case "eq":
                return s.contains(t)
            case "ne":
                return not s.contains(t)
            case "gt":
                return above
            case "lt":
                return below
            case "ge":
                return above or s.contains(t)
            case "le":
                return below or s.contains(t)
            case "sa":  # wholly after the value
                return s.end is not None and t.start is not None and t.start >= s.end
            case "eb":  # wholly before it
                return s.start is not None and t.end is not None and t.end <= s.start
            case "ap":
                return s.overlaps(t)
        raise AssertionError(self.prefix)

    def instants(self) -> list[Range]:
        """The instants this value matches, as disjoint ranges (what a store query on an instant field needs)."""
        s = self.value
        match self.prefix:
            case "eq" | "ap":
                return [s]
            case "ne":
                return [r for r in (Range(None, s.start), Range(s.end, None)) if r.start or r.end]
            case "gt" | "sa":
                return [Range(s.end, None)] if s.end else []
            case "lt" | "eb":
                return [Range(None, s.start)] if s.start else []
            case "ge":
                return [Range(s.start, None)]
            case "le":
                return [Range(None, s.end)]
        raise AssertionError(self.prefix)


def parse(raw: str, name: str = "date", *, now: datetime | None = None, zone: tzinfo = UTC) -> DateSearch:
    """One ``[prefix]value``; a FhirError (400, naming the parameter) if it is not a FHIR date search value."""
    prefix, text = (raw[:2], raw[2:]) if raw[:2] in PREFIXES else ("eq", raw)
    try:
        value = value_range(text, zone=zone)
    except BadDate:
        raise FhirError.of(
            Code.INVALID_PARAMETER,
            f"{name} must be a FHIR date or dateTime, optionally prefixed "
            f"({'/'.join(PREFIXES)}), e.g. {name}=ge2026-11-01.",
            name,
        ) from None
    if prefix == "ap":
        now = now or datetime.now(UTC)
        value = Range(
            value.start - abs(now - value.start) * APPROXIMATELY if value.start else None,
            value.end + abs(now - value.end) * APPROXIMATELY if value.end else None,
        )
    return DateSearch(prefix, value)


def parse_all(
    values: Iterable[str], name: str = "date", *, now: datetime | None = None, zone: tzinfo = UTC
) -> tuple[DateSearch, ...]:
    """Every value of a repeated parameter; the target must match them all."""
    return tuple(parse(v, name, now=now, zone=zone) for v in values)


def matches_all(searches: Sequence[DateSearch], target: Range) -> bool:
    return all(s.matches(target) for s in searches)


def instants(searches: Sequence[DateSearch]) -> list[Range]:
    """The instants every search value matches (the AND of a repeated parameter), as disjoint ranges."""
    allowed = [Range(None, None)]
    for search in searches:
        allowed = [cut for a in allowed for b in search.instants() if (cut := _intersection(a, b)) is not None]
    return allowed


def _intersection(a: Range, b: Range) -> Range | None:
    starts = [s for s in (a.start, b.start) if s is not None]
    ends = [e for e in (a.end, b.end) if e is not None]
    cut = Range(max(starts) if starts else None, min(ends) if ends else None)
    return cut if _lt(cut.start, cut.end) else None


def instant_filter(field: str, searches: Sequence[DateSearch], render: Callable[[datetime], Any]) -> dict[str, Any]:
    """A document-store filter on ``field``, an instant stored as ``render(datetime)`` whose order is time
    order, for the AND of ``searches``; empty when they admit every instant."""
    ranges = instants(searches)

    def condition(r: Range) -> dict[str, Any]:
        bounds = {}
        if r.start is not None:
            bounds["$gte"] = render(r.start)
        if r.end is not None:
            bounds["$lt"] = render(r.end)
        return bounds

    if not ranges:
        return {field: {"$in": []}}  # contradictory values (ge2026&lt2025): nothing matches
    if len(ranges) == 1:
        bounds = condition(ranges[0])
        return {field: bounds} if bounds else {}
    return {"$or": [{field: condition(r)} for r in ranges]}


# A date or Period kept in a store as the pair of its bounds: open ends as the first and last instants.
LOWEST = datetime(1, 1, 1, tzinfo=UTC)
HIGHEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def key(moment: datetime) -> str:
    """An instant as fixed-width UTC text (``YYYY-MM-DDThh:mm:ss.ffffffZ``): string order is time order."""
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"


def keys(r: Range) -> tuple[str, str]:
    """The (low, high) keys a store holds for a range; an open end becomes the first or last instant."""
    return key(r.start or LOWEST), key(r.end or HIGHEST)


def stored_keys(start: str | None, end: str | None = None, *, point: bool = False) -> tuple[str, str] | None:
    """The keys for a date (``point``: one value) or a Period; ``None`` if absent; BadDate if malformed."""
    if point:
        return keys(value_range(start)) if start else None
    return keys(Range.period(start, end)) if start or end else None


def range_filter(search: DateSearch, low_field: str, high_field: str) -> dict[str, Any]:
    """``DateSearch.matches`` as a store filter over the fields holding a target's ``keys``.

    A resource without the date has neither field and matches no prefix (not even ``ne``).
    """
    low, high = keys(search.value)
    within = {low_field: {"$gte": low}, high_field: {"$lte": high}}
    match search.prefix:
        case "eq":
            return within
        case "ne":
            return {
                "$and": [
                    {low_field: {"$exists": True}},
                    {"$or": [{low_field: {"$lt": low}}, {high_field: {"$gt": high}}]},
                ]
            }
        case "gt":
            return {high_field: {"$gt": high}}
        case "lt":
            return {low_field: {"$lt": low}}
        case "ge":
            return {"$or": [{high_field: {"$gt": high}}, within]}
        case "le":
            return {"$or": [{low_field: {"$lt": low}}, within]}
        case "sa":
            return {low_field: {"$gte": high}}
        case "eb":
            return {high_field: {"$lte": low}}
        case "ap":
            return {low_field: {"$lt": high}, high_field: {"$gt": low}}
    raise AssertionError(search.prefix)
