"""The HTTP edge shared by every service: app assembly, middlewares, errors, health and metadata."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from shared import telemetry
from shared.auth import Caller, EmbeddedIssuer, Forbidden, TokenVerifier, Unauthorized, load_jwks
from shared.bus import Bus, open_bus
from shared.config import Settings
from shared.fhir.errors import Code, FhirError, Issue, operation_outcome
from shared.keys import CALLER, REQUEST_ID, RUNTIME
from shared.media import MediaMismatch, safe_xml
from shared.objects import ObjectStore, open_object_store
from shared.service import Ports, Runtime, ServiceSpec
from shared.store import StoreUnavailable
from shared.topology import ALL_QUEUES

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_TYPES = {FHIR_JSON, "application/json"}
PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/fhir/metadata", "/.well-known/jwks.json",
                # The console page holds no data; the SSE stream checks its own signed query token.
                "/console/", "/alerts/stream"}
# The agreements console's HTML shells: they carry no data; their script calls the API with a token.
PUBLIC_PATHS |= {"/dcc/", "/patient/"}

REQUESTS = Counter("lhcie_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("lhcie_http_request_seconds", "HTTP request duration", ["route", "method"])


def fhir_response(
    resource: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(resource, separators=(",", ":")).encode(),
        status=status,
        content_type=FHIR_JSON,
        headers=headers,
    )


def caller(request: web.Request) -> Caller:
    """The verified caller; raises ``Unauthorized`` (401) when the token is missing or invalid."""
    verifier = request.app[RUNTIME].verifier
    if verifier is None:
        raise Unauthorized("token verification is not configured")
    found = request.get(CALLER)
    if found is None:
        found = request[CALLER] = verifier.verify(request.headers.get("Authorization"))
    return found


async def read_json(
    request: web.Request,
    *,
    resource_type: str | None = None,
    xml_model: Any = None,
    hint: str = "",
) -> dict[str, Any]:
    """The request body as a FHIR resource in JSON form: 415 for a wrong media type, 400 for bad JSON or
    XML, 413 when too large. ``xml_model`` (a fhir.resources class) also accepts ``application/fhir+xml``."""
    media = request.content_type
    accepted = JSON_TYPES | ({FHIR_XML} if xml_model is not None else set())
    if media not in accepted:
        wanted = f"{FHIR_JSON} or {FHIR_XML}" if xml_model is not None else FHIR_JSON
        raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, f"Send {wanted}{hint}; got {media or 'none'}.")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise FhirError.of(Code.TOO_LARGE, "The request body exceeds the size limit.") from None
    if media == FHIR_XML:
        data = _from_xml(body, xml_model)
    else:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FhirError.of(Code.MALFORMED_JSON) from None
    if not isinstance(data, dict):
        raise FhirError.of(Code.MALFORMED_REQUEST, "The body must be a JSON object (a FHIR resource).")
    if resource_type and data.get("resourceType") != resource_type:
        raise FhirError.of(
            Code.INVALID_RESOURCE, f"Expected a {resource_type} resource.", "resourceType"
        )
    return data


def _from_xml(body: bytes, model: Any) -> dict[str, Any]:
    try:
        safe_xml(body)  # no DTD: no entity expansion, no external entities, before any parser sees it
        return model.model_validate_xml(body).model_dump(mode="json", by_alias=True, exclude_none=True)
    except MediaMismatch as exc:
        raise FhirError.of(Code.MALFORMED_REQUEST, f"The XML body is not accepted: {exc}.") from None
    except Exception:  # the FHIR XML parser can fail in many ways on hostile input; none is a 500
        raise FhirError.of(Code.MALFORMED_REQUEST, "The XML body is not a valid FHIR resource of the expected "
                           "type.") from None


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]


def _error_response(error: FhirError) -> web.Response:
    return fhir_response(operation_outcome(error.issues), status=error.status or 500, headers=error.headers)


_HTTP_CODES = {
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}


@web.middleware
async def edge_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Request id, server span, metrics, and every error turned into an OperationOutcome."""
    rid = request.headers.get("X-Request-Id", "").strip()[:64] or str(uuid.uuid4())
    request[REQUEST_ID] = rid
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    started = time.perf_counter()
    with telemetry.span_from_headers(
        f"{request.method} {route}",
        request.headers.get("traceparent"),
        request.headers.get("tracestate"),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route},
    ) as span:
        try:
            if request.path not in PUBLIC_PATHS and not request.path.startswith("/console/static"):
                caller(request)
            response = await handler(request)
        except FhirError as exc:
            response = _error_response(exc)
        except Unauthorized as exc:
            response = _error_response(
                FhirError.of(Code.UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": 'Bearer realm="lhcie"'})
            )
        except Forbidden as exc:
            response = _error_response(FhirError.of(Code.FORBIDDEN, str(exc)))
        except StoreUnavailable:
            response = _error_response(FhirError.of(Code.UNAVAILABLE, headers={"Retry-After": "5"}))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, Code.MALFORMED_REQUEST)
            response = _error_response(FhirError([Issue(code)], status=exc.status))
        except Exception:
            reference = str(uuid.uuid4())
            log.exception("http.unhandled reference=%s route=%s", reference, route, extra={"code": "HTTP500"})
            response = _error_response(
                FhirError.of(Code.INTERNAL, f"An unexpected error occurred (reference {reference}).")
            )
        span.set_attribute("http.response.status_code", response.status)
    response.headers["X-Request-Id"] = rid
    REQUESTS.labels(route, request.method, str(response.status)).inc()
    LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    failing = await request.app[RUNTIME].health.failing()
    if failing:
        return fhir_response(
            operation_outcome([Issue(Code.UNAVAILABLE, f"not ready: {', '.join(failing)}")]),
            status=503,
            headers={"Retry-After": "5"},
        )
    return web.json_response({"status": "ready", "services": list(request.app[RUNTIME].services)})


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def _metadata_handler(specs: Sequence[ServiceSpec]) -> Any:
    resources = [entry for spec in specs for entry in spec.capability]
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "software": {"name": "LHCIE exchange", "version": "0.1.0"},
        "implementation": {"description": "London Health & Care Information Exchange: " + ", ".join(s.name for s in specs)},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "description": "Bearer JWT carrying the caller's ODS code, role and SMART v2 scopes",
                },
                "resource": resources,
            }
        ],
    }

    async def metadata(request: web.Request) -> web.Response:
        return fhir_response(statement)

    return metadata


