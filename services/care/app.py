"""The care service: its app factory and its place in a process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.care import consumers, demo, routes
from services.care.collections import COLLECTIONS
from services.care.domain import Care
from services.care.settings import CareSettings
from shared import topology
from shared.app_keys import RUNTIME
from shared.config import Settings
from shared.edge import build_app
from shared.lifecycle import mount
from shared.openapi import Operation
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
    care = mount(
        app,
        name=NAME,
        key=routes.CARE,
        build=lambda ctx: Care(ctx, settings),
        add_routes=routes.add_routes,
        queue=topology.CARE,
        handler=consumers.handler,
        on_start=_seed if seed_demo else None,
    )

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


# The routes as /openapi.json describes them.
OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/fhir/CarePlan", "Start or record an end-of-life care plan", "CarePlan"),
    Operation("GET", "/fhir/CarePlan", "A patient's current care plans"),
    Operation("GET", "/fhir/CarePlan/{id}", "Read a care plan (current version)"),
    Operation("PUT", "/fhir/CarePlan/{id}", "A new version of a care plan (If-Match)", "CarePlan"),
    Operation("GET", "/fhir/CarePlan/{id}/_history", "A care plan's versions"),
    Operation("GET", "/fhir/CarePlan/{id}/_history/{vid}", "One version of a care plan"),
    Operation("POST", "/fhir/Task", "Request a repatriation", "Task"),
    Operation("GET", "/fhir/Task", "A trust's pending transfers"),
    Operation("GET", "/fhir/Task/{id}", "Read a repatriation"),
    Operation("POST", "/fhir/Task/{id}/$advance", "Move a repatriation to its next state", "Parameters"),
    Operation("POST", "/fhir/Bundle", "Send a discharge summary (FHIR document)", "Bundle"),
    Operation("GET", "/fhir/Bundle", "Discharge summaries delivered to the caller"),
    Operation("GET", "/fhir/Bundle/{id}", "Read a discharge summary"),
    Operation("POST", "/fhir/Bundle/{id}/$acknowledge", "Acknowledge a discharge summary (ITK3)", "Parameters"),
    Operation("GET", "/fhir/Bundle/{id}/$status", "A discharge summary's acknowledgements"),
    Operation("GET", "/fhir/Questionnaire", "The published forms"),
    Operation("GET", "/fhir/Questionnaire/{id}", "Read a published form"),
    Operation("GET", "/care/plan/", "The printable care plan view (HTML shell)", public=True),
    Operation("GET", "/care/transfers/", "The bed managers' transfers list (HTML shell)", public=True),
)
# The views (a plan, the transfers list): shells like the console's, their data by token.
PUBLIC_PATHS = frozenset({"/care/plan/", "/care/transfers/"})


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    operations=OPERATIONS,
    public_paths=PUBLIC_PATHS,
    capability=(
        {
            "type": "CarePlan",
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": False,
            "conditionalUpdate": False,
            "interaction": [
                {"code": "create"},
                {"code": "read"},
                {"code": "vread"},
                {"code": "update"},
                {"code": "history-instance"},
                {"code": "search-type"},
            ],
            "searchParam": [
                {"name": "patient.identifier", "type": "token"},
                {"name": "category", "type": "token"},
                {"name": "status", "type": "token"},
            ],
        },
        {
            "type": "Task",
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {"name": "owner", "type": "reference"},
                {"name": "requester", "type": "reference"},
                {"name": "status", "type": "token"},
            ],
            "operation": [{"name": "advance", "definition": "https://lhcie.london/fhir/OperationDefinition/advance"}],
        },
        {
            "type": "Bundle",
            "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
            "documentation": "POST /fhir/Bundle with a document Bundle: a discharge summary (PRSB eDischarge)",
            "searchParam": [{"name": "recipient", "type": "token"}],
            "operation": [
                {"name": "acknowledge", "definition": "https://lhcie.london/fhir/OperationDefinition/itk-acknowledge"},
                {"name": "status", "definition": "https://lhcie.london/fhir/OperationDefinition/itk-status"},
            ],
        },
        {"type": "Questionnaire", "interaction": [{"code": "read"}, {"code": "search-type"}]},
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
