"""Without an exporter a span is only the trace context it passes on (shared/telemetry.py): a consumer's
or a request's span records nothing, but the events and logs of the work done under it carry the same
trace, under a span id of its own, with the parent's flags (a new trace is sampled, as the SDK's default)."""

from __future__ import annotations

import pytest

from shared import telemetry

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture(autouse=True)
def not_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry.configure("probe")
    monkeypatch.setattr(telemetry, "_exporting", False)


@pytest.mark.parametrize("parent", [PARENT, UNSAMPLED])
def test_a_span_passes_its_parents_trace_on_under_a_span_id_of_its_own(parent: str) -> None:
    with telemetry.span_from_headers("q process", parent, "vendor=1") as span:
        assert not span.is_recording()
        traceparent, tracestate = telemetry.current_trace_headers()
        assert telemetry.current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", parent[-2:])
    assert span_id != "b7ad6b7169203331"
    assert tracestate == "vendor=1"
    assert telemetry.current_trace_headers() == (None, None)  # detached at the end


def test_without_a_parent_a_span_starts_a_sampled_trace() -> None:
    seen: set[str] = set()
    for _ in range(3):
        with telemetry.span_from_headers("GET /x", None):
            traceparent, _ = telemetry.current_trace_headers()
        assert traceparent is not None
        _, trace_id, _, flags = traceparent.split("-")
        assert int(flags, 16) & 1  # sampled
        seen.add(trace_id)
    assert len(seen) == 3
