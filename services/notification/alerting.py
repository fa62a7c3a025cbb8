"""The life of an alert: raised (numbered in the feed, queued for subscribers, announced), escalated when
nobody acknowledges it in time, acknowledged by a coordinator or resolved when its reason has gone; and
the coordinators' search of their MDT's alerts.

Every change is one transaction with its feed entry, its outbox event and its timers, and each is a
conditional update, so a redelivery or a second replica cannot apply it twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from services.notification.access import Access, actor_of
from services.notification.alerts import ACK, ACKNOWLEDGED, ESCALATED, OPEN, RESOLVED, AlertQuery, Alerts
from services.notification.feed import Feed, Writer
from services.notification.outgoing import Outgoing
from services.notification.rules import RuleSet
from services.notification.subscriptions import Subscriptions
from shared.auth import Caller
from shared.clock import Clock, stamp
from shared.events import AlertAcknowledged, AlertEscalated, AlertRaised, DocumentFacts, RoutingKey
from shared.fhir.errors import Code, FhirError
from shared.store import Document, DocumentStore, Session
from shared.timers import Timers

ESCALATE = "escalate"
Render = Callable[[Document], Awaitable[dict[str, Any]]]


class Alerting:
    def __init__(
        self,
        *,
        store: DocumentStore,
        alerts: Alerts,
        feed: Feed,
        subscriptions: Subscriptions,
        timers: Timers,
        outgoing: Outgoing,
        access: Access,
        render: Render,
        write: Writer,
        rules: RuleSet,
        clock: Clock,
        escalation_after_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._alerts = alerts
        self._feed = feed
        self._subscriptions = subscriptions
        self._timers = timers
        self._outgoing = outgoing
        self._access = access
        self._render = render
        self._write = write
        self._rules = rules
        self._clock = clock
        self._escalation_after = escalation_after_seconds

    async def raise_alert(self, alert: Document, correlation: str | None, session: Session) -> bool:
        """Raise ``alert`` unless it exists; returns whether it was new."""
        now = self._clock.now()
        alert = {
            **alert,
            "status": OPEN,
            "state": "raised",
            "sent": stamp(now),
            "escalation_level": 0,
            "escalations": [],
            "rules_version": self._rules.version,
        }
        if not await self._alerts.raise_if_absent(alert, session=session):
            return False
        await self._feed.append(
            mdt=alert["mdt"], alert_id=alert["_id"], kind="raised", at=alert["sent"], session=session
        )
        await self._subscriptions.enqueue(alert, alert["sent"], session=session)
        facts = DocumentFacts.model_validate(alert["document"]) if alert.get("document") else None
        # Every alert is announced (and so audited), with or without a document behind it.
        await self._outgoing.publish(
            RoutingKey.ALERT_RAISED,
            AlertRaised(
                alert_id=alert["_id"],
                recipient=alert["recipient"],
                priority=alert["priority"],
                document=facts,
                kind=alert.get("kind") or "document-available",
                patient_nhs_number=alert.get("patient"),
            ),
            subject=alert["_id"],
            correlation_id=correlation,
            session=session,
        )
        if self._rules.escalation and alert.get("escalate", True):
            await self._timers.schedule(
                f"{ESCALATE}|{alert['_id']}|0",
                ESCALATE,
                now + self.escalation_delay(0),
                subject=alert["_id"],
                session=session,
                step=0,
            )
        return True

    def escalation_delay(self, step: int) -> timedelta:
        """Delay from one escalation step to the next (the rules give minutes since the alert was raised)."""
        if self._escalation_after is not None:
            return timedelta(seconds=self._escalation_after)
        previous = self._rules.escalation[step - 1].after_minutes if step else 0
        return timedelta(minutes=self._rules.escalation[step].after_minutes - previous)

    async def escalate(self, timer: Document, session: Session) -> None:
        """The escalation timer's action: the next step, unless the alert was acknowledged meanwhile."""
        alert = await self._alerts.get(timer["subject"], session=session)
        step = int(timer["data"]["step"])
        if alert is None or alert["status"] != OPEN or step >= len(self._rules.escalation):
            return
        to = self._rules.escalation[step].to
        at = stamp(self._clock.now())
        if not await self._alerts.transition(
            alert["_id"],
            {"status": OPEN, "escalation_level": step},
            {
                "escalation_level": step + 1,
                "state": ESCALATED,
                "escalations": [*alert.get("escalations", []), {"to": to, "at": at}],
            },
            session=session,
        ):
            return
        await self._feed.append(mdt=alert["mdt"], alert_id=alert["_id"], kind="escalated", at=at, session=session)
        await self._outgoing.publish(
            RoutingKey.ALERT_ESCALATED,
            AlertEscalated(
                alert_id=alert["_id"],
                recipient=alert["recipient"],
                escalated_to=f"{alert['recipient']}#{to}",
                reason=f"not acknowledged within escalation step {step + 1}",
                document_id=(alert.get("document") or {}).get("document_id", ""),
                patient_nhs_number=alert["patient"],
            ),
            subject=alert["_id"],
            session=session,
        )
        if step + 1 < len(self._rules.escalation):
            await self._timers.schedule(
                f"{ESCALATE}|{alert['_id']}|{step + 1}",
                ESCALATE,
                self._clock.now() + self.escalation_delay(step + 1),
                subject=alert["_id"],
                session=session,
                step=step + 1,
            )

    async def resolve(self, alert: Document, reason: str, session: Session) -> None:
        """Close an open alert whose reason has gone (a breach risk whose clock stopped)."""
        at = stamp(self._clock.now())
        if await self._alerts.transition(
            alert["_id"],
            {"status": OPEN},
            {"status": ACKNOWLEDGED, "state": RESOLVED, "resolved": {"at": at, "reason": reason}},
            session=session,
        ):
            await self._timers.cancel_for(alert["_id"], session=session)
            await self._feed.append(mdt=alert["mdt"], alert_id=alert["_id"], kind="resolved", at=at, session=session)

    async def acknowledge(self, key: str, who: Caller, *, request_id: str) -> dict[str, Any]:
        doc = await self._alerts.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        await self._access.team(
            who, doc["mdt"], resource=f"Communication/{key}", action="update", request_id=request_id
        )
        if doc["status"] != OPEN:
            return await self._render(doc)  # acknowledging twice is harmless and idempotent
        actor = actor_of(who)

        async def work() -> None:
            async with self._store.transaction() as session:
                at = stamp(self._clock.now())
                if not await self._alerts.transition(
                    key,
                    {"status": OPEN},
                    {
                        "status": ACKNOWLEDGED,
                        "state": ACK,
                        "acknowledged": {"by": actor.subject, "name": actor.name, "org": actor.org, "at": at},
                    },
                    session=session,
                ):
                    return
                await self._timers.cancel_for(key, session=session)
                await self._feed.append(mdt=doc["mdt"], alert_id=key, kind="acknowledged", at=at, session=session)
                await self._outgoing.publish(
                    RoutingKey.ALERT_ACKNOWLEDGED,
                    AlertAcknowledged(
                        alert_id=key,
                        recipient=doc["recipient"],
                        document_id=(doc.get("document") or {}).get("document_id", ""),
                        patient_nhs_number=doc["patient"],
                        actor=actor,
                    ),
                    subject=key,
                    correlation_id=request_id,
                    session=session,
                )

        await self._write(work)
        updated = await self._alerts.get(key)
        assert updated is not None
        return await self._render(updated)

    async def search(
        self,
        who: Caller,
        query: AlertQuery,
        *,
        count: int,
        offset: int,
        search: str | None = None,
        request_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of the MDT's alerts, and whether there are more; every patient shown is a recorded read."""
        await self._access.team(who, query.mdt, resource="Communication", action="search", request_id=request_id)
        docs = await self._alerts.search(query, limit=count + 1, skip=offset)
        shown = docs[:count]
        await self._access.read(
            who, "Communication", "search", [d.get("patient") for d in shown], query=search, request_id=request_id
        )
        return [await self._render(d) for d in shown], len(docs) > count
