"""FHIR date search (shared/fhir/dates.py) against the examples of the FHIR specification (R4 search.html,
"date") and the parameter combinations the services take."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.fhir import dates
from shared.fhir.dates import Range
from shared.fhir.errors import FhirError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def instant(text: str) -> Range:
    return Range.instant(at(text))


def day(text: str) -> Range:
    return dates.value_range(text)


def matches(raw: str, target: Range) -> bool:
    return dates.parse(raw).matches(target)


# -- the specification's examples, one per row of its table --


def test_eq_a_day_contains_every_time_of_that_day_only() -> None:
    assert matches("eq2013-01-14", instant("2013-01-14T00:00"))
    assert matches("eq2013-01-14", instant("2013-01-14T10:00"))
    assert not matches("eq2013-01-14", instant("2013-01-15T00:00"))
    assert matches("2013-01-14", instant("2013-01-14T10:00"))  # no prefix is eq


def test_ne_is_every_time_the_day_does_not_contain() -> None:
    assert matches("ne2013-01-14", instant("2013-01-15T00:00"))
    assert not matches("ne2013-01-14", instant("2013-01-14T00:00"))
    assert not matches("ne2013-01-14", instant("2013-01-14T10:00"))


def test_lt_and_gt_a_time_include_the_day_around_it() -> None:
    # 14 Jan 2013 has a part before 10am and a part after it.
    assert matches("lt2013-01-14T10:00", day("2013-01-14"))
    assert matches("gt2013-01-14T10:00", day("2013-01-14"))
    assert not matches("lt2013-01-14T00:00", day("2013-01-14"))
    assert not matches("gt2013-01-14T23:59", day("2013-01-14T23:58"))  # that minute ends as 23:59 begins


def test_ge_includes_a_period_that_may_run_past_the_value() -> None:
    onwards = Range.period("2013-01-21", None)  # "from 21-Jan 2013 onwards"
    assert matches("ge2013-03-14", onwards)
    assert matches("le2013-03-14", onwards)  # it also includes times before 14-Mar
    assert not matches("sa2013-03-14", onwards)  # it does not start after 14-Mar
    assert not matches("eb2013-03-14", onwards)  # nor end before it


# -- partial dates are ranges --


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2000", "2000-01-01T00:00", "2001-01-01T00:00"),
        ("2000-04", "2000-04-01T00:00", "2000-05-01T00:00"),
        ("2000-12", "2000-12-01T00:00", "2001-01-01T00:00"),
        ("2000-02-29", "2000-02-29T00:00", "2000-03-01T00:00"),
        ("2000-04-04T10:00Z", "2000-04-04T10:00", "2000-04-04T10:01"),
        ("2000-04-04T10:00:30Z", "2000-04-04T10:00:30", "2000-04-04T10:00:31"),
        ("2000-04-04T10:00:30.5Z", "2000-04-04T10:00:30.500000", "2000-04-04T10:00:30.600000"),
        ("2000-04-04T10:00+01:00", "2000-04-04T09:00", "2000-04-04T09:01"),
        ("2000-04-04T10:00 01:00", "2000-04-04T09:00", "2000-04-04T09:01"),  # a '+' sent unencoded
    ],
)
def test_a_value_stands_for_all_of_its_precision(text: str, start: str, end: str) -> None:
    assert dates.value_range(text) == Range(at(start), at(end))


def test_a_date_without_a_zone_is_read_in_the_zone_given() -> None:
    london_summer = timezone(timedelta(hours=1))
    assert dates.value_range("2026-07-01", zone=london_summer) == Range(at("2026-06-30T23:00"), at("2026-07-01T23:00"))


# -- periods: overlap --


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("eq2013-02", False),  # February does not contain a period running into March
        ("ge2013-02-01", True),
        ("le2013-02-11", True),
        ("le2013-02-01", False),
        ("gt2013-03-31", False),
        ("lt2013-02-10", False),  # nothing of it comes before the 10th
        ("sa2013-02-09", True),
        ("sa2013-02-10", False),
        ("eb2013-03-16", True),
        ("eb2013-03-15", False),
        ("ne2013-02", True),
        ("eq2013", True),
        ("ap2013-03-01", True),
    ],
)
def test_a_period_is_matched_by_how_the_ranges_relate(raw: str, expected: bool) -> None:
    period = Range.period("2013-02-10", "2013-03-15")  # the whole of 15 March is in it
    assert dates.parse(raw, now=at("2013-03-20T00:00")).matches(period) is expected


def test_an_open_period_end_is_later_than_any_date() -> None:
    still_running = Range.period("2020-05-01", None)
    assert matches("gt2099-01-01", still_running)
    assert not matches("lt2020-05-01", still_running)
    assert matches("lt2020-05-02", still_running)


# -- repeated parameters: AND --


def test_a_range_given_as_two_values_is_both_bounds() -> None:
    # "all the procedures in a patient compartment that occurred over a 2-year period"
    both = dates.parse_all(["ge2010-01-01", "le2011-12-31"])
    assert dates.matches_all(both, instant("2010-01-01T00:00"))
    assert dates.matches_all(both, instant("2011-12-31T23:59:59"))
    assert not dates.matches_all(both, instant("2009-12-31T23:59:59"))
    assert not dates.matches_all(both, instant("2012-01-01T00:00"))
    assert dates.instants(both) == [Range(at("2010-01-01T00:00"), at("2012-01-01T00:00"))]


def test_the_order_of_repeated_values_does_not_matter() -> None:
    one = dates.instants(dates.parse_all(["ge2026-11-05", "ge2026-11-01"]))
    other = dates.instants(dates.parse_all(["ge2026-11-01", "ge2026-11-05"]))
    assert one == other == [Range(at("2026-11-05T00:00"), None)]


def test_contradictory_values_match_nothing() -> None:
    searches = dates.parse_all(["ge2026-01-01", "lt2025-01-01"])
    assert dates.instants(searches) == []
    assert dates.instant_filter("sent", searches, str) == {"sent": {"$in": []}}


def test_ne_with_a_range_leaves_two_pieces_for_the_store() -> None:
    searches = dates.parse_all(["ge2026-11-01", "lt2026-12-01", "ne2026-11-15"])

    def render(d: datetime) -> str:
        return d.strftime("%Y-%m-%dT%H:%M")

    assert dates.instant_filter("sent", searches, render) == {
        "$or": [
            {"sent": {"$gte": "2026-11-01T00:00", "$lt": "2026-11-15T00:00"}},
            {"sent": {"$gte": "2026-11-16T00:00", "$lt": "2026-12-01T00:00"}},
        ]
    }
    assert dates.instant_filter("sent", (), render) == {}


@pytest.mark.parametrize("prefix", dates.PREFIXES)
def test_the_store_condition_and_the_rule_agree_on_every_instant(prefix: str) -> None:
    search = dates.parse(f"{prefix}2026-11-15", now=at("2026-12-25T00:00"))
    pieces = dates.instants([search])
    edges = [at("2026-11-15T00:00"), at("2026-11-16T00:00"), at("2026-11-10T12:00"), at("2026-11-20T12:00")]
    for edge in edges:
        for t in (edge - dates.TICK, edge, edge + dates.TICK):
            in_pieces = any((p.start is None or p.start <= t) and (p.end is None or t < p.end) for p in pieces)
            assert in_pieces is search.matches(Range.instant(t)), (prefix, t)


def test_ap_is_within_a_tenth_of_the_distance_from_now() -> None:
    # 100 days before now: ten days either side are near enough.
    search = dates.parse("ap2026-01-01", now=at("2026-04-11T00:00"))
    assert search.matches(instant("2025-12-23T00:00"))
    assert not search.matches(instant("2025-12-21T00:00"))
    assert search.matches(instant("2026-01-10T00:00"))


# -- nonsense is a 400 naming the parameter --


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "",
        "2026-02-30",
        "2026-13",
        "26-11-01",
        "ge2026-11-01T25:00",
        "2026-11-01T10",
        "xx2026",
        "2026-11-01 10:00",
        "2026-11-01T10:00+1",
    ],
)
def test_a_value_that_is_not_a_fhir_date_is_refused(raw: str) -> None:
    with pytest.raises(FhirError) as refused:
        dates.parse(raw, "sent")
    assert refused.value.status == 400
    assert [issue.to_fhir() for issue in refused.value.issues] == [
        {
            "severity": "error",
            "code": "value",
            "details": {
                "coding": [{"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "INVALID_PARAMETER"}]
            },
            "diagnostics": "sent must be a FHIR date or dateTime, optionally prefixed (eq/ne/gt/lt/ge/le/sa/eb/ap), "
            "e.g. sent=ge2026-11-01.",
            "expression": ["sent"],
        }
    ]
