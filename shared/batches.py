"""Deliveries applied in one transaction: the consumers' group commit.

A consumer takes up to its prefetch of deliveries at once and handles them concurrently; each handler's
effect would otherwise be its own transaction (BEGIN, the inbox row, the effect, COMMIT with its fsync, and
the hops to the writer thread around each). Here the effects that queue while a transaction is being
written are applied by the next writer in one transaction, each inside a savepoint with its inbox row, so a
failing effect undoes only its own writes and fails only its own delivery. Every caller returns (and its
delivery is acked) only after the COMMIT: at-least-once delivery, exactly-once effects, nothing acked that
a kill -9 could lose.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.events import Event
from shared.outbox import Outbox
from shared.store import Collection, DocumentStore, DuplicateKey, StoreUnavailable

log = logging.getLogger(__name__)

# Enough to take a whole prefetch window at once, few enough that one transaction stays short.
MAX_BATCH = 64


@dataclass
class _Delivery:
    event: Event
    effect: Callable[[Any], Awaitable[Any]]
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _Duplicate(Exception):
    """The event's inbox row is there already: undo nothing, apply nothing."""


class Batches:
    def __init__(self, store: DocumentStore, inbox: Collection, outbox: Outbox) -> None:
        self._store = store
        self._inbox = inbox
        self._outbox = outbox
        self._waiting: list[_Delivery] = []
        # Fair (FIFO): whoever gets it next writes every delivery waiting by then, its own among them.
        self._writer = asyncio.Lock()

    async def apply(self, event: Event, effect: Callable[[Any], Awaitable[Any]]) -> Any:
        delivery = _Delivery(event, effect)
        self._waiting.append(delivery)
        try:
            while not delivery.done.done():
                async with self._writer:
                    if delivery.done.done():
                        break
                    batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                    await self._write(batch)
        except asyncio.CancelledError:
            # Not yet taken: nobody applies it (the bus redelivers it). Taken: its outcome is moot, since the
            # delivery is not acked; an effect that committed makes the redelivery a duplicate.
            if delivery in self._waiting:
                self._waiting.remove(delivery)
            if delivery.done.done() and not delivery.done.cancelled():
                delivery.done.exception()  # retrieved: the cancellation speaks for it
            raise
        return delivery.done.result()

    async def _write(self, batch: list[_Delivery]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            async with self._store.transaction() as session:
                for delivery in batch:
                    try:
                        async with self._store.savepoint(session):
                            try:
                                await self._inbox.insert(
                                    {"_id": delivery.event.id, "type": delivery.event.type}, session=session
                                )
                            except DuplicateKey:
                                raise _Duplicate from None
                            outcomes.append((True, await delivery.effect(session)))
                    except _Duplicate:
                        log.info("inbox.duplicate type=%s", delivery.event.type, extra={"code": "INB001"})
                        outcomes.append((True, None))
                    except Exception as exc:  # this delivery's failure, its writes undone: the others go on
                        outcomes.append((False, exc))
        except BaseException as exc:
            # BEGIN or COMMIT failed, or the writer was cancelled: nothing of the batch is durable, so every
            # delivery in it fails and the bus retries it.
            failure = exc if isinstance(exc, Exception) else StoreUnavailable("the batch's writer was cancelled")
            for delivery in batch:
                delivery.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for delivery, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                delivery.done.set_result(value)
            else:
                delivery.done.set_exception(value)
        self._outbox.notify()
