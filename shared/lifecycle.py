"""The parts every service's lifecycle shares: its own store, its outbox, its consumers, its inbox.

A service opens these in its cleanup context and closes them after ``yield``; on shutdown consumers stop
first and drain their in-flight messages, then the outbox flushes, then the store closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from shared.bus import Consumer, Handler, QueueSpec, Retry
from shared.events import Event
from shared.keys import RUNTIME
from shared.outbox import Outbox
from shared.service import Runtime
from shared.objects import ObjectStoreUnavailable
from shared.store import DocumentStore, DuplicateKey, Session, StoreUnavailable, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServiceContext:
    def __init__(self, name: str, runtime: Runtime) -> None:
        self.name = name
        self.runtime = runtime
        self.store: DocumentStore = open_store(runtime.settings, name)
        self.outbox = Outbox(self.store, runtime.ports.bus)
        # Event ids already applied: written in the same transaction as the effect (exactly-once effects).
        self._inbox = self.store.collection("inbox")
        self._consumers: list[Consumer] = []

    @property
    def source(self) -> str:
        return f"urn:lhcie:service:{self.name}"

    async def start(self) -> None:
        await self.store.start()
        self.outbox.start()
        self.runtime.health.add(f"{self.name}.store", self.store.is_healthy)

    async def consume(self, queue: QueueSpec, handler: Handler) -> None:
        consumer = await self.runtime.ports.bus.consume(
            queue, _outages_retry(handler), prefetch=self.runtime.settings.amqp_prefetch
        )
        self._consumers.append(consumer)

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        self._consumers.clear()
        await self.outbox.stop()
        await self.store.close()

    async def once(self, event: Event, effect: Callable[[Session], Awaitable[T]]) -> T | None:
        """Apply ``effect`` for ``event`` exactly once: a redelivered event is skipped."""
        try:
            async with self.store.transaction() as session:
                await self._inbox.insert({"_id": event.id, "type": event.type}, session=session)
                result = await effect(session)
        except DuplicateKey:
            if await self._inbox.get(event.id) is not None:
                log.info("inbox.duplicate type=%s", event.type, extra={"code": "INB001"})
                return None
            raise
        self.outbox.notify()
        return result

    async def publish(self, event: Event, *, session: Session) -> None:
        await self.outbox.add(event, session=session)


def _outages_retry(handler: Handler) -> Handler:
    """A store or bucket outage (or a lost write race) is the dependency's fault, not the message's:
    retry in place with backoff instead of counting towards dead-lettering."""

    async def handle(event: Event) -> None:
        try:
            await handler(event)
        except (StoreUnavailable, ObjectStoreUnavailable) as exc:
            raise Retry(f"{type(exc).__name__}: {exc}") from exc

    return handle


D = TypeVar("D")
# Every context mounted into an app, so tools (``lhcie store init``) can reach the stores without serving.
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
