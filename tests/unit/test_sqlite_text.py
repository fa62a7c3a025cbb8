"""The SQLite adapter's stored text (orjson's) reads back as what the standard library's
``json.dumps(doc, default=str)`` wrote before, for any document: datetimes and the like, floats, and
integers past 64 bits (which orjson does not write) included."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store.sqlite import _text


@dataclass
class Point:
    x: int


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.datetimes(timezones=st.just(UTC))
    | st.dates()
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.builds(Point, st.integers())
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text() | st.integers(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=500)
@given(documents)
def test_a_stored_document_reads_back_as_the_standard_librarys_text_did(doc: Any) -> None:
    assert json.loads(_text(doc)) == json.loads(json.dumps(doc, separators=(",", ":"), default=str))


def test_what_json_has_no_type_for_is_stored_as_its_str_as_before() -> None:
    doc = {"at": datetime(2026, 12, 2, 20, 0, tzinfo=UTC), "on": date(2026, 12, 2), "p": Point(1), "d": Decimal("1.5")}
    assert json.loads(_text(doc)) == {
        "at": "2026-12-02 20:00:00+00:00",
        "on": "2026-12-02",
        "p": "Point(x=1)",
        "d": "1.5",
    }
    assert _text({"n": 2**64}) == '{"n":18446744073709551616}'  # past orjson's integers: the standard library's
