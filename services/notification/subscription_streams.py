"""The server-sent-events channel of a care plan subscription: the subscriber's system keeps a connection
open (``GET /fhir/Subscription/{id}/$stream`` with its bearer token) and reads each numbered notification
bundle as it is made, resuming after the last ``id`` it saw (``Last-Event-ID``). For systems that cannot
expose an endpoint the exchange could POST to (an ambulance service's dispatch behind its firewall).

The notifications are the same rows ``$events`` replays, so a stream and a replay never disagree; a change
committed in this process wakes the streams at once, another replica's is found by polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from services.notification.live import Heartbeat, Listeners, tail
from services.notification.subscriptions import EVENT, SSE, Subscriptions, notification_bundle
from shared.fhir.errors import Code, FhirError
from shared.store import Document

BATCH = 100


class SubscriptionStreams:
    def __init__(
        self,
        *,
        subscriptions: Subscriptions,
        listeners: Listeners,
        poll_seconds: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._subscriptions = subscriptions
        self._listeners = listeners
        self._poll = poll_seconds
        self._wall_clock = wall_clock
        self._closing = asyncio.Event()

    @staticmethod
    def check(sub: Document) -> None:
        if sub.get("channel") != SSE:
            raise FhirError.of(
                Code.BUSINESS_RULE,
                "This subscription is delivered by rest-hook; only a "
                "subscription on the SSE channel is read with $stream.",
                "Subscription.channel.type",
            )

    async def follow(
        self, sub: Document, after: int, *, seconds: float, gone: Callable[[], bool] = lambda: False
    ) -> AsyncGenerator[tuple[int, dict[str, Any]] | Heartbeat, None]:
        """Notification bundles numbered after ``after``, for ``seconds`` (the subscriber reconnects) or until
        the subscriber is ``gone``."""
        cursor = after

        async def fetch() -> list[Document]:
            return await self._subscriptions.events(sub["_id"], cursor + 1, 2**62, limit=BATCH)

        ends = self._wall_clock() + seconds
        async for batch in tail(
            fetch, self._listeners, self._closing, until=ends, poll=self._poll, wall_clock=self._wall_clock, gone=gone
        ):
            if isinstance(batch, Heartbeat):
                yield batch
                continue
            for row in batch:
                if row["kind"] == EVENT:
                    numbered = {**sub, "events": row["number"]}
                    yield (
                        row["number"],
                        notification_bundle(numbered, EVENT, [(row["number"], row["created"], row["focus"])]),
                    )
                cursor = row["number"]

    def close(self) -> None:
        self._closing.set()
        self._listeners.changed()
