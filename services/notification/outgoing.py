"""The events notification announces: written to its outbox in the transaction of the change they announce,
so an alert and its ``alert.raised`` (or a read and its ``record.read``) commit together or not at all."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from shared import correlation
from shared.bus.base import topic_matches
from shared.events import Event, Payload, RoutingKey
from shared.store import DocumentStore, Session
from shared.topology import NOTIFICATION_WATCH

# Alert changes this process announced, kept to tell its own (whose commit woke its streams already) from
# another replica's. An event is published within a second of its commit; this many cover minutes of alerts.
# Forgetting one too early costs a stream one needless read, nothing else.
REMEMBERED = 4096


class Announced:
    """The ids of the alert changes (``NOTIFICATION_WATCH``) this process wrote to its outbox lately, oldest
    forgotten first."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, event_id: str) -> None:
        self._ids[event_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids


class Outbox(Protocol):
    async def add(self, event: Event, *, session: Session) -> None: ...

    def notify(self) -> None: ...


class Outgoing:
    def __init__(self, store: DocumentStore, outbox: Outbox, source: str) -> None:
        self._store = store
        self._outbox = outbox
        self.source = source
        # What this process announces: its own alert changes are not news to its own streams.
        self.announced = Announced()

    def event(self, key: RoutingKey, payload: Payload, *, subject: str, correlation_id: str | None = None) -> Event:
        return Event.new(
            key,
            payload,
            source=self.source,
            subject=subject,
            correlation_id=correlation_id,
            client_request_id=correlation.client_request_id(),
        )

    async def publish(
        self, key: RoutingKey, payload: Payload, *, subject: str, session: Session, correlation_id: str | None = None
    ) -> None:
        event = self.event(key, payload, subject=subject, correlation_id=correlation_id)
        await self._outbox.add(event, session=session)
        if any(topic_matches(binding, key) for binding in NOTIFICATION_WATCH):
            self.announced.add(event.id)
        # A refusal the domain recorded with its rule and patient: the edge must not record it twice.
        correlation.note_published(event)

    async def publish_now(self, *events: Event) -> None:
        """Events that record something no write of ours holds (a read, a refusal): their own transaction."""
        async with self._store.transaction() as session:
            for event in events:
                await self._outbox.add(event, session=session)
                correlation.note_published(event)
        self._outbox.notify()

    def notify(self) -> None:
        self._outbox.notify()
