"""The intake service: its app factory and its place in a process."""

from __future__ import annotations

import dataclasses
import functools

from aiohttp import web

from services.intake import catalogue, consumers, routes
from services.intake.collections import COLLECTIONS
from services.intake.domain import Intake
from services.intake.limits import RateLimiter, UploadSlots
from services.intake.search import PARAM_TYPES
from services.intake.settings import IntakeSettings
from shared import topology
from shared.app_keys import RUNTIME
from shared.config import Settings
from shared.edge import build_app
from shared.lifecycle import mount
from shared.openapi import Operation
from shared.service import Ports, ServiceSpec

NAME = "intake"


def install(app: web.Application, settings: IntakeSettings | None = None) -> None:
    """Put intake into ``app``; its settings are read from the environment here, once, unless given."""
    settings = settings or IntakeSettings()
    runtime = app[RUNTIME]
    document_types = catalogue.load(settings.intake_document_types)  # a bad file stops the start-up
    app[routes.LIMITER] = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app[routes.UPLOADS] = UploadSlots(settings.max_concurrent_uploads_per_org)
    mount(
        app,
        name=NAME,
        key=routes.INTAKE,
        build=lambda ctx: Intake(
            ctx, runtime.ports.objects, document_types, max_document_bytes=settings.max_document_bytes
        ),
        add_routes=routes.add_routes,
        queue=topology.INTAKE,
        handler=consumers.handler,
    )


# The routes as /openapi.json describes them.
OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/fhir", "ITI-65: a transaction Bundle of documents", "Bundle"),
    Operation(
        "POST",
        "/fhir/DocumentReference",
        "Submit a document (inline base64, or multipart with the bytes)",
        "DocumentReference",
    ),
    Operation("GET", "/fhir/DocumentReference", "ITI-67: search documents"),
    Operation("POST", "/fhir/DocumentReference/_search", "ITI-67: search documents (form)", "form"),
    Operation("GET", "/fhir/DocumentReference/{id}", "Read a document's metadata"),
    Operation("PATCH", "/fhir/DocumentReference/{id}", "Mark a document entered-in-error", "json-patch"),
    Operation("GET", "/fhir/_bundle/{id}", "The status of a bundle sent with Prefer: respond-async"),
    Operation("GET", "/fhir/DocumentReference/{id}/_history", "A document reference's versions"),
    Operation("GET", "/fhir/DocumentReference/{id}/_history/{vid}", "One version of a document reference (vread)"),
    Operation("GET", "/fhir/List/{id}", "An ITI-65 SubmissionSet or an MHD Folder"),
    Operation("GET", "/fhir/Patient/{id}", "The patient an ITI-65 bundle's Patient entry was matched to"),
    Operation("GET", "/fhir/ValueSet/{id}", "The accepted document types", public=True),
)
# The accepted document types (the ValueSet intake's 422 names): terminology, no data.
PUBLIC_PATHS = frozenset({"/fhir/ValueSet/lhcie-document-types"})


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    operations=OPERATIONS,
    public_paths=PUBLIC_PATHS,
    instantiates=(
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient",
        "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder",
    ),
    system_interactions=("transaction",),
    capability=(
        {
            # No profile claim: a document posted without masterIdentifier (lhcie post) meets none of MHD's
            # DocumentReference profiles, and a claim must hold for every stored resource.
            "type": "DocumentReference",
            "versioning": "versioned",
            "readHistory": True,
            "interaction": [
                {"code": c} for c in ("create", "read", "vread", "history-instance", "patch", "search-type")
            ],
            "searchParam": [{"name": p, "type": t} for p, t in PARAM_TYPES.items()],
        },
        {
            "type": "Bundle",
            "interaction": [{"code": "create"}],
            "documentation": "POST /fhir with a transaction Bundle: IHE MHD ITI-65 Provide Document Bundle",
        },
    ),
)


def create_app(
    settings: Settings, ports: Ports | None = None, *, intake: IntakeSettings | None = None
) -> web.Application:
    """The intake app; its own settings are read here, once, unless given."""
    spec = dataclasses.replace(SPEC, install=functools.partial(install, settings=intake or IntakeSettings()))
    return build_app(settings, [spec], ports=ports)
