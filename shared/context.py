"""A service's own parts: its store, its outbox, its consumers, its inbox; nothing of HTTP.

A service opens these in its cleanup context and closes them after ``yield``; on shutdown consumers stop
first and drain their in-flight messages, then the outbox flushes, then the store closes. Domain modules
take a ``ServiceContext``; ``shared.lifecycle.mount`` (the HTTP side) builds one and puts it into an app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared import correlation
from shared.batches import Batches
from shared.bus import Consumer, Handler, QueueSpec, Retry
from shared.events import Event
from shared.objects import ObjectStoreUnavailable
from shared.outbox import Outbox
from shared.service import Runtime
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
        self._batches = Batches(self.store, self._inbox, self.outbox)
        self._consumers: list[Consumer] = []
        # Started once (by the process on SIGTERM, or by stop); a second caller waits for the same drain.
        self._drained: asyncio.Future[list[bool]] | None = None

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

    async def drain(self, timeout: float) -> None:
        """Stop taking messages; those in flight get ``timeout`` seconds to finish, the rest are handed back
        unacknowledged (redelivered to another replica, or to this one when it is back)."""
        if self._drained is None:
            consumers, self._consumers = self._consumers, []
            self._drained = asyncio.gather(*(consumer.drain(timeout) for consumer in consumers))
        await self._drained

    async def stop(self) -> None:
        # A process being stopped by a signal has drained already (shared/process.py): nothing left here.
        await self.drain(self.runtime.settings.drain_seconds)
        await self.outbox.stop()
        await self.store.close()

    async def once(self, event: Event, effect: Callable[[Session], Awaitable[T]], *, shared: bool = False) -> T | None:
        """Apply ``effect`` for ``event`` exactly once: a redelivered event is skipped.

        ``shared``: the effect may share its transaction with other deliveries' effects (one COMMIT, one
        fsync, for every delivery waiting at the time). Only for an effect that reads what it decides on
        through its session: a read outside it does not see the writes of those applied before it in the
        same transaction. Either way this returns only once the effect is durable, so the ack follows it.
        """
        if shared and self.store.savepoints:
            applied: T | None = await self._batches.apply(event, effect)
            return applied
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
        correlation.note_published(event)


def _outages_retry(handler: Handler) -> Handler:
    """A store or bucket outage (or a lost write race) is the dependency's fault, not the message's:
    retry in place with backoff instead of counting towards dead-lettering."""

    async def handle(event: Event) -> None:
        try:
            await handler(event)
        except (StoreUnavailable, ObjectStoreUnavailable) as exc:
            raise Retry(f"{type(exc).__name__}: {exc}") from exc

    return handle
