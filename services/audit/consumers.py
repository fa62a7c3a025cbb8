"""Audit's message handler: every event on the bus becomes one record in the chain."""

from __future__ import annotations

from services.audit.domain import Audit
from shared.bus import Handler
from shared.events import Event


def handler(audit: Audit) -> Handler:
    async def handle(event: Event) -> None:
        await audit.record(event)

    return handle
