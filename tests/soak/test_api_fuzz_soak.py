"""The public API fuzzed at length (make soak): many examples per operation, stateful inputs included."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.api import SCHEMA, Exchange, check, exchange  # noqa: F401 - the fixture

pytestmark = [pytest.mark.soak, pytest.mark.e2e]


@SCHEMA.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_is_answered_with_a_5xx_at_length(case, exchange: Exchange) -> None:
    check(case, exchange)
