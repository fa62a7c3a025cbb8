"""Running services as a process: settings once, logging, telemetry, graceful shutdown."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from lhcie.services import SPECS
from shared import logs, telemetry
from shared.config import BusKind, ObjectStoreKind, Settings, load_settings
from shared.http import build_app

# Long enough for consumers to finish in-flight messages after SIGTERM (the Helm chart's grace period
# is longer still).
SHUTDOWN_TIMEOUT = 20.0


def serve_defaults() -> Settings:
    """``lhcie serve``: the real adapters unless the environment says otherwise."""
    return load_settings(bus=BusKind.AMQP, object_store=ObjectStoreKind.S3)


def embedded_defaults() -> Settings:
    """``lhcie run``: embedded adapters and the demo data unless the environment says otherwise."""
    return load_settings(bus=BusKind.MEMORY, object_store=ObjectStoreKind.FS, demo=True)


def build(settings: Settings, names: Sequence[str]) -> web.Application:
    return build_app(settings, [SPECS[n] for n in names])


def run(settings: Settings, names: Sequence[str], *, banner: str | None = None) -> None:
    logs.configure("lhcie" if len(names) > 1 else names[0])
    app = build(settings, names)
    if banner:
        async def show(_: web.Application) -> None:
            print(banner, flush=True)

        app.on_startup.append(show)
    try:
        web.run_app(
            app,
            host=settings.http_host,
            port=settings.http_port,
            print=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            access_log=None,
            handle_signals=True,
        )
    finally:
        telemetry.shutdown()


def main_for(name: str) -> None:
    """``python -m services.<name>``."""
    run(serve_defaults(), [name])
