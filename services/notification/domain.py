"""Notification's use cases: raise alerts for stored documents, list and acknowledge them."""

from __future__ import annotations

import logging
from typing import Any

from services.notification.alerts import OPEN, Alerts, to_fhir
from services.notification.rules import priority_for
from shared.auth import Caller
from shared.events import Actor, AlertAcknowledged, AlertRaised, DocumentStored, Event, RoutingKey
from shared.fhir.errors import Code, FhirError
from shared.lifecycle import ServiceContext
from shared.policy import PolicyView
from shared.store import Session

log = logging.getLogger(__name__)
CARETEAM_PREFIX = "CareTeam/"


class Notification:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.alerts = Alerts(ctx.store)
        self.policy = PolicyView(ctx.store)

    async def on_stored(self, event: Event) -> None:
        stored = event.payload()
        assert isinstance(stored, DocumentStored)
        facts = stored.document
        recipients = []
        for ref in facts.related:
            if not ref.startswith(CARETEAM_PREFIX):
                continue
            team = await self.policy.careteam(ref.removeprefix(CARETEAM_PREFIX))
            if team is None or not team.active:
                log.info("notification.unknown_team", extra={"code": "NOT002"})
                continue
            # The team's organisation must itself be allowed to see the document (fail closed).
            decision = await self.policy.decide(
                Caller(org=team.organisation, role="mdt-coordinator", subject=ref, scopes=frozenset(), mdt=team.careteam_id),
                facts,
            )
            if not decision.allowed:
                log.info("notification.not_shared rule=%s", decision.rule, extra={"code": "NOT003"})
                continue
            recipients.append(ref)

        async def raise_all(session: Session) -> None:
            for recipient in recipients:
                doc = await self.alerts.raise_alert(facts, recipient, priority_for(facts), session=session)
                await self.ctx.publish(Event.new(
                    RoutingKey.ALERT_RAISED,
                    AlertRaised(alert_id=doc["_id"], recipient=recipient, priority=doc["priority"], document=facts),
                    source=self.ctx.source, subject=doc["_id"], correlation_id=event.correlationid,
                ), session=session)

        await self.ctx.once(event, raise_all)
        if recipients:
            log.info("notification.raised count=%d", len(recipients), extra={"code": "NOT001"})

    @staticmethod
    def check_team_access(who: Caller, recipient: str) -> None:
        team = recipient.removeprefix(CARETEAM_PREFIX)
        if not recipient.startswith(CARETEAM_PREFIX) or who.mdt != team or who.role not in ("mdt-coordinator", "clinician"):
            raise FhirError.of(Code.FORBIDDEN, "Only members of this MDT may see its alerts.")

    async def list_for(self, who: Caller, recipient: str, *, status: str | None, count: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
        self.check_team_access(who, recipient)
        docs = await self.alerts.for_recipient(recipient, status=status, limit=count + 1, skip=offset)
        return [to_fhir(d) for d in docs[:count]], len(docs) > count

    async def acknowledge(self, alert_key: str, who: Caller, *, request_id: str) -> dict[str, Any]:
        doc = await self.alerts.get(alert_key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        self.check_team_access(who, doc["recipient"])
        if doc["status"] != OPEN:
            return to_fhir(doc)  # acknowledging twice is harmless and idempotent
        actor = Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt)
        async with self.ctx.store.transaction() as session:
            if await self.alerts.acknowledge(alert_key, actor, session=session):
                await self.ctx.publish(Event.new(
                    RoutingKey.ALERT_ACKNOWLEDGED,
                    AlertAcknowledged(alert_id=alert_key, recipient=doc["recipient"],
                                      document_id=doc["document"]["document_id"], patient_nhs_number=doc["patient"],
                                      actor=actor),
                    source=self.ctx.source, subject=alert_key, correlation_id=request_id,
                ), session=session)
        self.ctx.outbox.notify()
        updated = await self.alerts.get(alert_key)
        assert updated is not None
        return to_fhir(updated)
