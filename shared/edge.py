"""The HTTP edge shared by every service: app assembly, the one middleware (authentication, errors,
refusals recorded, metrics, tracing), health, metadata and the OpenAPI description."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from shared import correlation, fhir_format, openapi, telemetry
from shared.app_keys import CALLER, REQUEST_ID, RUNTIME
from shared.auth import EmbeddedIssuer, Forbidden, KeySet, TokenVerifier, Unauthorized
from shared.bus import Bus, open_bus
from shared.config import Settings, UnsafeSettings
from shared.context import ServiceContext
from shared.events import AccessDenied, Actor, Event, RoutingKey
from shared.fhir.errors import Code, FhirError, Issue, operation_outcome
from shared.files import private_dir
from shared.http import caller, fhir_response
from shared.lifecycle import CONTEXTS
from shared.objects import ObjectStore, open_object_store
from shared.service import Ports, Runtime, ServiceSpec
from shared.store import StoreUnavailable
from shared.topology import ALL_QUEUES

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset(op.path for op in openapi.EDGE if op.public)
REQUESTS = Counter("lhcie_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("lhcie_http_request_seconds", "HTTP request duration", ["route", "method"])


def server_options(settings: Settings) -> dict[str, Any]:
    """Options for the aiohttp server (AppRunner or TestServer): the connection-level timeouts."""
    # aiohttp arms its keep-alive timer when a connection opens and stops it only once a request's headers
    # are complete, so the keep-alive timeout is also the limit on sending headers (a slowloris client).
    return {"keepalive_timeout": settings.http_header_timeout_seconds}


def _error_response(error: FhirError) -> web.Response:
    return fhir_response(operation_outcome(error.issues), status=error.status or 500, headers=error.headers)


_HTTP_CODES = {
    401: Code.UNAUTHORIZED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    405: Code.METHOD_NOT_ALLOWED,
    413: Code.TOO_LARGE,
    415: Code.UNSUPPORTED_MEDIA_TYPE,
}
CORRELATION_HEADER = "X-Correlation-Id"
CLIENT_ID_HEADER = "X-Request-Id"
# Who an unauthenticated caller is on the record: a token that failed verification proves nothing.
ANONYMOUS = {"org": "unknown", "role": "anonymous", "subject": "anonymous"}


@dataclass(frozen=True)
class _Refusal:
    reason_code: str
    reason: str


@web.middleware
async def edge_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Ids, authentication, server span, metrics, every error turned into an OperationOutcome, and every
    401 and 403 answer put on the record as ``access.denied``."""
    ids = correlation.begin(request.headers.get(CLIENT_ID_HEADER))
    request[REQUEST_ID] = ids.correlation_id
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    started = time.perf_counter()
    refusal: _Refusal | None = None
    with telemetry.span_from_headers(
        f"{request.method} {route}",
        request.headers.get("traceparent"),
        request.headers.get("tracestate"),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": request.method, "http.route": route},
    ) as span:
        wanted = None
        try:
            wanted = fhir_format.negotiate(request)
            if not request.app[RUNTIME].is_public(request.path):
                await _authenticate(request)
            response = await handler(request)
        except FhirError as exc:
            response = _error_response(exc)
            if exc.status in (401, 403):
                refusal = _Refusal(exc.issues[0].code.name.lower().replace("_", "-"), _diagnostics(exc))
        except Unauthorized as exc:
            refusal = _Refusal(exc.reason_code, str(exc))
            response = _error_response(
                FhirError.of(Code.UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": 'Bearer realm="lhcie"'})
            )
        except Forbidden as exc:
            refusal = _Refusal(exc.reason_code, str(exc))
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
    finished = fhir_format.finish(wanted, response)
    response = _error_response(finished) if isinstance(finished, FhirError) else finished
    if response.status in (401, 403) and not ids.denial_recorded:
        await _record_refusal(request, refusal or _Refusal(f"http-{response.status}", "refused"), ids)
    if request.app[RUNTIME].health.draining:
        # Stopping: the answer says "Connection: close", so the client sends its next request on a new
        # connection (refused once the listener closes, or to another replica). Sent on a kept-alive
        # connection just as the server closes it, a request would be cut off half-way instead.
        response.force_close()
    response.headers[CORRELATION_HEADER] = ids.correlation_id
    if ids.client_request_id:
        response.headers[CLIENT_ID_HEADER] = ids.client_request_id
    REQUESTS.labels(route, request.method, str(response.status)).inc()
    LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
    return response


async def _authenticate(request: web.Request) -> None:
    verifier = request.app[RUNTIME].verifier
    if verifier is not None:
        # A key rotated at the identity provider is fetched here, off the synchronous verify path.
        await verifier.prepare(request.headers.get("Authorization"))
    caller(request)


def _diagnostics(error: FhirError) -> str:
    issue = error.issues[0]
    return issue.diagnostics or issue.code.value[2]


def _resource_of(path: str) -> str:
    """What was asked for, as a FHIR reference where it is one; never the query (it may name a patient)."""
    resource = path.removeprefix("/fhir/") if path.startswith("/fhir/") else path
    # No route takes an NHS number in its path; a probe that puts one there is not repeated in the record.
    return "/".join("[redacted]" if p.isdigit() and len(p) == 10 else p for p in resource.split("/"))[:200]


def _action_of(request: web.Request) -> str:
    parts = [p for p in request.path.split("/") if p]
    last = parts[-1] if parts else ""
    if last == "_search" or (request.method in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "fhir"):
        return "search"
    if last.startswith("$"):
        return "execute"
    return {
        "GET": "read",
        "HEAD": "read",
        "POST": "create",
        "PUT": "update",
        "PATCH": "update",
        "DELETE": "delete",
    }.get(request.method, request.method.lower())


def _owner(request: web.Request) -> ServiceContext | None:
    """The service context that owns the route (its outbox records the refusal), else the first one."""
    contexts = request.app.get(CONTEXTS) or []
    module = getattr(request.match_info.handler, "__module__", "") or ""
    name = module.split(".")[1] if module.startswith("services.") else None
    return next((c for c in contexts if c.name == name), contexts[0] if contexts else None)


async def _record_refusal(request: web.Request, refusal: _Refusal, ids: correlation.RequestIds) -> None:
    who = request.get(CALLER)
    actor = (
        Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, address=request.remote)
        if who is not None
        else Actor(**ANONYMOUS, address=request.remote)
    )
    resource = _resource_of(request.path)
    owner = _owner(request)
    source = owner.source if owner is not None else "urn:lhcie:edge"
    event = Event.new(
        RoutingKey.ACCESS_DENIED,
        AccessDenied(
            actor=actor,
            resource=resource,
            action=_action_of(request),
            reason_code=refusal.reason_code,
            reason=refusal.reason[:500],
        ),
        source=source,
        subject=resource,
        correlation_id=ids.correlation_id,
        client_request_id=ids.client_request_id,
    )
    try:
        # A refused token is published straight to the bus (with publisher confirms): through the outbox each
        # anonymous request would cost a synced database write, which a flood of bad tokens would turn
        # against the service's own writes. A refused caller with a valid token goes through the outbox.
        if owner is not None and who is not None:
            async with owner.store.transaction() as session:
                await owner.publish(event, session=session)
            owner.outbox.notify()
        else:
            await request.app[RUNTIME].ports.bus.publish(event)
    except Exception:  # the answer stands; the gap in the record is logged for operations to see
        log.warning(
            "edge.denial_not_recorded reason_code=%s route=%s",
            refusal.reason_code,
            request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched",
            extra={"code": "EDGE001"},
            exc_info=True,
        )


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


