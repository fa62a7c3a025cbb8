"""The agreements service: its app factory and its place in a process."""

from __future__ import annotations

import logging

from aiohttp import web

from services.agreements import demo, routes
from services.agreements.registry import Registry
from shared.config import Settings
from shared.http import build_app
from shared.keys import RUNTIME
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "agreements"
log = logging.getLogger(__name__)


def install(app: web.Application) -> None:
    load_demo = app[RUNTIME].settings.demo

    async def on_start(registry: Registry) -> None:
        if load_demo and await demo.seed(registry):
            log.info("agreements.demo_loaded", extra={"code": "AGR001"})
            return
        count = await registry.announce_all()
        log.info("agreements.announced count=%d", count, extra={"code": "AGR002"})

    mount(app, name=NAME, key=routes.AGREEMENTS, build=Registry, add_routes=routes.add_routes, on_start=on_start)


SPEC = ServiceSpec(
    NAME,
    install,
    capability=tuple(
        {"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}]}
        for t in ("Organization", "CareTeam", "Contract")
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
