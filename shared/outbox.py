"""The transactional outbox: an event is written in the same transaction as the state it announces.

A relay task publishes pending events in order, with publisher confirms, and deletes each once the bus
has confirmed it. A crash between commit and publish loses nothing (the row is still there at restart);
at worst an event is published twice, which consumers drop by event id.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shared.bus import Bus, BusUnavailable
from shared.bus.base import next_backoff
from shared.events import Event
from shared.store import ASCENDING, DocumentStore, Index, Session, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 100


class Outbox:
    def __init__(self, store: DocumentStore, bus: Bus) -> None:
        self._rows = store.collection("outbox", [Index(("seq",))])
        self._bus = bus
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def add(self, event: Event, *, session: Session) -> None:
        await self._rows.insert(
            {"_id": event.id, "seq": time.time_ns(), "event": event.model_dump(mode="json")},
            session=session,
        )

    def notify(self) -> None:
        """Call after the transaction that added events commits, so they go out at once."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._relay(), name="outbox relay")
        self.notify()

    async def stop(self) -> None:
        if self._task is not None:
            # One last pass so a clean shutdown leaves nothing pending.
            await self.flush(timeout=5)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def flush(self, timeout: float = 10) -> None:
        """Wait until everything committed so far has been published (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self._rows.count() and asyncio.get_running_loop().time() < deadline:
            self.notify()
            await asyncio.sleep(0.02)

    async def pending(self) -> int:
        return await self._rows.count()

    async def _relay(self) -> None:
        delay: float | None = None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self._publish_batch():
                    pass
                delay = None
            except BusUnavailable as exc:
                delay = next_backoff(delay, None)
                log.warning("outbox.publish_failed retry_in=%.1fs reason=%s", delay, exc, extra={"code": "OUT001"})
                await asyncio.sleep(delay)
                self._wake.set()
            except StoreUnavailable as exc:
                # An outage (the file held by a backup, the database unreachable), not a fault of this code:
                # what was published stays in the outbox until its rows can be deleted, and goes out again
                # (consumers keep effects once). The fault run's long profile met it as an ERROR (OUT002).
                delay = next_backoff(delay, None)
                log.warning("outbox.store_unavailable retry_in=%.1fs reason=%s", delay, exc, extra={"code": "OUT003"})
                await asyncio.sleep(delay)
                self._wake.set()
            except Exception:
                delay = next_backoff(delay, None)
                log.exception("outbox.relay_error", extra={"code": "OUT002"})
                await asyncio.sleep(delay)
                self._wake.set()

    async def _publish_batch(self) -> bool:
        rows = await self._rows.find(sort=[("seq", ASCENDING)], limit=BATCH)
        published: list[str] = []
        try:
            # One call for the batch: the embedded bus confirms it in one transaction (one fsync).
            await self._bus.publish_batch([Event.model_validate(row["event"]) for row in rows])
            published = [row["_id"] for row in rows]
        except BusUnavailable as exc:
            published = [row["_id"] for row in rows[: exc.published]]
            raise
        finally:
            # One delete for the batch: what was confirmed leaves the outbox, even when a later publish
            # failed (a crash before this line republishes them: consumers drop the duplicates).
            if published:
                await self._rows.delete({"_id": {"$in": published}})
        return len(rows) == BATCH