def _one_entry_per_type(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """cpb-9: a resource type is described once per mode, though two services may serve it (intake's
    transaction Bundle, care's discharge summaries): their interactions, parameters and operations merge."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        into = merged.setdefault(entry["type"], {"type": entry["type"]})
        for key, value in entry.items():
            if key == "type":
                continue
            if isinstance(value, list):
                seen = into.setdefault(key, [])
                seen.extend(v for v in value if v not in seen)
            else:
                into.setdefault(key, value)
    return list(merged.values())


def _metadata_handler(specs: Sequence[ServiceSpec]) -> Any:
    resources = _one_entry_per_type([entry for spec in specs for entry in spec.capability])
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "software": {"name": "LHCIE exchange", "version": "0.1.0"},
        "implementation": {
            "description": "London Health & Care Information Exchange: " + ", ".join(s.name for s in specs)
        },
        "fhirVersion": "4.0.1",
        **({"instantiates": instantiates} if (instantiates := [c for s in specs for c in s.instantiates]) else {}),
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "description": "Bearer JWT carrying the caller's ODS code, role and SMART v2 scopes",
                },
                "resource": resources,
                **(
                    {"interaction": [{"code": c} for s in specs for c in s.system_interactions]}
                    if any(s.system_interactions for s in specs)
                    else {}
                ),
            }
        ],
    }

    async def metadata(request: web.Request) -> web.Response:
        return fhir_response(statement)

    return metadata


def _openapi_handler(specs: Sequence[ServiceSpec]) -> Any:
    """The description of the routes this app serves (a single service's process describes its own)."""
    described = openapi.document([*openapi.EDGE, *(op for spec in specs for op in spec.operations)])

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(described)

    return handler


async def jwks(request: web.Request) -> web.Response:
    issuer = request.app[RUNTIME].issuer
    if issuer is None:
        raise FhirError.of(Code.NOT_FOUND, "This deployment does not issue tokens.")
    return web.json_response(issuer.jwks())


def _ports_context(runtime: Runtime) -> Any:
    async def ports(app: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(private_dir, runtime.settings.data_dir, tighten=True)
        runtime.verifier = await _verifier(runtime)
        await runtime.ports.bus.start()
        await runtime.ports.bus.declare(ALL_QUEUES)
        await runtime.ports.objects.start()
        runtime.health.add("bus", runtime.ports.bus.is_healthy)
        runtime.health.add("objects", runtime.ports.objects.is_healthy)
        sweeper = asyncio.create_task(_expire_abandoned(runtime.ports.objects, SWEEP_SECONDS))
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await runtime.ports.objects.close()
        await runtime.ports.bus.close()

    return ports


SWEEP_SECONDS = 3600.0


async def _expire_abandoned(objects: ObjectStore, every: float) -> None:
    """The file store's stand-in for the bucket lifecycle rule: abandoned staging objects are swept."""
    while True:
        try:
            removed = await objects.expire_abandoned()
            if removed:
                log.info("objects.expired count=%d", removed, extra={"code": "OBJ001"})
        except Exception:  # a failed sweep is retried at the next one; it must not stop the service
            log.warning("objects.expiry_failed", extra={"code": "OBJ002"}, exc_info=True)
        await asyncio.sleep(every)


async def _verifier(runtime: Runtime) -> TokenVerifier:
    settings = runtime.settings
    if settings.jwks_url:
        keys = KeySet(url=settings.jwks_url, max_age=settings.jwks_cache_seconds)
        await keys.load()  # an unreachable identity provider stops the start, not the first request
    elif settings.embedded_issuer:
        runtime.issuer = EmbeddedIssuer(settings.data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
        keys = KeySet(runtime.issuer.jwks())
        log.warning(
            "auth.embedded_issuer: tokens signed by the key in the data directory are accepted "
            "(lhcie token); not for production",
            extra={"code": "AUTH003"},
        )
    else:
        raise UnsafeSettings("LHCIE_JWKS_URL is not set (or set LHCIE_EMBEDDED_ISSUER=true for a test deployment)")
    return TokenVerifier(
        keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience, max_lifetime=settings.jwt_max_lifetime_seconds
    )


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would announce "Python/3.x aiohttp/x.y": versions help nobody but an attacker.
    response.headers["Server"] = "LHCIE"
    # A streamed answer (Binary, the audit export) is sent before the edge middleware gets it back: its
    # correlation id, the key to its audit records, must be on it here.
    if (correlation_id := request.get(REQUEST_ID)) is not None:
        response.headers[CORRELATION_HEADER] = correlation_id


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
    runtime = Runtime(
        settings=settings,
        ports=ports,
        services=tuple(s.name for s in specs),
        public_paths=PUBLIC_PATHS.union(*(s.public_paths for s in specs)),
        public_prefixes=tuple(p for s in specs for p in s.public_prefixes),
    )
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(_ports_context(runtime))
    app.on_response_prepare.append(_server_header)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/fhir/metadata", _metadata_handler(specs))
    app.router.add_get("/.well-known/jwks.json", jwks)
    for spec in specs:
        spec.install(app)
    app.router.add_get("/openapi.json", _openapi_handler(specs))
    return app
