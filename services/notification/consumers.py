"""Notification's message handlers: stored documents become alerts; the sharing policy is followed."""

from __future__ import annotations

from services.notification.domain import Notification
from shared.bus import Handler
from shared.events import Event, RoutingKey


def handler(notification: Notification) -> Handler:
    async def handle(event: Event) -> None:
        if event.type is RoutingKey.DOCUMENT_STORED:
            await notification.document_alerts.on_stored(event)
        elif notification.policy.handles(event):
            await notification.reconciliation.on_policy(event)

    return handle
