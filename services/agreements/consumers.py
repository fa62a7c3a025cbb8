"""Agreements' message handler: stored documents tell it which organisations hold records about whom."""

from __future__ import annotations

from services.agreements.domain import AgreementsService
from shared.bus import Handler
from shared.events import Event, RoutingKey


def handler(service: AgreementsService) -> Handler:
    async def handle(event: Event) -> None:
        if event.type is RoutingKey.DOCUMENT_STORED:
            await service.patients.on_stored(event)

    return handle
