"""Putting a service into an aiohttp app: its domain object, its routes, and a cleanup context that opens
and closes its ``ServiceContext`` (shared/context.py, which knows nothing of HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from shared.app_keys import RUNTIME
from shared.bus import Handler, QueueSpec
from shared.context import ServiceContext

D = TypeVar("D")
# Every context mounted into an app: a test holds what each service opens against its collections.py.
CONTEXTS = web.AppKey("service_contexts", list[ServiceContext])


def mount(
    app: web.Application,
    *,
    name: str,
    key: web.AppKey[D],
    build: Callable[[ServiceContext], D],
    add_routes: Callable[[web.Application], None],
    queue: QueueSpec | None = None,
    handler: Callable[[D], Handler] | None = None,
    on_start: Callable[[D], Awaitable[None]] | None = None,
) -> D:
    """Put a service into an app: its domain object under ``key``, its routes, its lifecycle.

    Nothing here does I/O; the store opens and the consumer starts in the cleanup context.
    """
    ctx = ServiceContext(name, app[RUNTIME])
    app.setdefault(CONTEXTS, []).append(ctx)
    domain = build(ctx)
    app[key] = domain

    async def lifecycle(_: web.Application) -> AsyncIterator[None]:
        await ctx.start()
        if queue is not None and handler is not None:
            await ctx.consume(queue, handler(domain))
        if on_start is not None:
            await on_start(domain)
        yield
        await ctx.stop()

    add_routes(app)
    app.cleanup_ctx.append(lifecycle)
    return domain
