"""Storage's message handlers: file received documents, follow the sharing policy."""

from __future__ import annotations

from services.storage.domain import Storage
from shared.bus import Handler
from shared.events import Event, RoutingKey


def handler(storage: Storage) -> Handler:
    async def handle(event: Event) -> None:
        if event.type is RoutingKey.DOCUMENT_RECEIVED:
            await storage.file(event)
        elif event.type in (RoutingKey.DOCUMENT_SUPERSEDED, RoutingKey.DOCUMENT_WITHDRAWN):
            await storage.change_status(event)
        elif storage.policy.handles(event):
            await storage.policy.apply(event)

    return handle
