"""Writes applied in one transaction: group commit, for the consumers' deliveries and any other writer.

A consumer takes up to its prefetch of deliveries at once and handles them concurrently; each handler's
effect would otherwise be its own transaction (BEGIN, the inbox row, the effect, COMMIT with its fsync, and
the hops to the writer thread around each). Here the effects that queue while a transaction is being
written are applied by the next writer in one transaction, each inside a savepoint, so a failing effect
undoes only its own writes and fails only its own caller. Every caller returns only after the COMMIT (a
delivery is acked only then): at-least-once delivery, exactly-once effects, nothing acked that a kill -9
could lose.

``GroupCommit`` is the mechanism (notification's webhook deliveries record their leases and outcomes with
it); ``Batches`` adds each delivery's inbox row to its effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.events import Event
from shared.outbox import Outbox
from shared.store import Collection, DocumentStore, DuplicateKey, Session, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Enough to take a whole prefetch window at once, few enough that one transaction stays short.
MAX_BATCH = 64


@dataclass
class _Write:
    effect: Callable[[Any], Awaitable[Any]]
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit:
    """Effects applied together: whoever takes the writer next writes every effect waiting by then (up to
    ``MAX_BATCH``) in one transaction, each in a savepoint; ``after_commit`` runs once per transaction.

    On a store without savepoints (MongoDB) each effect has its own transaction, as before."""

    def __init__(self, store: DocumentStore, *, after_commit: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._after_commit = after_commit
        self._waiting: list[_Write] = []
        # Fair (FIFO): whoever gets it next writes every effect waiting by then, its own among them.
        self._writer = asyncio.Lock()
        self.transactions = 0  # committed, for tests and the curious: fewer than effects when grouped

    async def apply(self, effect: Callable[[Session], Awaitable[T]]) -> T:
        """``effect``'s result once it is committed; its exception (its writes undone) if it failed."""
        if not self._store.savepoints:
            async with self._store.transaction() as session:
                alone = await effect(session)
            self.transactions += 1
            self._after_commit()
            return alone
        write = _Write(effect)
        self._waiting.append(write)
        try:
            while not write.done.done():
                async with self._writer:
                    if write.done.done():
                        break
                    batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                    await self._write(batch)
        except asyncio.CancelledError:
            # Not yet taken: nobody applies it. Taken: its outcome is moot to a caller that is gone (a
            # consumer's delivery is not acked; an effect that committed makes its redelivery a duplicate).
            if write in self._waiting:
                self._waiting.remove(write)
            if write.done.done() and not write.done.cancelled():
                write.done.exception()  # retrieved: the cancellation speaks for it
            raise
        grouped: T = write.done.result()
        return grouped

    async def _write(self, batch: list[_Write]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            async with self._store.transaction() as session:
                for write in batch:
                    try:
                        async with self._store.savepoint(session):
                            outcomes.append((True, await write.effect(session)))
                    except Exception as exc:  # this effect's failure, its writes undone: the others go on
                        outcomes.append((False, exc))
        except BaseException as exc:
            # BEGIN or COMMIT failed, or the writer was cancelled: nothing of the batch is durable, so every
            # effect in it fails (a delivery is retried by the bus).
            failure = exc if isinstance(exc, Exception) else StoreUnavailable("the batch's writer was cancelled")
            for write in batch:
                write.done.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        self.transactions += 1
        for write, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                write.done.set_result(value)
            else:
                write.done.set_exception(value)
        self._after_commit()


class _Duplicate(Exception):
    """The event's inbox row is there already: undo nothing, apply nothing."""


class Batches:
    """A consumer's deliveries, grouped: each effect with its event's inbox row (exactly-once effects)."""

    def __init__(self, store: DocumentStore, inbox: Collection, outbox: Outbox) -> None:
        self._inbox = inbox
        self._group = GroupCommit(store, after_commit=outbox.notify)

    async def apply(self, event: Event, effect: Callable[[Any], Awaitable[Any]]) -> Any:
        async def once(session: Session) -> Any:
            try:
                await self._inbox.insert({"_id": event.id, "type": event.type}, session=session)
            except DuplicateKey:
                raise _Duplicate from None
            return await effect(session)

        try:
            return await self._group.apply(once)
        except _Duplicate:
            log.info("inbox.duplicate type=%s", event.type, extra={"code": "INB001"})
            return None