async def jwks(request: web.Request) -> web.Response:
    issuer = request.app[RUNTIME].issuer
    if issuer is None:
        raise FhirError.of(Code.NOT_FOUND, "This deployment does not issue tokens.")
    return web.json_response(issuer.jwks())


def _ports_context(runtime: Runtime) -> Any:
    async def ports(app: web.Application) -> AsyncIterator[None]:
        settings = runtime.settings
        if settings.jwks_url:
            from shared.auth import TokenVerifier as _TV

            runtime.verifier = _TV(
                await load_jwks(settings.jwks_url), issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )
        else:
            runtime.issuer = EmbeddedIssuer(
                settings.data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )
            runtime.verifier = TokenVerifier(
                runtime.issuer.jwks(), issuer=settings.jwt_issuer, audience=settings.jwt_audience
            )
        await runtime.ports.bus.start()
        await runtime.ports.bus.declare(ALL_QUEUES)
        await runtime.ports.objects.start()
        runtime.health.add("bus", runtime.ports.bus.is_healthy)
        runtime.health.add("objects", runtime.ports.objects.is_healthy)
        yield
        await runtime.ports.objects.close()
        await runtime.ports.bus.close()

    return ports


def open_ports(settings: Settings, name: str) -> Ports:
    return Ports(bus=open_bus(settings, name=name), objects=open_object_store(settings))


def build_app(
    settings: Settings,
    specs: Sequence[ServiceSpec],
    *,
    ports: Ports | None = None,
    bus: Bus | None = None,
    objects: ObjectStore | None = None,
) -> web.Application:
    """One aiohttp app serving ``specs`` on the shared URL space."""
    name = "+".join(s.name for s in specs)
    telemetry.configure(f"lhcie-{name}" if len(specs) == 1 else "lhcie")
    ports = ports or Ports(
        bus=bus or open_bus(settings, name=f"lhcie-{name}"),
        objects=objects or open_object_store(settings),
    )
    app = web.Application(middlewares=[edge_middleware], client_max_size=settings.max_inline_bytes * 2)
    runtime = Runtime(settings=settings, ports=ports, services=tuple(s.name for s in specs))
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_ports_context(runtime))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/fhir/metadata", _metadata_handler(specs))
    app.router.add_get("/.well-known/jwks.json", jwks)
    for spec in specs:
        spec.install(app)
    return app
