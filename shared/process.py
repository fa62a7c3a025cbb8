"""Running services as a process: settings once, logging, telemetry, graceful shutdown.

``python -m services.<name>`` uses this with its own ``ServiceSpec`` only, so one service's process loads
that service's code and ``shared/``; ``lhcie run`` (lhcie/runner.py) passes all five.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from shared import logs, telemetry
from shared.config import BusKind, ObjectStoreKind, Settings, UnsafeSettings, check_serving, load_settings
from shared.http import build_app, server_options
from shared.server import HeaderDeadlineSite
from shared.service import ServiceSpec

# Long enough for consumers to finish in-flight messages after SIGTERM (the Helm chart's grace period
# is longer still).
SHUTDOWN_TIMEOUT = 20.0
log = logging.getLogger(__name__)


def serve_defaults() -> Settings:
    """``lhcie serve``: the real adapters unless the environment says otherwise."""
    return load_settings(bus=BusKind.AMQP, object_store=ObjectStoreKind.S3)


def serve_settings() -> Settings:
    """What ``lhcie serve`` runs with: refuses (one line naming each variable, exit 2) to start on settings
    that have no safe default, or on the embedded token issuer unless it was enabled explicitly."""
    settings = serve_defaults()
    try:
        check_serving(settings)
    except UnsafeSettings as exc:
        print(f"lhcie serve: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return settings


def run(settings: Settings, specs: Sequence[ServiceSpec], *, banner: str | None = None) -> None:
    # Whatever a library creates (SQLite's -wal files, a log a handler opens) is this process's alone.
    os.umask(0o077)
    logs.configure("lhcie" if len(specs) > 1 else specs[0].name)
    app = build_app(settings, list(specs))
    if banner:

        async def show(_: web.Application) -> None:
            print(banner, flush=True)

        app.on_startup.append(show)
    try:
        asyncio.run(_serve(app, settings))
    finally:
        telemetry.shutdown()


async def _serve(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain and stop.

    A second signal while stopping (Ctrl-C reaching both make and this process, or an impatient
    orchestrator) must not cancel the drain half-way: it is logged and the shutdown carries on.
    """
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, **server_options(settings)
    )
    await runner.setup()
    try:
        await HeaderDeadlineSite(
            runner, settings.http_host, settings.http_port, header_timeout=settings.http_header_timeout_seconds
        ).start()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if stopping.is_set():
                log.info("process.already_stopping signal=%s", sig.name, extra={"code": "RUN002"})
            stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await stopping.wait()
        log.info("process.stopping", extra={"code": "RUN001"})
    finally:
        await runner.cleanup()
        # Drained: a late signal must not turn a clean exit into a KeyboardInterrupt on the way out.
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


def main_for(spec: ServiceSpec) -> None:
    """``python -m services.<name>``."""
    run(serve_settings(), [spec])
