"""The transactional outbox: an event is written in the same transaction as the state it announces.

A relay task publishes pending events in order, with publisher confirms, and deletes each once the bus
has confirmed it. A crash between commit and publish loses nothing (the row is still there at restart);
at worst an event is published twice, which consumers drop by event id.

The relay publishes what this process's transactions committed straight from memory: each event is handed
to it when its transaction commits (``Session.on_end``), so it is never published before its COMMIT, and
the relay need not read back the rows it was just given (a read cost a hop to the store's reader thread
and a parse per event, on every commit, even one that added no event). The table is read (a scan) only
when the rows may hold events the relay was not handed: at start (a crash's leftovers), after a failure,
after a transaction whose outcome its caller did not see, and every ``SCAN_SECONDS`` (events another
replica sharing the store left behind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from itertools import islice

from shared.bus import Bus, BusUnavailable
from shared.bus.base import next_backoff
from shared.events import Event
from shared.store import ASCENDING, DocumentStore, Index, Session, StoreUnavailable
from shared.waiting import wait_until_set

log = logging.getLogger(__name__)

BATCH = 100
# How often an idle relay reads its table anyway (rows left by another replica of the service).
SCAN_SECONDS = 5.0
# Ids a scan published, remembered so that the same event handed over by a commit the scan overtook (read
# by the scan between that COMMIT and its hand-over) is not published twice.
_REMEMBERED = 1000


class Outbox:
    def __init__(self, store: DocumentStore, bus: Bus) -> None:
        self._rows = store.collection("outbox", [Index(("seq",))])
        self._bus = bus
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Committed events in hand, in commit order (a dict: the scan takes out what it publishes).
        self._ready: dict[str, Event] = {}
        self._scan = True
        self._scanned: deque[str] = deque(maxlen=_REMEMBERED)
        self._scanned_ids: set[str] = set()

    async def add(self, event: Event, *, session: Session) -> None:
        await self._rows.insert(
            {"_id": event.id, "seq": time.time_ns(), "event": event.model_dump(mode="json")},
            session=session,
        )
        session.on_end(lambda committed: self._ended(event, committed))

    def _ended(self, event: Event, committed: bool) -> None:
        if committed:
            self._ready[event.id] = event
        else:
            # Rolled back, or a COMMIT its caller did not see end: the table says whether the row is there.
            self._scan = True
        self._wake.set()

    def notify(self) -> None:
        """Wake the relay (committed events wake it themselves; kept for callers and tests)."""
        self._wake.set()

    def start(self) -> None:
        self._scan = True
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
            self._scan = True
            self.notify()
            await asyncio.sleep(0.02)

    async def pending(self) -> int:
        return await self._rows.count()

    async def _relay(self) -> None:
        delay: float | None = None
        while True:
            if not await wait_until_set(self._wake, SCAN_SECONDS):
                self._scan = True
            self._wake.clear()
            try:
                while await self._publish_batch():
                    pass
                delay = None
            except BusUnavailable as exc:
                delay = self._failed(delay)
                log.warning("outbox.publish_failed retry_in=%.1fs reason=%s", delay, exc, extra={"code": "OUT001"})
                await asyncio.sleep(delay)
            except StoreUnavailable as exc:
                # An outage (the file held by a backup, the database unreachable), not a fault of this code:
                # what was published stays in the outbox until its rows can be deleted, and goes out again
                # (consumers keep effects once). The fault run's long profile met it as an ERROR (OUT002).
                delay = self._failed(delay)
                log.warning("outbox.store_unavailable retry_in=%.1fs reason=%s", delay, exc, extra={"code": "OUT003"})
                await asyncio.sleep(delay)
            except Exception:
                delay = self._failed(delay)
                log.exception("outbox.relay_error", extra={"code": "OUT002"})
                await asyncio.sleep(delay)

    def _failed(self, delay: float | None) -> float:
        # Whatever was in hand is in the table until deleted: the next pass reads the table from the start.
        self._ready.clear()
        self._scan = True
        self._wake.set()
        return next_backoff(delay, None)

    async def _publish_batch(self) -> bool:
        """Publish one batch; True if more may be waiting."""
        if self._scan:
            self._scan = False  # set again by a failure, or below if the table has more
            rows = await self._rows.find(sort=[("seq", ASCENDING)], limit=BATCH)
            events = [self._in_hand(row["_id"]) or Event.model_validate(row["event"]) for row in rows]
            for event in events:
                self._remember(event.id)
            self._scan = more = len(rows) == BATCH
        else:
            taken = list(islice(self._ready, BATCH))
            events = [e for e in (self._ready.pop(i) for i in taken) if e.id not in self._scanned_ids]
            more = bool(self._ready)
        if not events:
            return more
        published: list[str] = []
        try:
            # One call for the batch: the embedded bus confirms it in one transaction (one fsync).
            await self._bus.publish_batch(events)
            published = [event.id for event in events]
        except BusUnavailable as exc:
            published = [event.id for event in events[: exc.published]]
            raise
        finally:
            # One delete for the batch: what was confirmed leaves the outbox, even when a later publish
            # failed (a crash before this line republishes them: consumers drop the duplicates).
            if published:
                await self._rows.delete({"_id": {"$in": published}})
        return more

    def _in_hand(self, event_id: str) -> Event | None:
        return self._ready.pop(event_id, None)

    def _remember(self, event_id: str) -> None:
        if len(self._scanned) == self._scanned.maxlen:
            self._scanned_ids.discard(self._scanned[0])
        self._scanned.append(event_id)
        self._scanned_ids.add(event_id)
