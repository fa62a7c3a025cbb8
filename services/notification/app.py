"""The notification service: its app factory and its place in a process."""

from __future__ import annotations

from aiohttp import web

from services.notification import consumers, routes
from services.notification.domain import Notification
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "notification"


def install(app: web.Application) -> None:
    mount(app, name=NAME, key=routes.NOTIFICATION, build=Notification,
          add_routes=routes.add_routes, queue=topology.NOTIFICATION, handler=consumers.handler)


SPEC = ServiceSpec(
    NAME,
    install,
    capability=(
        {
            "type": "Communication",
            "interaction": [{"code": "search-type"}],
            "searchParam": [{"name": "recipient", "type": "reference"}, {"name": "status", "type": "token"}],
            "operation": [{"name": "acknowledge",
                           "definition": "https://lhcie.london/fhir/OperationDefinition/acknowledge"}],
        },
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
