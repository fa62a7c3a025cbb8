"""The intake service: its app factory and its place in a process."""

from __future__ import annotations

from aiohttp import web

from services.intake import consumers, routes
from services.intake.domain import Intake
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.keys import RUNTIME
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "intake"


def install(app: web.Application) -> None:
    objects = app[RUNTIME].ports.objects
    mount(app, name=NAME, key=routes.INTAKE, build=lambda ctx: Intake(ctx, objects),
          add_routes=routes.add_routes, queue=topology.INTAKE, handler=consumers.handler)


SPEC = ServiceSpec(
    NAME,
    install,
    capability=(
        {
            "type": "DocumentReference",
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {"name": "patient.identifier", "type": "token"},
                {"name": "_count", "type": "number"},
            ],
        },
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
