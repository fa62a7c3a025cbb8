"""Alerts for the receiving trust's bed managers (issue 18), from the care service's ``transfer.*`` events.

A repatriation requested into a trust raises an alert for that trust's bed managers (recipient
``Organization/<ODS>``, audience ``bed-manager``); when the transfer waits longer than its network's
threshold, care's ``transfer.escalated`` escalates it the way an MDT alert escalates (state escalated,
priority raised, ``alert.escalated`` announced), reopening it if a bed manager had acknowledged it; once the
patient is transferred, or the transfer is declined or cancelled, the alert is resolved. The alerts live in
the same store and feed as the MDT alerts, under the key ``beds:<ODS>`` (see ``access.py``), so the
Communication search, the live stream and $acknowledge serve bed managers unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from services.notification.access import BED_MANAGER, BEDS
from services.notification.alerting import Alerting
from services.notification.alerts import ESCALATED, OPEN, RESOLVED, Alerts, alert_id
from services.notification.documents import Once
from services.notification.feed import Feed, Writer
from services.notification.outgoing import Outgoing
from services.notification.rules import rank
from shared.clock import Clock, stamp
from shared.events import AlertEscalated, Event, RoutingKey, TransferChanged
from shared.store import Session

log = logging.getLogger(__name__)
KIND = "transfer-requested"
# The transfer states that end the wait (TransferChanged.state): the alert has nothing left to ask.
FINISHED = ("transferred", "declined", "cancelled")
PRIORITY, ESCALATED_PRIORITY = "urgent", "asap"


def beds_key(ods: str) -> str:
    return f"{BEDS}{ods}"


def recipient_of(ods: str) -> str:
    return f"Organization/{ods}"


class TransferAlerts:
    def __init__(
        self,
        *,
        alerts: Alerts,
        alerting: Alerting,
        feed: Feed,
        outgoing: Outgoing,
        clock: Clock,
        once: Once,
        write: Writer,
    ) -> None:
        self._alerts = alerts
        self._alerting = alerting
        self._feed = feed
        self._outgoing = outgoing
        self._clock = clock
        self._once = once
        self._write = write

    async def on_changed(self, event: Event) -> None:
        changed = event.payload()
        assert isinstance(changed, TransferChanged)

        async def effect(session: Session) -> int:
            key = alert_id(f"transfer:{changed.task_id}", recipient_of(changed.receiver))
            if event.type is RoutingKey.TRANSFER_REQUESTED:
                return int(await self._raise(key, changed, event.correlationid, session))
            alert = await self._alerts.get(key, session=session)
            if event.type is RoutingKey.TRANSFER_ESCALATED:
                if alert is None:  # the request's event was lost to us: raise it now, then escalate
                    await self._raise(key, changed, event.correlationid, session)
                return int(await self._escalate(key, changed, session))
            if alert is not None and changed.state in FINISHED:
                await self._alerting.resolve(alert, f"repatriation {changed.state}", session)
                return 1
            return 0

        await self._write(lambda: self._once(event, effect))

    async def _raise(self, key: str, changed: TransferChanged, correlation: str | None, session: Session) -> bool:
        alert: dict[str, Any] = {
            "_id": key,
            "kind": KIND,
            "recipient": recipient_of(changed.receiver),
            "mdt": beds_key(changed.receiver),
            "audience": [BED_MANAGER],
            "priority": PRIORITY,
            "patient": changed.patient_nhs_number,
            "about": changed.resource,
            "text": f"Repatriation requested from {changed.sender}"
            + (f" ({changed.network})" if changed.network else ""),
            # Escalation is the transfer's (hours from referral, per network), not the acknowledgement rules'.
            "escalate": False,
        }
        return await self._alerting.raise_alert(alert, correlation, session)

    async def _escalate(self, key: str, changed: TransferChanged, session: Session) -> bool:
        alert = await self._alerts.get(key, session=session)
        if alert is None or alert.get("state") == RESOLVED or alert.get("escalation_level", 0) > 0:
            return False
        at = stamp(self._clock.now())
        reason = changed.reason or f"waiting {changed.hours_waited:.0f} hours since referral"
        step = {"to": BED_MANAGER, "at": at, "reason": reason}
        if not await self._alerts.transition(
            key,
            {"escalation_level": 0},
            {
                "status": OPEN,
                "state": ESCALATED,
                "escalation_level": 1,
                "priority": ESCALATED_PRIORITY,
                "rank": rank(ESCALATED_PRIORITY),
                "escalations": [*alert.get("escalations", []), step],
            },
            session=session,
        ):
            return False
        await self._feed.append(mdt=alert["mdt"], alert_id=key, kind="escalated", at=at, session=session)
        await self._outgoing.publish(
            RoutingKey.ALERT_ESCALATED,
            AlertEscalated(
                alert_id=key,
                recipient=alert["recipient"],
                escalated_to=f"{alert['recipient']}#{BED_MANAGER}",
                reason=reason,
                document_id="",
                patient_nhs_number=alert["patient"],
            ),
            subject=key,
            session=session,
        )
        log.info("notification.transfer_escalated", extra={"code": "NOT062"})
        return True
