"""The agreements service: its app factory and its place in a process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.agreements import consumers, demo, routes
from services.agreements.collections import COLLECTIONS
from services.agreements.domain import Service
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.keys import RUNTIME
from shared.lifecycle import mount
from shared.service import Ports, ServiceSpec

NAME = "agreements"
# How often live ISAs past their end date are marked expired. Access decisions check the end date
# themselves, so this only bounds how late the lifecycle and the audit log say so.
EXPIRY_CHECK_SECONDS = 60.0
log = logging.getLogger(__name__)


def install(app: web.Application) -> None:
    load_demo = app[RUNTIME].settings.demo

    async def on_start(service: Service) -> None:
        if load_demo and await demo.seed(service):
            log.info("agreements.demo_loaded", extra={"code": "AGR001"})
            return
        count = await service.registry.announce_all()
        log.info("agreements.announced count=%d", count, extra={"code": "AGR002"})

    service = mount(app, name=NAME, key=routes.AGREEMENTS, build=Service.build, add_routes=routes.add_routes,
                    queue=topology.AGREEMENTS, handler=consumers.handler, on_start=on_start)

    async def expiry(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_expire_periodically(service), name="agreements expiry")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # Appended after mount's context: starts once the store is open, stops before it closes.
    app.cleanup_ctx.append(expiry)


async def _expire_periodically(service: Service) -> None:
    while True:
        try:
            expired = await service.isas.expire_due()
            if expired:
                log.info("agreements.expired count=%d", len(expired), extra={"code": "AGR003"})
        except Exception:
            log.exception("agreements.expiry_failed", extra={"code": "AGR004"})
        await asyncio.sleep(EXPIRY_CHECK_SECONDS)


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    capability=(
        {"type": "Organization", "interaction": [{"code": c} for c in ("read", "search-type", "create", "update")],
         "operation": [{"name": "record-holders",
                        "definition": "https://lhcie.london/fhir/OperationDefinition/record-holders"}]},
        {"type": "CareTeam", "interaction": [{"code": c} for c in ("read", "search-type", "create", "update")]},
        {"type": "Contract", "interaction": [{"code": c} for c in ("read", "search-type", "create")],
         "operation": [{"name": op, "definition": f"https://lhcie.london/fhir/OperationDefinition/contract-{op}"}
                       for op in ("accept", "reject", "revoke", "join", "retire", "merge", "pending",
                                  "templates", "duplicates", "document")]},
        {"type": "Consent", "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "update"}]},
        {"type": "RelatedPerson", "interaction": [{"code": "search-type"}, {"code": "create"}],
         "operation": [{"name": "revoke", "definition": "https://lhcie.london/fhir/OperationDefinition/carer-revoke"}]},
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
