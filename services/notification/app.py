"""The notification service: its app factory and its place in a process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.notification import consumers, routes
from services.notification.collections import COLLECTIONS
from services.notification.delivery import Deliverer
from services.notification.domain import Notification
from services.notification.replicas import OtherReplicas
from services.notification.rules import load_rules
from services.notification.settings import NotificationSettings
from services.notification.stream_tokens import SHARED_KEY, StreamTokens
from services.notification.webhook_http import HttpWebhookClient
from shared import topology
from shared.app_keys import RUNTIME
from shared.config import DocStoreKind, Settings
from shared.edge import build_app
from shared.lifecycle import mount
from shared.openapi import Operation
from shared.service import Ports, ServiceSpec

NAME = "notification"
log = logging.getLogger(__name__)


async def _tick(notification: Notification) -> None:
    while True:
        try:
            await notification.run_timers()
        except Exception:
            log.exception("notification.timer_tick_failed", extra={"code": "NOT021"})
        await asyncio.sleep(notification.settings.timer_tick_seconds)


async def _reconcile(notification: Notification) -> None:
    """At every start, in the background: alerts the stored documents call for that are missing."""
    try:
        await notification.reconcile()
    except Exception:
        log.exception("notification.reconcile_failed", extra={"code": "NOT005"})


async def _deliver(deliverer: Deliverer, notification: Notification) -> None:
    while True:
        try:
            await deliverer.dispatch()  # starts what is due; a receiver that never answers holds up no one
        except Exception:
            log.exception("notification.delivery_tick_failed", extra={"code": "NOT030"})
        await deliverer.wait(notification.settings.webhook_tick_seconds)


def install(app: web.Application, settings: NotificationSettings | None = None) -> None:
    """Put notification into ``app``; its settings are read from the environment here, once, unless given."""
    own = settings or NotificationSettings()
    # Loaded while the app is built: a broken rules file stops the start, not a request.
    rules = load_rules(own.rules_file)
    build = functools.partial(Notification, settings=own, rules=rules, open_client=HttpWebhookClient)
    notification = mount(
        app,
        name=NAME,
        key=routes.NOTIFICATION,
        build=build,
        add_routes=routes.add_routes,
        queue=topology.NOTIFICATION,
        handler=consumers.handler,
    )
    process = app[RUNTIME].settings
    key_file = own.stream_key_file
    # Replicas sharing MongoDB but no key file would each make their own key and refuse each other's tokens.
    secrets = notification.ctx.store.collection("secrets")  # declared here: the store makes it at start
    shared = secrets if key_file is None and process.doc_store is DocStoreKind.MONGODB else None
    tokens = app[routes.STREAM_TOKENS] = StreamTokens(
        key_file or process.data_dir / NAME / "stream-token.keys", shared=shared
    )
    deliverer = app[routes.DELIVERER] = notification.deliverer
    others = app[routes.OTHER_REPLICAS] = OtherReplicas(
        app[RUNTIME].ports.bus, notification.listeners, notification.outgoing.announced
    )

    async def timers(_: web.Application) -> AsyncIterator[None]:
        # After mount's context (the store is open); torn down before it (the store closes last).
        if shared is None:
            # Earlier versions kept the key in the database: whoever could read notification.sqlite3 could mint.
            await secrets.delete({"_id": SHARED_KEY})
        await tokens.start()
        await deliverer.start()
        await others.start()
        tasks = [
            asyncio.create_task(_reconcile(notification), name="notification reconciliation"),
            asyncio.create_task(_tick(notification), name="notification timers"),
            asyncio.create_task(_deliver(deliverer, notification), name="notification webhooks"),
        ]
        yield
        await others.stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await deliverer.close()

    async def end_streams(_: web.Application) -> None:
        notification.live.close()
        notification.subscription_streams.close()

    app.cleanup_ctx.append(timers)
    app.on_shutdown.append(end_streams)


CAPABILITY = (
    {
        "type": "Communication",
        "interaction": [{"code": "search-type"}],
        "searchParam": [
            {"name": "recipient", "type": "reference"},
            {"name": "status", "type": "token"},
            {"name": "patient", "type": "reference"},
            {"name": "priority", "type": "token"},
            {"name": "sent", "type": "date"},
        ],
        "operation": [
            {"name": "acknowledge", "definition": "https://lhcie.london/fhir/OperationDefinition/acknowledge"},
            {"name": "reconcile", "definition": "https://lhcie.london/fhir/OperationDefinition/reconcile"},
        ],
    },
    {
        "type": "Subscription",
        "interaction": [{"code": "create"}, {"code": "read"}],
        "operation": [
            {
                "name": "status",
                "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status",
            },
            {
                "name": "events",
                "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events",
            },
            {"name": "stream", "definition": "https://lhcie.london/fhir/OperationDefinition/subscription-stream"},
        ],
    },
    {
        "type": "EpisodeOfCare",
        "interaction": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": "team", "type": "reference"}],
        "operation": [
            {"name": "record-event", "definition": "https://lhcie.london/fhir/OperationDefinition/record-event"},
            {"name": "transfer", "definition": "https://lhcie.london/fhir/OperationDefinition/transfer"},
            {"name": "tracking-list", "definition": "https://lhcie.london/fhir/OperationDefinition/tracking-list"},
        ],
    },
)


# The routes as /openapi.json describes them.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/fhir/Communication", "Alerts for an MDT"),
    Operation("POST", "/fhir/Communication/{id}/$acknowledge", "Acknowledge an alert"),
    Operation("POST", "/fhir/Communication/$reconcile", "Reconcile alerts with stored documents (operator)"),
    Operation("GET", "/fhir/EpisodeOfCare", "Cancer pathways of an MDT"),
    Operation("POST", "/fhir/EpisodeOfCare", "Register a pathway", "EpisodeOfCare"),
    Operation("GET", "/fhir/EpisodeOfCare/$tracking-list", "The patient tracking list (FHIR Parameters or CSV)"),
    Operation("GET", "/fhir/EpisodeOfCare/{id}", "Read a pathway"),
    Operation("POST", "/fhir/EpisodeOfCare/{id}/$record-event", "Record a pathway event", "Parameters"),
    Operation("POST", "/fhir/EpisodeOfCare/{id}/$transfer", "Transfer a pathway to another MDT", "Parameters"),
    Operation("POST", "/fhir/Subscription", "Subscribe to MDT alerts or care plan changes", "Subscription"),
    Operation("GET", "/fhir/Subscription/{id}", "Read a subscription"),
    Operation("GET", "/fhir/Subscription/{id}/$status", "A subscription's status"),
    Operation("GET", "/fhir/Subscription/{id}/$events", "A subscription's recent events"),
    Operation(
        "GET", "/fhir/Subscription/{id}/$stream", "A care plan subscription's notifications (server-sent events)"
    ),
    Operation("POST", "/alerts/stream-token", "A short-lived token for the live alert stream"),
    Operation("GET", "/alerts/stream", "The live alert stream (server-sent events)", public=True),
    Operation("GET", "/console/", "The MDT console (HTML shell)", public=True),
    Operation("GET", "/console/static/{filename}", "The consoles' scripts and styles", public=True),
    Operation("GET", "/console/static/session.js", "The sign-in script the pages share (shared/web)", public=True),
)
# The console page holds no data; the SSE stream checks its own signed query token.
PUBLIC_PATHS = frozenset({"/console/", "/alerts/stream", "/console/static/session.js"})
# The consoles' scripts and styles.
PUBLIC_PREFIXES = ("/console/static",)


def spec(settings: NotificationSettings | None = None) -> ServiceSpec:
    """The service for a process; with ``settings`` given, the environment is not read for them."""
    return ServiceSpec(
        NAME,
        functools.partial(install, settings=settings),
        collections=COLLECTIONS,
        capability=CAPABILITY,
        operations=OPERATIONS,
        public_paths=PUBLIC_PATHS,
        public_prefixes=PUBLIC_PREFIXES,
    )


SPEC = spec()


def create_app(
    settings: Settings, ports: Ports | None = None, *, notification: NotificationSettings | None = None
) -> web.Application:
    """Notification alone: ``settings`` for the process, ``notification`` for the service (read once from
    the environment when not given)."""
    return build_app(settings, [spec(notification)], ports=ports)
