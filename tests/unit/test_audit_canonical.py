"""The chain writes a record's canonical text with orjson: byte for byte the standard library's canonical
text (what ``$verify`` recomputes for a record not stored as hashed, as on MongoDB) for every JSON value
without a float: checked against ``json.dumps`` on generated values and on the audit service's own records."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lhcie.bench.audit import _trip_records
from services.audit.chain import _body
from services.audit.verifying import canonical, orjson_canonical

# What JSON holds, floats aside: any text (surrogates cannot be UTF-8), 64-bit integers either side.
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text()
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=40
)


@settings(max_examples=500)
@given(values)
def test_orjsons_canonical_text_is_the_standard_librarys_for_any_value_without_a_float(value: Any) -> None:
    assert orjson_canonical(value) == canonical(value)


def test_an_audit_record_is_hashed_over_the_same_text_as_before() -> None:
    for resource, index in _trip_records():
        record = {**index, "seq": 7, "event_id": "e", "prev_hash": "0" * 64, "resource": {**resource, "id": "7"}}
        text, doc = _body(record)
        assert text.encode() == canonical(record) and doc is record
        assert hashlib.sha256(text.encode()).hexdigest() == hashlib.sha256(canonical(doc)).hexdigest()


def test_a_record_holding_what_a_read_would_not_return_as_it_is_is_hashed_as_it_reads() -> None:
    # A datetime or an enum is text once stored: the hash is over that text, and that is what comes back.
    from datetime import UTC, datetime
    from enum import StrEnum

    class Kind(StrEnum):
        READ = "read"

    record = {"seq": 1, "at": datetime(2026, 12, 2, 20, 0, tzinfo=UTC), "kind": Kind.READ}
    text, doc = _body(record)
    assert (
        doc
        == json.loads(json.dumps(record, default=str))
        == {"seq": 1, "at": "2026-12-02 20:00:00+00:00", "kind": "read"}
    )
    assert text.encode() == canonical(doc)
