"""The storage service: its app factory and its place in a process."""

from __future__ import annotations

import dataclasses
import functools

from aiohttp import web

from services.storage import consumers, routes
from services.storage.collections import COLLECTIONS
from services.storage.domain import Storage
from services.storage.scanning import load_scanner
from services.storage.settings import StorageSettings
from shared import topology
from shared.app_keys import RUNTIME
from shared.config import Settings
from shared.edge import build_app
from shared.lifecycle import mount
from shared.openapi import Operation
from shared.service import Ports, ServiceSpec

NAME = "storage"


def install(app: web.Application, settings: StorageSettings | None = None) -> None:
    """Put storage into ``app``; its settings are read from the environment here, once, unless given."""
    own = settings or StorageSettings()
    runtime = app[RUNTIME]
    scanner = load_scanner(own.content_scanner, runtime.settings)  # a wrong setting stops the start-up
    mount(
        app,
        name=NAME,
        key=routes.STORAGE,
        build=lambda ctx: Storage(ctx, runtime.ports.objects, scanner, settings=own),
        add_routes=routes.add_routes,
        queue=topology.STORAGE,
        handler=consumers.handler,
    )


# The routes as /openapi.json describes them.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/fhir/Binary/{id}", "ITI-68: a document's bytes (or a FHIR Binary)"),
)


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    operations=OPERATIONS,
    capability=({"type": "Binary", "interaction": [{"code": "read"}]},),
)


def create_app(
    settings: Settings, ports: Ports | None = None, *, storage: StorageSettings | None = None
) -> web.Application:
    """The storage app; its own settings are read here, once, unless given."""
    spec = dataclasses.replace(SPEC, install=functools.partial(install, settings=storage or StorageSettings()))
    return build_app(settings, [spec], ports=ports)
