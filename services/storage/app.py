"""The storage service: its app factory and its place in a process."""

from __future__ import annotations

from aiohttp import web

from services.storage import consumers, routes
from services.storage.collections import COLLECTIONS
from services.storage.domain import Storage
from services.storage.scanning import load_scanner
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.keys import RUNTIME
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "storage"


def install(app: web.Application) -> None:
    objects = app[RUNTIME].ports.objects
    mount(app, name=NAME, key=routes.STORAGE, build=lambda ctx: Storage(ctx, objects, load_scanner(ctx.runtime.settings)),
          add_routes=routes.add_routes, queue=topology.STORAGE, handler=consumers.handler)


SPEC = ServiceSpec(NAME, install, collections=COLLECTIONS,
                   capability=({"type": "Binary", "interaction": [{"code": "read"}]},))


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
