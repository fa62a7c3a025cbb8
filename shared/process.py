"""Running services as a process: settings once, logging, telemetry, graceful shutdown.

``python -m services.<name>`` uses this with its own ``ServiceSpec`` only, so one service's process loads
that service's code and ``shared/``; ``lhcie run`` (lhcie/runner.py) passes all five.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from shared import logs, telemetry
from shared.app_keys import RUNTIME
from shared.config import BusKind, ObjectStoreKind, Settings, UnsafeSettings, check_serving, load_settings
from shared.edge import build_app, server_options
from shared.lifecycle import CONTEXTS
from shared.server import HeaderDeadlineSite
from shared.service import ServiceSpec

# After SIGTERM the listener stays open this long (at most a quarter of the drain limit) while /readyz
# answers 503: a balancer that polls readiness without Kubernetes' preStop pause (podman, compose, a
# plain load balancer) stops sending before connections are refused.
UNREADY_SECONDS = 2.0
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
        # Everything is closed: the interpreter's final garbage collection over every loaded model and
        # module only delays the exit (seconds on a loaded node, eating into the grace period).
        gc.freeze()


async def _serve(app: web.Application, settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain within ``settings.drain_seconds`` and stop.

    In order: readiness fails and consumers stop taking messages; the listener closes after
    ``UNREADY_SECONDS``; requests and messages in flight get the rest of the drain limit; what is
    still running then is cut off (a message left unacknowledged is redelivered, nothing is lost).
    A second signal while stopping (Ctrl-C reaching both make and this process, or an impatient
    orchestrator) must not cancel the drain half-way: it is logged and the shutdown carries on.
    """
    limit = settings.drain_seconds
    unready = min(UNREADY_SECONDS, limit / 4)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=limit - unready, **server_options(settings)
    )
    await runner.setup()
    draining: list[asyncio.Task[None]] = []
    try:
        await HeaderDeadlineSite(
            runner, settings.http_host, settings.http_port, header_timeout=settings.http_header_timeout_seconds
        ).start()
        settle_heap()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if stopping.is_set():
                log.info("process.already_stopping signal=%s", sig.name, extra={"code": "RUN002"})
            stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await stopping.wait()
        log.info("process.stopping drain=%.1fs", limit, extra={"code": "RUN001"})
        app[RUNTIME].health.draining = True
        # Each context's cleanup (runner.cleanup below) waits for its own drain before closing its store.
        draining = [asyncio.create_task(ctx.drain(limit)) for ctx in app.get(CONTEXTS, [])]
        await asyncio.sleep(unready)
    finally:
        # Closes the listener, waits for requests in flight (limit - unready), then the cleanup contexts.
        await runner.cleanup()
        await asyncio.gather(*draining, return_exceptions=True)
        # Drained: a late signal must not turn a clean exit into a KeyboardInterrupt on the way out.
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        log.info("process.stopped", extra={"code": "RUN003"})


def settle_heap() -> None:
    """Once started: what start-up made (modules, models, the app) stays for the process's life, so the
    cyclic garbage collector is told to leave it out of its full collections, which otherwise walk all of it
    again and again under load (the collector's wall time over a bench cell was 6-13 % of each consumer's
    CPU time at load 18, ``gc.callbacks``; an upper bound, as the wall time includes waits for a core).
    Garbage made later is collected as before."""
    gc.collect()
    gc.freeze()


def main_for(spec: ServiceSpec) -> None:
    """``python -m services.<name>``."""
    run(serve_settings(), [spec])
