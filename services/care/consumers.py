"""The care service's message handlers: it follows the sharing policy (its replica of policy.*)."""

from __future__ import annotations

from services.care.domain import Care
from shared.bus import Handler
from shared.events import Event


def handler(care: Care) -> Handler:
    async def handle(event: Event) -> None:
        if care.policy.handles(event):
            await care.on_policy(event)

    return handle
