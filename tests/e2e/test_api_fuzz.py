"""The public API fuzzed from its OpenAPI description (bounded: a few examples per operation, well under a
minute); ``make soak`` runs the same with many more (tests/soak/test_api_fuzz_soak.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.api import SCHEMA, Exchange, check, exchange  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e


@SCHEMA.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_request_is_answered_with_a_5xx(case, exchange: Exchange) -> None:
    check(case, exchange)
