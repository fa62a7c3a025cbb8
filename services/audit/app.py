"""The audit service: its app factory and its place in a process."""

from __future__ import annotations

from aiohttp import web

from services.audit import consumers, routes
from services.audit.collections import COLLECTIONS
from services.audit.domain import Audit
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "audit"


def install(app: web.Application) -> None:
    mount(app, name=NAME, key=routes.AUDIT, build=Audit,
          add_routes=routes.add_routes, queue=topology.AUDIT, handler=consumers.handler)


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
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
            ],
            "operation": [
                {"name": name, "definition": f"https://lhcie.london/fhir/OperationDefinition/{name}"}
                for name in ("verify", "export", "access-report")
            ],
        },
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
