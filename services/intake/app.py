"""The intake service: its app factory and its place in a process."""

from __future__ import annotations

from aiohttp import web

from services.intake import catalogue, consumers, routes
from services.intake.collections import COLLECTIONS
from services.intake.domain import Intake
from services.intake.search import PARAM_TYPES
from services.intake.limits import RateLimiter, UploadSlots
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.keys import RUNTIME
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "intake"


def install(app: web.Application) -> None:
    runtime = app[RUNTIME]
    settings = runtime.settings
    document_types = catalogue.load(settings.intake_document_types)  # a bad file stops the start-up
    app[routes.LIMITER] = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app[routes.UPLOADS] = UploadSlots(settings.max_concurrent_uploads_per_org)
    mount(app, name=NAME, key=routes.INTAKE,
          build=lambda ctx: Intake(ctx, runtime.ports.objects, document_types,
                                   max_document_bytes=settings.max_document_bytes),
          add_routes=routes.add_routes, queue=topology.INTAKE, handler=consumers.handler)


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    instantiates=("https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient",
                  "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder"),
    system_interactions=("transaction",),
    capability=(
        {
            # No profile claim: a document posted without masterIdentifier (lhcie post) meets none of MHD's
            # DocumentReference profiles, and a claim must hold for every stored resource.
            "type": "DocumentReference",
            "versioning": "versioned",
            "readHistory": True,
            "interaction": [{"code": c} for c in ("create", "read", "vread", "history-instance", "patch",
                                                   "search-type")],
            "searchParam": [{"name": p, "type": t} for p, t in PARAM_TYPES.items()],
        },
        {"type": "Bundle", "interaction": [{"code": "create"}],
         "documentation": "POST /fhir with a transaction Bundle: IHE MHD ITI-65 Provide Document Bundle"},
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
