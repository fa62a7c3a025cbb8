"""FHIR date search over stored ranges (R4 §3.1.1.4.6 and §3.1.1.5.2): intake's dates and Periods.

A second parser beside ``shared/fhir/dates.py`` (instants, notification's ``sent``): both were written at
once on separate branches; folding them into one module is issue 15's remaining work.

Both sides of a date comparison are ranges: the search value ``2026-03`` means the whole of March, and a
stored ``Period`` (or a day, or an instant to the second) is a range too, open-ended where the period has
no start or end. Prefixes compare the two ranges as the specification says, which is what makes
``period=ge2026-03-01`` find a document whose service period began in February and runs on into March.

Ranges are half-open ``[low, high)`` and written as fixed-width UTC text (``key``: ``YYYY-MM-DDThh:mm:ss.ffffffZ``), so that a
document store can compare them as strings. Two ways to use a parsed ``DateSearch``:

- ``matches(search, target)`` in Python;
- ``condition(search, low_field, high_field)`` as a store filter (MongoDB-style, ``$and``/``$or`` on fields
  holding ``key(low)`` and ``key(high)``, which ``target_keys`` computes when the resource is written).

Repeated parameters (``date=ge2026-01-01&date=le2026-06-30``) are ANDed: ``parse_all`` takes every value.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
LOWEST = datetime(1, 1, 1, tzinfo=UTC)
HIGHEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
_DATE = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class InvalidDate(ValueError):
    """A search value or a stored date that is not a FHIR date, dateTime or instant."""


@dataclass(frozen=True)
class DateRange:
    low: datetime  # inclusive
    high: datetime  # exclusive

    def keys(self) -> tuple[str, str]:
        return key(self.low), key(self.high)


@dataclass(frozen=True)
class DateSearch:
    prefix: str
    range: DateRange


def key(moment: datetime) -> str:
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"


def date_range(value: str) -> DateRange:
    """The range a FHIR date, dateTime or instant stands for: a year, month, day, minute, second or instant.

    A time without a zone is read as UTC (FHIR leaves it to the server; the exchange runs in UTC).
    """
    match = _DATE.match(value.strip())
    if not match:
        raise InvalidDate(value)
    part = match.groupdict()
    try:
        year = int(part["year"])
        if part["month"] is None:
            return DateRange(_utc(year, 1, 1), _utc(year + 1, 1, 1) if year < 9999 else HIGHEST)
        month = int(part["month"])
        if part["day"] is None:
            low = _utc(year, month, 1)
            return DateRange(low, low + timedelta(days=calendar.monthrange(year, month)[1]))
        day = int(part["day"])
        if part["hour"] is None:
            low = _utc(year, month, day)
            return DateRange(low, low + timedelta(days=1))
        zone = part["zone"] or "Z"
        offset = timedelta(0) if zone == "Z" else (1 if zone[0] == "+" else -1) * timedelta(
            hours=int(zone[1:3]), minutes=int(zone[4:6]))
        low = datetime(year, month, day, int(part["hour"]), int(part["minute"]), int(part["second"] or 0),
                       tzinfo=UTC) - offset
        if part["fraction"]:
            low += timedelta(microseconds=round(float(part["fraction"]) * 1_000_000))
            return DateRange(low, low + timedelta(microseconds=1))
        return DateRange(low, low + (timedelta(seconds=1) if part["second"] else timedelta(minutes=1)))
    except (ValueError, OverflowError):
        raise InvalidDate(value) from None


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def period_range(start: str | None, end: str | None) -> DateRange | None:
    """A Period as a range: a missing start or end is open. ``None`` when the Period is empty."""
    if not start and not end:
        return None
    low = date_range(start).low if start else LOWEST
    high = date_range(end).high if end else HIGHEST
    return DateRange(low, max(high, low))


def target_keys(start: str | None, end: str | None = None, *, point: bool = False) -> tuple[str, str] | None:
    """The (low, high) keys a store holds for a date (``point``: one value) or a Period; ``None`` if absent."""
    if point:
        return date_range(start).keys() if start else None
    found = period_range(start, end)
    return found.keys() if found else None


def parse(raw: str) -> DateSearch:
    prefix, value = (raw[:2], raw[2:]) if raw[:2] in PREFIXES else ("eq", raw)
    return DateSearch(prefix, date_range(value))


def parse_all(values: list[str]) -> list[DateSearch]:
    """Every value of a repeated parameter, to be ANDed (``date=ge2026-01-01&date=le2026-06-30``)."""
    return [parse(raw) for raw in values]


def _approximate(search: DateRange, now: datetime) -> DateRange:
    # "ap": within 10% of the distance between the value and now, and at least a day either side.
    gap = abs(now - search.low)
    slack = max(gap / 10, timedelta(days=1))
    return DateRange(max(search.low - slack, LOWEST), min(search.high + slack, HIGHEST))


def matches(search: DateSearch, target: DateRange, *, now: datetime | None = None) -> bool:
    v, t = search.range, target
    result = {
        "eq": lambda: t.low >= v.low and t.high <= v.high,
        "ne": lambda: not (t.low >= v.low and t.high <= v.high),
        "gt": lambda: t.high > v.high,
        "lt": lambda: t.low < v.low,
        "ge": lambda: t.high > v.low,
        "le": lambda: t.low < v.high,
        "sa": lambda: t.low >= v.high,
        "eb": lambda: t.high <= v.low,
        "ap": lambda: (a := _approximate(v, now or datetime.now(UTC))) and t.low < a.high and t.high > a.low,
    }[search.prefix]
    return bool(result())


def condition(search: DateSearch, low_field: str, high_field: str, *, now: datetime | None = None) -> dict[str, Any]:
    """``matches`` as a store filter over fields holding a target's low and high keys.

    A resource without the date has neither field and matches no prefix (not even ``ne``).
    """
    low, high = search.range.keys()
    exists = {low_field: {"$exists": True}}
    return {
        "eq": lambda: {low_field: {"$gte": low}, high_field: {"$lte": high}},
        "ne": lambda: {"$and": [exists, {"$or": [{low_field: {"$lt": low}}, {high_field: {"$gt": high}}]}]},
        "gt": lambda: {high_field: {"$gt": high}},
        "lt": lambda: {low_field: {"$lt": low}},
        "ge": lambda: {high_field: {"$gt": low}},
        "le": lambda: {low_field: {"$lt": high}},
        "sa": lambda: {low_field: {"$gte": high}},
        "eb": lambda: {high_field: {"$lte": low}},
        "ap": lambda: (lambda a: {low_field: {"$lt": key(a.high)}, high_field: {"$gt": key(a.low)}})(
            _approximate(search.range, now or datetime.now(UTC))),
    }[search.prefix]()
