"""FHIR date search on stored ranges (shared/fhir/dates.py, range_filter): partial dates, Periods, every prefix,
the Python rule and the store filter saying the same."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from shared.fhir import dates
from shared.fhir.errors import FhirError
from shared.store.sqlite import compile_filter

NOW = datetime(2026, 6, 1, tzinfo=UTC)
# A service period from 10 February to 10 March 2026, and some other targets.
FEB_TO_MAR = dates.Range.period("2026-02-10", "2026-03-10")
OPEN_ENDED = dates.Range.period("2026-02-10T09:00:00Z", None)
ONE_DAY = dates.value_range("2026-03-05")


def test_partial_dates_are_ranges() -> None:
    assert dates.value_range("2026") == dates.Range(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert dates.value_range("2024-02").end == datetime(2024, 3, 1, tzinfo=UTC)
    assert dates.value_range("2026-03-05T10:00+01:00").start == datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
    assert dates.value_range("2026-03-05T10:00:07Z").end == datetime(2026, 3, 5, 10, 0, 8, tzinfo=UTC)
    for bad in ("2026-13", "26-01-01", "2026-02-30", "yesterday", "2026-01-01T25:00Z"):
        with pytest.raises(dates.BadDate):
            dates.value_range(bad)
        with pytest.raises(FhirError):
            dates.parse(f"ge{bad}")


CASES = [
    # (search, target, expected)
    ("ge2026-03-01", FEB_TO_MAR, True),  # the period overlaps March: the bug of comparing the start only
    ("le2026-03-01", FEB_TO_MAR, True),
    ("gt2026-03-01", FEB_TO_MAR, True),
    ("lt2026-03-01", FEB_TO_MAR, True),
    ("eq2026-03", FEB_TO_MAR, False),  # not contained in March
    ("2026", FEB_TO_MAR, True),
    ("ne2026-03", FEB_TO_MAR, True),
    ("ne2026", FEB_TO_MAR, False),
    ("sa2026-01-31", FEB_TO_MAR, True),
    ("sa2026-02-10", FEB_TO_MAR, False),
    ("eb2026-03-11", FEB_TO_MAR, True),
    ("eb2026-03-10", FEB_TO_MAR, False),  # ends during that day
    ("ge2026-03-11", FEB_TO_MAR, False),
    ("le2026-02-09", FEB_TO_MAR, False),
    ("ge2030-01-01", OPEN_ENDED, True),  # no end: runs on
    ("lt2026-02-10", OPEN_ENDED, False),
    ("eq2026-03-05", ONE_DAY, True),
    ("gt2026-03-05", ONE_DAY, False),
    ("ge2026-03-05", ONE_DAY, True),
    ("ap2026-05-30", ONE_DAY, False),
    ("ap2026-03-07", ONE_DAY, True),  # within 10% of the way to now
]


@pytest.mark.parametrize(("search", "target", "expected"), CASES)
def test_prefixes_compare_ranges(search: str, target: dates.Range, expected: bool) -> None:
    parsed = dates.parse(search, now=NOW)
    assert parsed.matches(target) is expected
    # The store filter says the same as the Python evaluation, on the same keys.
    low, high = dates.keys(target)
    sql, params = compile_filter(dates.range_filter(parsed, "lo", "hi"))
    con = sqlite3.connect(":memory:")
    con.execute("create table t (id text, doc text)")
    con.execute("insert into t values ('x', json(?))", (f'{{"lo": "{low}", "hi": "{high}"}}',))
    assert bool(con.execute(f"select count(*) from t where {sql}", params).fetchone()[0]) is expected


def test_a_target_without_the_date_matches_no_prefix() -> None:
    con = sqlite3.connect(":memory:")
    con.execute("create table t (id text, doc text)")
    con.execute("insert into t values ('x', json('{}'))")
    for prefix in dates.PREFIXES:
        sql, params = compile_filter(dates.range_filter(dates.parse(f"{prefix}2026-03-01", now=NOW), "lo", "hi"))
        assert con.execute(f"select count(*) from t where {sql}", params).fetchone()[0] == 0, prefix


def test_repeated_values_are_all_kept() -> None:
    both = dates.parse_all(["ge2026-03-01", "le2026-03-31"])
    assert [s.prefix for s in both] == ["ge", "le"]
    assert dates.matches_all(both, FEB_TO_MAR)
    assert not dates.matches_all(both, dates.value_range("2026-04-02"))
