"""The live stream of an MDT's alerts, as a coordinator's console follows it: every feed entry after the
last one it saw, each with the alert as it is now; a heartbeat when nothing happens; and the end of the
stream when its grant expires or the service stops.

A change committed in this process wakes the streams at once, and so does another replica's alert change
when the bus tells of it (``replicas.py``); polling the feed is the safety net for a wake-up lost. An alert
counts as delivered once a stream has handed it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from services.notification.access import Access
from services.notification.alerts import Alerts
from services.notification.feed import Feed
from services.notification.streams import StreamSlots
from shared.auth import Caller
from shared.clock import Clock, stamp
from shared.fhir.errors import Code, FhirError
from shared.store import Document
from shared.waiting import wait_until_set

HEARTBEAT_SECONDS = 15.0
T = TypeVar("T")
Render = Callable[[Document], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Change:
    """Feed entry ``seq``: the alert, as FHIR, was ``kind`` (raised, escalated, acknowledged, resolved)."""

    seq: int
    kind: str
    alert: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """Nothing for a while: said so that proxies and the browser keep the stream open."""


@dataclass(frozen=True)
class Expired:
    """The grant is over: the console fetches a new token and resumes from its last entry."""


Frame = Change | Heartbeat | Expired


class Listeners:
    """The streams of this process waiting for a change."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Event] = set()

    def listen(self) -> asyncio.Event:
        wake = asyncio.Event()
        self._waiting.add(wake)
        return wake

    def unlisten(self, wake: asyncio.Event) -> None:
        self._waiting.discard(wake)

    def changed(self) -> None:
        for wake in self._waiting:
            wake.set()


async def tail(
    fetch: Callable[[], Awaitable[list[T]]],
    listeners: Listeners,
    closing: asyncio.Event,
    *,
    until: float,
    poll: float,
    wall_clock: Callable[[], float],
    gone: Callable[[], bool] = lambda: False,
) -> AsyncGenerator[list[T] | Heartbeat, None]:
    """Batches from ``fetch`` as they appear, until ``until`` (wall clock), the service closes or the reader
    is ``gone``: woken at once by a change in this process or one another replica announced (``Listeners``
    hears both), else by polling; a heartbeat
    when quiet for ``HEARTBEAT_SECONDS``. ``fetch`` reads after a cursor the caller moves between batches."""
    wake = listeners.listen()
    idle = 0.0
    try:
        # ``gone`` at every poll: a served process does not cancel a handler whose client left (aiohttp's
        # default), so without it a closed stream kept its capped place until the next heartbeat failed to
        # write, up to HEARTBEAT_SECONDS later (a coordinator reloading the console met 429 meanwhile).
        while not closing.is_set() and not gone() and (left := until - wall_clock()) > 0:
            wake.clear()  # before reading: a change landing while we read wakes the next wait at once
            batch = await fetch()
            if batch:
                idle = 0.0
                yield batch
                continue
            if not await wait_until_set(wake, min(poll, left)):
                idle += poll
            if idle >= HEARTBEAT_SECONDS:
                yield Heartbeat()
                idle = 0.0
    finally:
        listeners.unlisten(wake)


class LiveAlerts:
    def __init__(
        self,
        *,
        feed: Feed,
        alerts: Alerts,
        render: Render,
        access: Access,
        listeners: Listeners,
        slots: StreamSlots,
        clock: Clock,
        poll_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._feed = feed
        self._alerts = alerts
        self._render = render
        self._access = access
        self._listeners = listeners
        self._slots = slots
        self._clock = clock
        self._poll = poll_seconds
        self._wall_clock = wall_clock  # grants expire in Unix seconds
        self._closing = asyncio.Event()

    async def position(self, who: Caller, mdt: str, *, request_id: str | None = None) -> int:
        """The feed position now, for a member of the MDT about to load its list and then stream from here
        (so it misses nothing)."""
        await self._access.team(who, mdt, resource="Communication", action="search", request_id=request_id)
        return await self._feed.last()

    async def last(self) -> int:
        return await self._feed.last()

    @contextlib.asynccontextmanager
    async def admitted(self, who: Caller, mdt: str, *, request_id: str | None = None) -> AsyncIterator[None]:
        """A place for one stream of ``who`` on ``mdt``: checked again at connect (the team may have changed
        hands since the grant), and counted, so one leaked grant cannot hold every connection (429)."""
        await self._access.team(who, mdt, resource="Communication", action="search", request_id=request_id)
        if not self._slots.take(who.subject, mdt):
            raise FhirError.of(
                Code.RATE_LIMITED,
                "Too many live streams are open for this person or MDT.",
                headers={"Retry-After": "30"},
            )
        try:
            yield
        finally:
            self._slots.give_back(who.subject, mdt)

    async def follow(
        self, mdt: str, after: int, *, expires: float, gone: Callable[[], bool] = lambda: False
    ) -> AsyncGenerator[Frame, None]:
        """The MDT's changes after feed entry ``after``, until ``expires`` (Unix seconds), ``close()`` or the
        reader is ``gone``.

        An alert handed over as raised is marked delivered once the caller asks for the next frame, that
        is once it has been written."""
        cursor = after

        async def fetch() -> list[Document]:
            return await self._feed.after(mdt, cursor)

        async for batch in tail(
            fetch,
            self._listeners,
            self._closing,
            until=expires,
            poll=self._poll,
            wall_clock=self._wall_clock,
            gone=gone,
        ):
            if isinstance(batch, Heartbeat):
                yield batch
                continue
            for entry in batch:
                alert = await self._alerts.get(entry["alert_id"])
                if alert is not None:
                    yield Change(entry["seq"], entry["kind"], await self._render(alert))
                    if entry["kind"] == "raised":
                        await self._alerts.mark_delivered(entry["alert_id"], stamp(self._clock.now()))
                cursor = entry["seq"]
        if not self._closing.is_set() and not gone():
            yield Expired()

    def close(self) -> None:
        """The service is stopping: end every stream."""
        self._closing.set()
        self._listeners.changed()
