"""The agreements service: its app factory and its place in a process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.agreements import consumers, demo, routes
from services.agreements.collections import COLLECTIONS
from services.agreements.domain import AgreementsService
from shared import topology
from shared.app_keys import RUNTIME
from shared.config import Settings
from shared.edge import build_app
from shared.lifecycle import mount
from shared.openapi import Operation
from shared.service import Ports, ServiceSpec

NAME = "agreements"
# How often live ISAs past their end date are marked expired. Access decisions check the end date
# themselves, so this only bounds how late the lifecycle and the audit log say so.
EXPIRY_CHECK_SECONDS = 60.0
log = logging.getLogger(__name__)


def install(app: web.Application) -> None:
    load_demo = app[RUNTIME].settings.demo

    async def on_start(service: AgreementsService) -> None:
        if load_demo and await demo.seed(service):
            log.info("agreements.demo_loaded", extra={"code": "AGR001"})
            return
        count = await service.registry.announce_all()
        log.info("agreements.announced count=%d", count, extra={"code": "AGR002"})

    service = mount(
        app,
        name=NAME,
        key=routes.AGREEMENTS,
        build=AgreementsService.build,
        add_routes=routes.add_routes,
        queue=topology.AGREEMENTS,
        handler=consumers.handler,
        on_start=on_start,
    )

    async def expiry(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_expire_periodically(service), name="agreements expiry")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # Appended after mount's context: starts once the store is open, stops before it closes.
    app.cleanup_ctx.append(expiry)


async def _expire_periodically(service: AgreementsService) -> None:
    while True:
        try:
            expired = await service.isas.expire_due()
            if expired:
                log.info("agreements.expired count=%d", len(expired), extra={"code": "AGR003"})
        except Exception:
            log.exception("agreements.expiry_failed", extra={"code": "AGR004"})
        await asyncio.sleep(EXPIRY_CHECK_SECONDS)


# The routes as /openapi.json describes them.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/fhir/Organization", "Search organisations"),
    Operation("POST", "/fhir/Organization", "Register an organisation", "Organization"),
    Operation("GET", "/fhir/Organization/$record-holders", "Who holds records about a patient"),
    Operation("GET", "/fhir/Organization/{id}", "Read an organisation"),
    Operation("PUT", "/fhir/Organization/{id}", "Update an organisation", "Organization"),
    Operation("GET", "/fhir/CareTeam", "Search MDTs"),
    Operation("POST", "/fhir/CareTeam", "Register an MDT", "CareTeam"),
    Operation("GET", "/fhir/CareTeam/{id}", "Read an MDT"),
    Operation("PUT", "/fhir/CareTeam/{id}", "Update an MDT", "CareTeam"),
    Operation("GET", "/fhir/Contract", "Search information sharing agreements"),
    Operation("POST", "/fhir/Contract", "Propose an agreement", "Contract"),
    Operation("GET", "/fhir/Contract/$pending", "Agreements waiting on the caller"),
    Operation("GET", "/fhir/Contract/$templates", "Template agreements"),
    Operation("GET", "/fhir/Contract/$duplicates", "Overlapping agreements"),
    Operation("POST", "/fhir/Contract/$merge", "Merge agreements", "Parameters"),
    Operation("GET", "/fhir/Contract/{id}", "Read an agreement"),
    Operation("POST", "/fhir/Contract/{id}/$accept", "Accept an agreement"),
    Operation("POST", "/fhir/Contract/{id}/$reject", "Reject an agreement"),
    Operation("POST", "/fhir/Contract/{id}/$revoke", "Revoke an agreement"),
    Operation("POST", "/fhir/Contract/{id}/$join", "Join a template agreement"),
    Operation("POST", "/fhir/Contract/{id}/$approve-join", "Approve a request to join", "Parameters"),
    Operation("POST", "/fhir/Contract/{id}/$reject-join", "Refuse a request to join", "Parameters"),
    Operation("POST", "/fhir/Contract/{id}/$retire", "Retire an agreement for its replacement", "Parameters"),
    Operation("PUT", "/fhir/Contract/{id}/$document", "Attach the signed agreement", "pdf"),
    Operation("GET", "/fhir/Contract/{id}/$document", "The signed agreement"),
    Operation("GET", "/fhir/Consent", "A patient's consents"),
    Operation("GET", "/fhir/Consent/preferences", "A patient's sharing preferences"),
    Operation("PUT", "/fhir/Consent/preferences", "Set a patient's sharing preferences", "Consent"),
    Operation("GET", "/fhir/RelatedPerson", "A patient's carers"),
    Operation("POST", "/fhir/RelatedPerson", "Grant a carer access", "RelatedPerson"),
    Operation("POST", "/fhir/RelatedPerson/{id}/$revoke", "Revoke a carer's access"),
    Operation("GET", "/dcc/", "The data controllers' console (HTML shell)", public=True),
    Operation("GET", "/patient/", "The patient's console (HTML shell)", public=True),
    Operation("GET", "/dcc/static/{filename}", "The DCC's scripts and styles", public=True),
    Operation("GET", "/patient/static/{filename}", "The patient page's scripts and styles", public=True),
    Operation(
        "GET",
        "/dcc/static/vocabulary.json",
        "Purposes, document categories and organisation types in words",
        public=True,
    ),
    Operation(
        "GET",
        "/patient/static/vocabulary.json",
        "Purposes, document categories and organisation types in words",
        public=True,
    ),
    Operation("GET", "/dcc/static/session.js", "The sign-in script the pages share (shared/web)", public=True),
    Operation("GET", "/patient/static/session.js", "The sign-in script the pages share (shared/web)", public=True),
)
# The consoles' HTML shells and their scripts, styles and words: they carry no data; their script calls the
# API with a token.
PUBLIC_PATHS = frozenset(
    {
        "/dcc/",
        "/patient/",
        "/dcc/static/vocabulary.json",
        "/patient/static/vocabulary.json",
        "/dcc/static/session.js",
        "/patient/static/session.js",
    }
)
PUBLIC_PREFIXES = ("/dcc/static", "/patient/static")


SPEC = ServiceSpec(
    NAME,
    install,
    collections=COLLECTIONS,
    operations=OPERATIONS,
    public_paths=PUBLIC_PATHS,
    public_prefixes=PUBLIC_PREFIXES,
    capability=(
        {
            "type": "Organization",
            "interaction": [{"code": c} for c in ("read", "search-type", "create", "update")],
            "operation": [
                {"name": "record-holders", "definition": "https://lhcie.london/fhir/OperationDefinition/record-holders"}
            ],
        },
        {"type": "CareTeam", "interaction": [{"code": c} for c in ("read", "search-type", "create", "update")]},
        {
            "type": "Contract",
            "interaction": [{"code": c} for c in ("read", "search-type", "create")],
            "operation": [
                {"name": op, "definition": f"https://lhcie.london/fhir/OperationDefinition/contract-{op}"}
                for op in (
                    "accept",
                    "reject",
                    "revoke",
                    "join",
                    "retire",
                    "merge",
                    "pending",
                    "templates",
                    "duplicates",
                    "document",
                )
            ],
        },
        {"type": "Consent", "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "update"}]},
        {
            "type": "RelatedPerson",
            "interaction": [{"code": "search-type"}, {"code": "create"}],
            "operation": [
                {"name": "revoke", "definition": "https://lhcie.london/fhir/OperationDefinition/carer-revoke"}
            ],
        },
    ),
)


def create_app(settings: Settings, ports: Ports | None = None) -> web.Application:
    return build_app(settings, [SPEC], ports=ports)
