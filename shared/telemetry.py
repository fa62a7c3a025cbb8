"""OpenTelemetry set-up and the W3C trace context carried in events.

Exporting is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific variable) is set; spans
are still created so the trace context flows through the bus either way.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def configure(service_name: str) -> None:
    """Install the tracer provider once per process (idempotent)."""
    global _provider
    if _provider is not None:
        return
    _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)


def shutdown() -> None:
    """Flush spans still queued (called on process exit)."""
    if _provider is not None:
        _provider.shutdown()


@functools.cache
def tracer(name: str) -> trace.Tracer:
    # One per name for the process: ``get_tracer`` builds a new one each call (a span per delivery paid for
    # it). Taken before ``configure`` it is OpenTelemetry's proxy, which follows the provider set later.
    return trace.get_tracer(name)


def current_trace_headers() -> tuple[str | None, str | None]:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextmanager
def span_from_headers(
    name: str,
    traceparent: str | None,
    tracestate: str | None = None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: dict[str, str] | None = None,
) -> Iterator[Span]:
    """A span whose parent is the remote context in ``traceparent`` (a consumer or an HTTP server)."""
    carrier = {k: v for k, v in (("traceparent", traceparent), ("tracestate", tracestate)) if v}
    parent = _propagator.extract(carrier)
    token = otel_context.attach(parent)
    try:
        with tracer("lhcie").start_as_current_span(name, kind=kind, attributes=attributes) as span:
            yield span
    finally:
        otel_context.detach(token)
