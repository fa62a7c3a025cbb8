"""The audit service: its app factory and its place in a process."""

from __future__ import annotations

import dataclasses
import functools

from aiohttp import web

from services.audit import consumers, routes
from services.audit.collections import COLLECTIONS
from services.audit.domain import Audit
from services.audit.settings import AuditSettings
from shared import topology
from shared.config import Settings
from shared.edge import build_app
from shared.lifecycle import mount
from shared.openapi import Operation
from shared.service import Ports, ServiceSpec

NAME = "audit"


def install(app: web.Application, settings: AuditSettings | None = None) -> None:
    """Put audit into ``app``; its settings are read from the environment here, once, unless given."""
    own = settings or AuditSettings()
    mount(
        app,
        name=NAME,
        key=routes.AUDIT,
        build=functools.partial(Audit, settings=own),
        add_routes=routes.add_routes,
        queue=topology.AUDIT,
        handler=consumers.handler,
    )


# The routes as /openapi.json describes them.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/fhir/AuditEvent", "Search the audit trail"),
    Operation("GET", "/fhir/AuditEvent/$verify", "Verify the audit chain"),
    Operation("GET", "/fhir/AuditEvent/$export", "Export audit records"),
    Operation("GET", "/fhir/AuditEvent/$access-report", "A patient's access report"),
)


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    operations=OPERATIONS,
    capability=(
        {
            "type": "AuditEvent",
            "interaction": [{"code": "search-type"}],
            "searchParam": [
                {"name": "patient.identifier", "type": "token"},
                {"name": "entity", "type": "reference"},
                {"name": "agent", "type": "token"},
                {"name": "type", "type": "token"},
                {"name": "subtype", "type": "token"},
                {"name": "date", "type": "date"},
                {"name": "outcome", "type": "token"},
                {"name": "request-id", "type": "string"},
                {"name": "sequence", "type": "number", "documentation": "The record's place in the chain (its id)."},
            ],
            "operation": [
                {"name": name, "definition": f"https://lhcie.london/fhir/OperationDefinition/{name}"}
                for name in ("verify", "export", "access-report")
            ],
        },
    ),
)


def create_app(
    settings: Settings, ports: Ports | None = None, *, audit: AuditSettings | None = None
) -> web.Application:
    """The audit app; its own settings are read here, once, unless given."""
    spec = dataclasses.replace(SPEC, install=functools.partial(install, settings=audit or AuditSettings()))
    return build_app(settings, [spec], ports=ports)
