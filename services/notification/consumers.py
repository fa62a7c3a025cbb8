"""Notification's message handlers: stored documents become alerts, care plan changes notices for their
subscribers, repatriations alerts for bed managers; the sharing policy is followed."""

from __future__ import annotations

from services.notification.domain import Notification
from shared.bus import Handler
from shared.events import Event, RoutingKey

TRANSFERS = (RoutingKey.TRANSFER_REQUESTED, RoutingKey.TRANSFER_UPDATED, RoutingKey.TRANSFER_ESCALATED)


def handler(notification: Notification) -> Handler:
    async def handle(event: Event) -> None:
        if event.type is RoutingKey.DOCUMENT_STORED:
            await notification.document_alerts.on_stored(event)
        elif event.type in (RoutingKey.CAREPLAN_CREATED, RoutingKey.CAREPLAN_UPDATED):
            await notification.care_plans.on_changed(event)
        elif event.type in TRANSFERS:
            await notification.transfer_alerts.on_changed(event)
        elif notification.policy.handles(event):
            await notification.reconciliation.on_policy(event)

    return handle
