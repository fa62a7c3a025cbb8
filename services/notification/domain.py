"""Notification's use cases: alerts from stored documents, pathways and their clocks, escalation.

Every effect of an event or a timer is written in one transaction with its outbox event and its feed
entry, so a redelivery, a reconciliation pass or a second replica never doubles an alert.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from services.notification.access import Access, Throttle
from services.notification.alerts import (
    ACK,
    ACKNOWLEDGED,
    CARETEAM_PREFIX,
    ESCALATED,
    OPEN,
    RESOLVED,
    AlertQuery,
    Alerts,
    alert_id,
    to_fhir,
)
from services.notification.clock import Clock, SystemClock, day_of, parse_stamp, stamp
from services.notification.feed import CounterConflict, Feed
from services.notification.pathways import ACTIVE, Pathways, tracking_list
from services.notification.rules import RuleSet, load_rules
from services.notification.settings import NotificationSettings
from services.notification.subscriptions import (
    EVENT,
    Subscriptions,
    check_endpoint,
    notification_bundle,
    parse_subscription,
    status_resource,
)
from services.notification.subscriptions import to_fhir as subscription_to_fhir
from services.notification.timers import Timers
from shared.auth import Caller
from shared.correlation import client_request_id
from shared.events import (
    Actor,
    AlertAcknowledged,
    AlertEscalated,
    AgreementState,
    AlertRaised,
    CareTeamState,
    DocumentFacts,
    DocumentStored,
    Event,
    OrganisationState,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError
from shared.context import ServiceContext
from shared.policy import Decision, PolicyView
from shared.store import ASCENDING, Document, Index, Session

log = logging.getLogger(__name__)
T = TypeVar("T")
ESCALATE, BREACH_CHECK, DIGEST = "escalate", "breach-check", "digest"


class Notification:
    def __init__(self, ctx: ServiceContext, *, clock: Clock | None = None,
                 settings: NotificationSettings | None = None, rules: RuleSet | None = None) -> None:
        self.ctx = ctx
        self.settings = settings or NotificationSettings()
        # Loaded here, while the app is built: a broken rules file stops the start, not a request.
        self.rules = rules or load_rules(self.settings.rules_file)
        self.clock = clock or SystemClock()
        self.alerts = Alerts(ctx.store)
        self.feed = Feed(ctx.store)
        self.timers = Timers(ctx.store, self.clock)
        self.pathways = Pathways(ctx.store, self.rules)
        self.policy = PolicyView(ctx.store)
        self.access = Access(ctx, self.policy)
        self._reconcile_throttle = Throttle(self.settings.reconcile_interval_seconds)
        # What this service knows of every stored document: the source of reconciliation.
        self.documents = ctx.store.collection("documents", [Index(("related",)), Index(("stored_at",))])
        self.subscriptions = Subscriptions(ctx.store)
        self.timers.on(ESCALATE, self._fire_escalation)
        self.timers.on(BREACH_CHECK, self._fire_breach_check)
        self.timers.on(DIGEST, self._fire_digest)
        self._listeners: set[asyncio.Event] = set()

    def set_clock(self, clock: Clock) -> None:
        """Tests and drills: move time for pathway days and timers alike."""
        self.clock = self.timers.clock = clock

    # -- live listeners (SSE streams in this process; other replicas' changes are found by polling) --

    def listen(self) -> asyncio.Event:
        wake = asyncio.Event()
        self._listeners.add(wake)
        return wake

    def unlisten(self, wake: asyncio.Event) -> None:
        self._listeners.discard(wake)

    def changed(self) -> None:
        for wake in self._listeners:
            wake.set()

    async def write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run a write, again if another process took the next feed number first (rolled back)."""
        for _ in range(20):
            try:
                result = await work()
            except CounterConflict:
                await asyncio.sleep(0.01)
                continue
            self.ctx.outbox.notify()
            self.changed()
            return result
        raise RuntimeError("feed counter contention did not settle")

    def today(self) -> date:
        return day_of(self.clock.now())

    # -- documents --

    async def on_stored(self, event: Event) -> None:
        stored = event.payload()
        assert isinstance(stored, DocumentStored)
        facts = stored.document

        async def effect(session: Session) -> int:
            # Decided inside the transaction: a policy change commits either before it (and is seen here)
            # or after it (and its reconciliation then finds this document in the ledger).
            teams = await self._teams_for(facts)
            await self.documents.replace(
                {"_id": facts.document_id, "facts": facts.model_dump(mode="json"), "related": list(facts.related),
                 "stored_at": stamp(stored.stored_at)}, session=session, upsert=True)
            raised = 0
            for team in teams:
                raised += await self._alert_for_document(facts, stored.stored_at, team, event.correlationid, session)
            return raised

        raised = await self.write(lambda: self.ctx.once(event, effect))
        if raised:
            log.info("notification.raised count=%d", raised, extra={"code": "NOT001"})

    async def _teams_for(self, facts: DocumentFacts) -> list[CareTeamState]:
        teams = []
        for ref in facts.related:
            if not ref.startswith(CARETEAM_PREFIX):
                continue
            team = await self.policy.careteam(ref.removeprefix(CARETEAM_PREFIX))
            if team is None or not team.active:
                log.info("notification.unknown_team", extra={"code": "NOT002"})
                continue
            # The team's organisation must itself be allowed to see the document (fail closed).
            decision = await self.policy.decide(
                Caller(org=team.organisation, role="mdt-coordinator", subject=ref, scopes=frozenset(),
                       mdt=team.careteam_id),
                facts,
            )
            if not decision.allowed:
                log.info("notification.not_shared rule=%s", decision.rule, extra={"code": "NOT003"})
                continue
            teams.append(team)
        return teams

    async def _alert_for_document(self, facts: DocumentFacts, stored_at: datetime, team: CareTeamState,
                                  correlation: str | None, session: Session) -> int:
        recipient = f"{CARETEAM_PREFIX}{team.careteam_id}"
        key = alert_id(facts.document_id, recipient)
        if await self.alerts.get(key, session=session) is not None:
            return 0
        doc_type = self.rules.document_type(facts.type_system, facts.type_code)
        pathway = await self.pathways.active(facts.patient_nhs_number, team.careteam_id, session=session)
        if pathway is None and doc_type and doc_type.opens_pathway:
            opening = doc_type.opens_pathway
            pathway, new = await self.pathways.open(
                patient=facts.patient_nhs_number, mdt=team.careteam_id, tumour_site=team.tumour_site,
                route=opening.route, starts=opening.starts, on=day_of(stored_at), opened_by=facts.document_id,
                session=session)
            if new:
                await self._schedule_breach_checks(pathway, opening.starts, session)
        elif pathway is not None and facts.document_id not in pathway["documents"]:
            pathway["documents"].append(facts.document_id)
            await self.pathways.save(pathway, session=session)
        rule = self.rules.alert_rule(doc_type, self.pathways.state(pathway))
        label = doc_type.label if doc_type else (facts.type_display or "document")
        audience = list(rule.notify)
        if "named-clinician" in audience and not any(r.startswith("Practitioner/") for r in facts.related):
            audience.remove("named-clinician")
        alert = {
            "_id": key, "kind": "document-available", "recipient": recipient, "mdt": team.careteam_id,
            "audience": audience, "priority": rule.priority, "patient": facts.patient_nhs_number,
            "document": facts.model_dump(mode="json"), "label": label,
            "text": f"New {label} from {facts.custodian}",
            "pathway_id": pathway["_id"] if pathway else None,
        }
        return int(await self._raise(alert, correlation, session))

    async def _raise(self, alert: Document, correlation: str | None, session: Session) -> bool:
        now = self.clock.now()
        alert = {**alert, "status": OPEN, "state": "raised", "sent": stamp(now), "escalation_level": 0,
                 "escalations": [], "rules_version": self.rules.version}
        if not await self.alerts.raise_if_absent(alert, session=session):
            return False
        await self.feed.append(mdt=alert["mdt"], alert_id=alert["_id"], kind="raised", at=alert["sent"],
                               session=session)
        await self.subscriptions.enqueue(alert, alert["sent"], session=session)
        facts = DocumentFacts.model_validate(alert["document"]) if alert.get("document") else None
        # Every alert is announced (and so audited), with or without a document behind it.
        await self.ctx.publish(Event.new(
            RoutingKey.ALERT_RAISED,
            AlertRaised(alert_id=alert["_id"], recipient=alert["recipient"], priority=alert["priority"],
                        document=facts, kind=alert.get("kind") or "document-available",
                        patient_nhs_number=alert.get("patient")),
            source=self.ctx.source, subject=alert["_id"], correlation_id=correlation,
        ), session=session)
        if self.rules.escalation and alert.get("escalate", True):
            await self.timers.schedule(f"{ESCALATE}|{alert['_id']}|0", ESCALATE, now + self._escalation_delay(0),
                                       subject=alert["_id"], session=session, step=0)
        return True

    def _escalation_delay(self, step: int) -> timedelta:
        """Delay from one escalation step to the next (the rules give minutes since the alert was raised)."""
        if self.settings.escalation_after_seconds is not None:
            return timedelta(seconds=self.settings.escalation_after_seconds)
        previous = self.rules.escalation[step - 1].after_minutes if step else 0
        return timedelta(minutes=self.rules.escalation[step].after_minutes - previous)

    # -- reconciliation --

    async def reconcile(self, *, mdt: str | None = None) -> int:
        """Raise every alert the stored documents call for and that does not exist yet (after an outage,
        or when an MDT becomes known after its documents arrived); returns how many were raised."""
        raised, skip = 0, 0
        where = {"related": f"{CARETEAM_PREFIX}{mdt}"} if mdt else None
        while True:
            page = await self.documents.find(where, sort=[("stored_at", ASCENDING)], limit=200, skip=skip)
            for row in page:
                facts = DocumentFacts.model_validate(row["facts"])
                stored_at = parse_stamp(row["stored_at"])

                async def effect(facts: DocumentFacts = facts, stored_at: datetime = stored_at) -> int:
                    async with self.ctx.store.transaction() as session:
                        teams = await self._teams_for(facts)
                        return sum([await self._alert_for_document(facts, stored_at, t, None, session) for t in teams])

                raised += await self.write(effect)
            if len(page) < 200:
                break
            skip += 200
        if raised:
            log.info("notification.reconciled count=%d", raised, extra={"code": "NOT004"})
        return raised

    async def on_policy(self, event: Event) -> None:
        changed = await self.policy.apply(event)
        payload = event.payload()
        # A team, organisation or agreement that becomes known may let stored documents reach an MDT that
        # they could not reach when they arrived (policy and documents are consumed concurrently).
        if not changed or not getattr(payload, "active", True):
            return
        if isinstance(payload, CareTeamState):
            await self.schedule_digest(payload.careteam_id)
            await self.reconcile(mdt=payload.careteam_id)
        elif isinstance(payload, (OrganisationState, AgreementState)):
            await self.reconcile()

    # -- reading and acknowledging alerts --

    async def search(self, who: Caller, query: AlertQuery, *, count: int, offset: int, search: str | None = None,
                     request_id: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        await self.access.team(who, query.mdt, resource="Communication", action="search", request_id=request_id)
        docs = await self.alerts.search(query, limit=count + 1, skip=offset)
        shown = docs[:count]
        await self.access.read(who, "Communication", "search", [d.get("patient") for d in shown], query=search,
                               request_id=request_id)
        return [await self.render(d) for d in shown], len(docs) > count

    async def render(self, alert: Document) -> dict[str, Any]:
        clocks = None
        if alert.get("pathway_id"):
            pathway = await self.pathways.get(alert["pathway_id"])
            if pathway is not None:
                clocks = [c for c in self.pathways.clock_summary(pathway, self.today()) if not c["stop"]]
        return to_fhir(alert, clocks)

    async def acknowledge(self, key: str, who: Caller, *, request_id: str) -> dict[str, Any]:
        doc = await self.alerts.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        await self.access.team(who, doc["mdt"], resource=f"Communication/{key}", action="update",
                               request_id=request_id)
        if doc["status"] != OPEN:
            return await self.render(doc)  # acknowledging twice is harmless and idempotent
        actor = Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt)

        async def work() -> None:
            async with self.ctx.store.transaction() as session:
                at = stamp(self.clock.now())
                if not await self.alerts.transition(key, {"status": OPEN}, {
                        "status": ACKNOWLEDGED, "state": ACK,
                        "acknowledged": {"by": actor.subject, "org": actor.org, "at": at}}, session=session):
                    return
                await self.timers.cancel_for(key, session=session)
                await self.feed.append(mdt=doc["mdt"], alert_id=key, kind="acknowledged", at=at, session=session)
                await self.ctx.publish(Event.new(
                    RoutingKey.ALERT_ACKNOWLEDGED,
                    AlertAcknowledged(alert_id=key, recipient=doc["recipient"],
                                      document_id=(doc.get("document") or {}).get("document_id", ""),
                                      patient_nhs_number=doc["patient"], actor=actor),
                    source=self.ctx.source, subject=key, correlation_id=request_id,
                    client_request_id=client_request_id(),
                ), session=session)

        await self.write(work)
        updated = await self.alerts.get(key)
        assert updated is not None
        return await self.render(updated)

    # -- timers --

    async def run_timers(self) -> int:
        fired = await self.write(self.timers.run_due)
        return fired

    async def _fire_escalation(self, timer: Document, session: Session) -> None:
        alert = await self.alerts.get(timer["subject"], session=session)
        step = int(timer["data"]["step"])
        if alert is None or alert["status"] != OPEN or step >= len(self.rules.escalation):
            return
        to = self.rules.escalation[step].to
        at = stamp(self.clock.now())
        if not await self.alerts.transition(alert["_id"], {"status": OPEN, "escalation_level": step}, {
                "escalation_level": step + 1, "state": ESCALATED,
                "escalations": [*alert.get("escalations", []), {"to": to, "at": at}]}, session=session):
            return
        await self.feed.append(mdt=alert["mdt"], alert_id=alert["_id"], kind="escalated", at=at, session=session)
        await self.ctx.publish(Event.new(
            RoutingKey.ALERT_ESCALATED,
            AlertEscalated(alert_id=alert["_id"], recipient=alert["recipient"],
                           escalated_to=f"{alert['recipient']}#{to}",
                           reason=f"not acknowledged within escalation step {step + 1}",
                           document_id=(alert.get("document") or {}).get("document_id", ""),
                           patient_nhs_number=alert["patient"]),
            source=self.ctx.source, subject=alert["_id"],
        ), session=session)
        if step + 1 < len(self.rules.escalation):
            await self.timers.schedule(f"{ESCALATE}|{alert['_id']}|{step + 1}", ESCALATE,
                                       self.clock.now() + self._escalation_delay(step + 1),
                                       subject=alert["_id"], session=session, step=step + 1)

    async def _schedule_breach_checks(self, pathway: Document, clocks: Any, session: Session) -> None:
        for name in clocks:
            clock = pathway["clocks"][name]
            due = self.pathways.breach_check_due(clock, name, date.fromisoformat(clock["start"]))
            if due is not None:
                await self.timers.schedule(f"{BREACH_CHECK}|{pathway['_id']}|{name}|{clock['start']}|{due}",
                                           BREACH_CHECK, _midnight(due), subject=pathway["_id"], session=session,
                                           clock=name, start=clock["start"])

    async def _fire_breach_check(self, timer: Document, session: Session) -> None:
        pathway = await self.pathways.get(timer["subject"], session=session)
        name, start = timer["data"]["clock"], timer["data"]["start"]
        clock = (pathway or {}).get("clocks", {}).get(name)
        if pathway is None or pathway["status"] != ACTIVE or clock is None or clock["start"] != start or clock.get("stop"):
            return
        today = self.today()
        due = self.pathways.breach_check_due(clock, name, today)
        if due is not None:  # a pause moved the day: check again then
            await self.timers.schedule(f"{BREACH_CHECK}|{pathway['_id']}|{name}|{start}|{due}", BREACH_CHECK,
                                       _midnight(due), subject=pathway["_id"], session=session, clock=name,
                                       start=start)
            return
        rule = self.rules.clocks[name]
        recipient = f"{CARETEAM_PREFIX}{pathway['mdt']}"
        from services.notification import cwt

        days = cwt.day(clock, today)
        await self._raise({
            "_id": alert_id(f"breach|{pathway['_id']}|{name}|{start}", recipient), "kind": "breach-risk",
            "recipient": recipient, "mdt": pathway["mdt"], "audience": ["coordinators", "tumour-site-lead"],
            "priority": rule.breach_risk_priority, "patient": pathway["patient"], "document": None,
            "label": rule.label, "text": f"Breach risk: day {days} of {rule.target_days} ({rule.label})",
            "pathway_id": pathway["_id"], "clock": name,
        }, None, session)

    # -- the daily digest --

    def _next_digest(self) -> datetime | None:
        if self.rules.digest is None:
            return None
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(self.rules.digest.timezone)
        hour, minute = (int(p) for p in self.rules.digest.at.split(":"))
        local = self.clock.now().astimezone(zone)
        at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return at if at > local else (at + timedelta(days=1)).replace(hour=hour, minute=minute)

    async def schedule_digest(self, mdt: str, *, session: Session | None = None) -> None:
        due = self._next_digest()
        if due is None:
            return
        key = f"{DIGEST}|{mdt}|{due.date().isoformat()}"
        if session is not None:
            await self.timers.schedule(key, DIGEST, due, subject=mdt, session=session)
            return
        async with self.ctx.store.transaction() as own:
            await self.timers.schedule(key, DIGEST, due, subject=mdt, session=own)

    async def _fire_digest(self, timer: Document, session: Session) -> None:
        mdt = timer["subject"]
        counts = await self.alerts.open_by_priority(mdt)
        today = self.today()
        risks = {"at-risk": 0, "breached": 0}
        for pathway in await self.pathways.for_mdt(mdt):
            for clock in self.pathways.clock_summary(pathway, today):
                if clock["risk"] in risks and not clock["stop"]:
                    risks[clock["risk"]] += 1
        open_total = sum(counts.values())
        detail = ", ".join(f"{counts[p]} {p}" for p in ("stat", "asap", "urgent", "routine") if counts.get(p))
        recipient = f"{CARETEAM_PREFIX}{mdt}"
        await self._raise({
            "_id": alert_id(f"digest|{mdt}|{today.isoformat()}", recipient), "kind": "daily-digest",
            "recipient": recipient, "mdt": mdt, "audience": ["coordinators"], "priority": "routine",
            "patient": None, "document": None, "label": "Daily digest", "escalate": False,
            "text": (f"Daily digest for {today.isoformat()}: {open_total} open alert(s)"
                     f"{f' ({detail})' if detail else ''}; {risks['at-risk']} pathway clock(s) at risk, "
                     f"{risks['breached']} breached"),
        }, None, session)
        await self.schedule_digest(mdt, session=session)

    # -- pathways --

    async def pathway(self, who: Caller, key: str, *, request_id: str | None = None) -> dict[str, Any]:
        doc = await self.pathways.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        resource = f"EpisodeOfCare/{key}"
        await self.access.team(who, doc["mdt"], resource=resource, request_id=request_id)
        await self.access.read(who, resource, "read", [doc["patient"]], request_id=request_id)
        return self.pathways.to_fhir(doc, self.today())

    async def pathways_for(self, who: Caller, mdt: str, *, search: str | None = None,
                           request_id: str | None = None) -> list[dict[str, Any]]:
        await self.access.team(who, mdt, resource="EpisodeOfCare", action="search", request_id=request_id)
        docs = await self.pathways.for_mdt(mdt)
        await self.access.read(who, "EpisodeOfCare", "search", [d["patient"] for d in docs], query=search,
                               request_id=request_id)
        return [self.pathways.to_fhir(d, self.today()) for d in docs]

    async def register_pathway(self, who: Caller, *, patient: str, mdt: str, route: str, on: date,
                               request_id: str | None = None) -> dict[str, Any]:
        """Open a pathway explicitly (a referral that did not come as a document, or an upgrade)."""
        await self.access.team(who, mdt, resource="EpisodeOfCare", action="create", request_id=request_id)
        if route not in self.rules.routes:
            raise FhirError.of(Code.INVALID_RESOURCE, f"route must be one of {', '.join(sorted(self.rules.routes))}.",
                               "EpisodeOfCare.extension")
        team = await self.policy.careteam(mdt)
        if await self.pathways.active(patient, mdt) is not None:
            raise FhirError.of(Code.CONFLICT, "The patient already has an active pathway at this MDT.")

        async def work() -> Document:
            async with self.ctx.store.transaction() as session:
                doc, _ = await self.pathways.open(
                    patient=patient, mdt=mdt, tumour_site=team.tumour_site if team else None, route=route,
                    starts=self.rules.routes[route], on=on, opened_by=f"registration|{uuid.uuid4()}", session=session)
                await self._schedule_breach_checks(doc, self.rules.routes[route], session)
                return doc

        created = await self.write(work)
        return self.pathways.to_fhir(created, self.today())

    async def record_event(self, who: Caller, key: str, name: str, on: date, *,
                           request_id: str | None = None) -> dict[str, Any]:
        if name not in self.rules.events:
            raise FhirError.of(Code.INVALID_PARAMETER,
                               f"event must be one of {', '.join(sorted(self.rules.events))}.", "event")
        doc = await self.pathways.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        await self.access.team(who, doc["mdt"], resource=f"EpisodeOfCare/{key}", action="update",
                               request_id=request_id)
        if doc["status"] != ACTIVE:
            raise FhirError.of(Code.CONFLICT, "The pathway is finished.")

        async def work() -> Document:
            async with self.ctx.store.transaction() as session:
                current = await self.pathways.get(key, session=session)
                assert current is not None
                started = self.pathways.apply_event(current, name, on, by=who.subject)
                await self.pathways.save(current, session=session)
                await self._schedule_breach_checks(current, started, session)
                await self._resolve_breach_alerts(current, session)
                return current

        updated = await self.write(work)
        return self.pathways.to_fhir(updated, self.today())

    async def _resolve_breach_alerts(self, pathway: Document, session: Session) -> None:
        for alert in await self.alerts.open_for_pathway(pathway["_id"], "breach-risk"):
            clock = pathway["clocks"].get(alert.get("clock", ""))
            if pathway["status"] == ACTIVE and clock is not None and not clock.get("stop"):
                continue
            at = stamp(self.clock.now())
            if await self.alerts.transition(alert["_id"], {"status": OPEN}, {
                    "status": ACKNOWLEDGED, "state": RESOLVED,
                    "resolved": {"at": at, "reason": "the clock stopped"}}, session=session):
                await self.timers.cancel_for(alert["_id"], session=session)
                await self.feed.append(mdt=alert["mdt"], alert_id=alert["_id"], kind="resolved", at=at,
                                       session=session)

    async def transfer(self, who: Caller, key: str, to_mdt: str, on: date, *,
                       request_id: str | None = None) -> dict[str, Any]:
        doc = await self.pathways.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        resource = f"EpisodeOfCare/{key}"
        await self.access.team(who, doc["mdt"], resource=resource, action="transfer", request_id=request_id)
        team = await self.policy.careteam(to_mdt)
        if team is None or not team.active:
            raise FhirError.of(Code.BUSINESS_RULE, f"CareTeam/{to_mdt} is not a known active MDT.", "team")
        if doc["status"] != ACTIVE or to_mdt == doc["mdt"]:
            raise FhirError.of(Code.CONFLICT, "Only an active pathway can move, and only to another MDT.")
        await self.access.transfer(who, resource=resource, patient=doc["patient"], to_org=team.organisation,
                                   to_mdt=to_mdt, request_id=request_id)

        async def work() -> Document:
            async with self.ctx.store.transaction() as session:
                current = await self.pathways.get(key, session=session)
                assert current is not None
                current["teams"][-1]["to"] = on.isoformat()
                current["teams"].append({"mdt": to_mdt, "from": on.isoformat()})
                current["mdt"], current["tumour_site"] = to_mdt, team.tumour_site or current.get("tumour_site")
                await self.pathways.save(current, session=session)
                recipient = f"{CARETEAM_PREFIX}{to_mdt}"
                # The clocks keep running across the move: that is why a transfer is a known breach risk.
                await self._raise({
                    "_id": alert_id(f"transfer|{key}|{len(current['teams'])}", recipient), "kind": "transfer-in",
                    "recipient": recipient, "mdt": to_mdt, "audience": ["coordinators", "tumour-site-lead"],
                    "priority": "urgent", "patient": current["patient"], "document": None,
                    "label": "Inter-provider transfer", "pathway_id": key,
                    "text": f"Pathway transferred in from CareTeam/{current['teams'][-2]['mdt']}; its clocks keep running",
                }, None, session)
                return current

        updated = await self.write(work)
        return self.pathways.to_fhir(updated, self.today())

    async def tracking_list(self, who: Caller, mdt: str, *, export: bool = False, search: str | None = None,
                            request_id: str | None = None) -> dict[str, Any]:
        resource = "EpisodeOfCare/$tracking-list"
        action = "export" if export else "search"
        await self.access.team(who, mdt, resource=resource, action=action, request_id=request_id)
        report = tracking_list(await self.pathways.for_mdt(mdt), self.today())
        await self.access.read(who, resource, action, [r["patient"] for r in report["rows"]], query=search,
                               request_id=request_id)
        return report

    async def reconcile_on_request(self, who: Caller, *, request_id: str | None = None) -> int:
        """``$reconcile`` by the exchange's operator, at most once per interval in this process."""
        if who.role != "exchange-operator":
            await self.access.deny(who, "Communication/$reconcile", "execute",
                                   Decision.deny("not-exchange-operator", "only the exchange operator may reconcile"),
                                   error=FhirError.of(Code.FORBIDDEN, "Only the exchange operator may run a reconciliation."),
                                   request_id=request_id)
        wait = self._reconcile_throttle.wait()
        if wait:
            await self.access.invoked(who, "$reconcile", "Communication", "refused", "rate limited",
                                      request_id=request_id)
            raise FhirError.of(Code.RATE_LIMITED, "A reconciliation ran moments ago; try again later.",
                               headers={"Retry-After": str(wait)})
        try:
            raised = await self.reconcile()
        except Exception:
            await self.access.invoked(who, "$reconcile", "Communication", "failed", request_id=request_id)
            raise
        await self.access.invoked(who, "$reconcile", "Communication", "success", f"raised {raised}",
                                  request_id=request_id)
        return raised

    # -- FHIR Subscriptions --

    async def subscribe(self, who: Caller, resource: dict[str, Any]) -> dict[str, Any]:
        if who.role != "system":
            raise FhirError.of(Code.FORBIDDEN, "Only a hospital system (system token) may subscribe.")
        doc = parse_subscription(resource, org=who.org, min_heartbeat=self.settings.webhook_min_heartbeat_seconds)
        team = await self.policy.careteam(doc["mdt"])
        if team is None or team.organisation != who.org:
            raise FhirError.of(Code.FORBIDDEN, "A system may only subscribe to its own organisation's MDTs.")
        await check_endpoint(self.settings.webhook_policy(), doc["endpoint"])

        async def work() -> None:
            async with self.ctx.store.transaction() as session:
                await self.subscriptions.create(doc, stamp(self.clock.now()), session=session,
                                                cap=self.settings.webhook_max_subscriptions_per_organisation)

        await self.write(work)
        return subscription_to_fhir(doc, with_secret=True)

    async def subscription(self, who: Caller, key: str) -> Document:
        doc = await self.subscriptions.get(key)
        if doc is None or doc["org"] != who.org:
            raise FhirError.of(Code.NOT_FOUND)
        return doc

    async def subscription_status(self, who: Caller, key: str) -> dict[str, Any]:
        return status_resource(await self.subscription(who, key), "query-status", [])

    async def subscription_events(self, who: Caller, key: str, since: int | None, until: int | None,
                                  content: str | None) -> dict[str, Any]:
        """``$events``: the notifications numbered ``since``..``until`` again, to fill a gap."""
        sub = await self.subscription(who, key)
        last = int(sub["events"])
        since, until = max(since or 1, 1), min(until or last, last)
        rows = await self.subscriptions.events(key, since, until) if since <= until else []
        payload = content or sub["payload"]
        if payload == "full-resource" and not sub["endpoint"].startswith("https://"):
            payload = "id-only"
        events = [(r["number"], r["created"], r["focus"]) for r in rows if r["kind"] == EVENT]
        resources = {}
        if payload == "full-resource":
            for _, _, focus in events:
                alert = await self.alerts.get(focus or "")
                if alert is not None:
                    resources[alert["_id"]] = await self.render(alert)
        bundle = notification_bundle({**sub, "payload": payload}, "query-event", events, resources)
        return bundle


def _midnight(on: date) -> datetime:
    from datetime import UTC, time

    return datetime.combine(on, time(0, 0), tzinfo=UTC)
