"""The care service: its app factory and its place in a process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.care import consumers, demo, routes
from services.care.domain import Care
from services.care.settings import CareSettings
from shared import topology
from shared.config import Settings
from shared.http import build_app
from shared.keys import RUNTIME
from shared.lifecycle import mount
from services.care.collections import COLLECTIONS
from shared.service import Ports, ServiceSpec

NAME = "care"
log = logging.getLogger(__name__)


async def _tick(care: Care) -> None:
    while True:
        try:
            await care.run_timers()
        except Exception:
            log.exception("care.timer_tick_failed", extra={"code": "CAR021"})
        await asyncio.sleep(care.settings.timer_tick_seconds)


async def _seed(care: Care) -> None:
    await demo.seed(care)


def install(app: web.Application) -> None:
    settings = CareSettings()  # a bad LHCIE_CARE_* value stops the start-up
    seed_demo = app[RUNTIME].settings.demo and settings.demo_data
    # The demo data is in place before the process serves, so a quickstart that waits for /readyz finds it.
    care = mount(app, name=NAME, key=routes.CARE, build=lambda ctx: Care(ctx, settings),
                 add_routes=routes.add_routes, queue=topology.CARE, handler=consumers.handler,
                 on_start=_seed if seed_demo else None)

    async def background(_: web.Application) -> AsyncIterator[None]:
        # After mount's context (the store is open); torn down before it.
        tasks = [asyncio.create_task(_tick(care), name="care timers")]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(background)


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    capability=(
        {
            "type": "CarePlan",
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": False,
            "conditionalUpdate": False,
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "vread"}, {"code": "update"},
                            {"code": "history-instance"}, {"code": "search-type"}],
            "searchParam": [{"name": "patient.identifier", "type": "token"}, {"name": "category", "type": "token"},
                            {"name": "status", "type": "token"}],
        },
        {
            "type": "Task",
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
            "searchParam": [{"name": "owner", "type": "reference"}, {"name": "requester", "type": "reference"},
                            {"name": "status", "type": "token"}],
            "operation": [{"name": "advance", "definition": "https://lhcie.london/fhir/OperationDefinition/advance"}],
        },
        {
            "type": "Bundle",
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
            "documentation": "POST /fhir/Bundle with a document Bundle: a discharge summary (PRSB eDischarge)",
            "searchParam": [{"name": "recipient", "type": "token"}],
            "operation": [{"name": "acknowledge",
                           "definition": "https://lhcie.london/fhir/OperationDefinition/itk-acknowledge"},
                          {"name": "status", "definition": "https://lhcie.london/fhir/OperationDefinition/itk-status"}],
        },
        {"type": "Questionnaire", "interaction": [{"code": "read"}, {"code": "search-type"}]},
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
