"""Alerts from stored documents: which MDTs a stored document reaches, the pathway it opens or joins, and
the alert each of those MDTs gets by the rules.

Every stored document is kept in a ledger of its facts, so that a reconciliation can raise later what
could not be raised when it arrived (an MDT or an agreement that became known after it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

from services.notification.access import BED_MANAGER, BEDS
from services.notification.alerting import Alerting
from services.notification.alerts import CARETEAM_PREFIX, Alerts, alert_id
from services.notification.breach_checks import BreachChecks
from services.notification.feed import Writer
from services.notification.pathways import Pathways
from services.notification.rules import RuleSet
from shared.auth import Caller
from shared.clock import day_of, stamp
from shared.events import CareTeamState, DocumentFacts, DocumentStored, Event
from shared.policy import PolicyView
from shared.store import ASCENDING, Document, DocumentStore, Index, Session

log = logging.getLogger(__name__)
ORGANIZATION_PREFIX = "Organization/"
INTENDED_RECIPIENT_KIND = "intended-recipient"


class Once(Protocol):
    """Applies an event's effect exactly once (the service's inbox): None for a redelivered event."""

    def __call__(
        self, event: Event, effect: Callable[[Session], Awaitable[int]], *, shared: bool = False
    ) -> Awaitable[int | None]: ...


class StoredDocuments:
    """What this service knows of every stored document: the source of reconciliation."""

    def __init__(self, store: DocumentStore) -> None:
        self._rows = store.collection("documents", [Index(("related",)), Index(("stored_at",))])

    async def get(self, key: str) -> Document | None:
        return await self._rows.get(key)

    async def record(self, facts: DocumentFacts, stored_at: datetime, *, session: Session) -> None:
        await self._rows.replace(
            {
                "_id": facts.document_id,
                "facts": facts.model_dump(mode="json"),
                "related": list(facts.related),
                "stored_at": stamp(stored_at),
            },
            session=session,
            upsert=True,
        )

    async def page(self, *, mdt: str | None, skip: int, limit: int) -> list[Document]:
        """Oldest first; only those related to ``mdt`` when given."""
        where = {"related": f"{CARETEAM_PREFIX}{mdt}"} if mdt else None
        return await self._rows.find(where, sort=[("stored_at", ASCENDING)], limit=limit, skip=skip)


class DocumentAlerts:
    def __init__(
        self,
        *,
        documents: StoredDocuments,
        alerts: Alerts,
        pathways: Pathways,
        policy: PolicyView,
        alerting: Alerting,
        breach_checks: BreachChecks,
        rules: RuleSet,
        once: Once,
        write: Writer,
    ) -> None:
        self._documents = documents
        self._alerts = alerts
        self._pathways = pathways
        self._policy = policy
        self._alerting = alerting
        self._breach_checks = breach_checks
        self._rules = rules
        self._once = once
        self._write = write

    async def on_stored(self, event: Event) -> None:
        stored = event.payload()
        assert isinstance(stored, DocumentStored)
        facts = stored.document

        async def effect(session: Session) -> int:
            # Decided inside the transaction: a policy change commits either before it (and is seen here)
            # or after it (and its reconciliation then finds this document in the ledger).
            teams = await self.teams_for(facts)
            organisations = await self.organisations_for(facts)
            await self._documents.record(facts, stored.stored_at, session=session)
            raised = 0
            for team in teams:
                raised += await self.alert_for(facts, stored.stored_at, team, event.correlationid, session)
            for ods in organisations:
                raised += await self.organisation_alert(facts, ods, event.correlationid, session)
            return raised

        # Shared: every read that decides an alert goes through the session, but for the sharing policy, which
        # changes only in transactions of its own (reconciliation finds a document recorded here, below).
        raised = await self._write(lambda: self._once(event, effect, shared=True))
        if raised:
            log.info("notification.raised count=%d", raised, extra={"code": "NOT001"})

    async def teams_for(self, facts: DocumentFacts) -> list[CareTeamState]:
        """The active MDTs the document names (in its context, or as its intended recipients) whose
        organisation the sharing policy lets see it."""
        teams: list[CareTeamState] = []
        for ref in dict.fromkeys((*facts.related, *facts.intended_recipients)):
            if not ref.startswith(CARETEAM_PREFIX):
                continue
            team = await self._policy.careteam(ref.removeprefix(CARETEAM_PREFIX))
            if team is None or not team.active:
                log.info("notification.unknown_team", extra={"code": "NOT002"})
                continue
            # The team's organisation must itself be allowed to see the document (fail closed).
            decision = await self._policy.decide(
                Caller(
                    org=team.organisation, role="mdt-coordinator", subject=ref, scopes=frozenset(), mdt=team.careteam_id
                ),
                facts,
            )
            if not decision.allowed:
                log.info("notification.not_shared rule=%s", decision.rule, extra={"code": "NOT003"})
                continue
            teams.append(team)
        return teams

    async def organisations_for(self, facts: DocumentFacts) -> list[str]:
        """The ODS codes of the organisations named as intended recipients that the sharing policy still
        lets see the document now it is stored (intake admitted them when it was received)."""
        found = []
        for ref in facts.intended_recipients:
            if not ref.startswith(ORGANIZATION_PREFIX):
                continue
            ods = ref.removeprefix(ORGANIZATION_PREFIX)
            decision = await self._policy.decide(
                Caller(org=ods, role="clinician", subject=ref, scopes=frozenset()), facts
            )
            if not decision.allowed:
                log.info("notification.not_shared rule=%s", decision.rule, extra={"code": "NOT003"})
                continue
            found.append(ods)
        return found

    async def organisation_alert(
        self, facts: DocumentFacts, ods: str, correlation: str | None, session: Session
    ) -> int:
        """The organisation's alert for a document it was named an intended recipient of (1), unless it has
        one already (0): in the organisation's own feed, where its bed managers' alerts are."""
        recipient = f"{ORGANIZATION_PREFIX}{ods}"
        key = alert_id(facts.document_id, recipient)
        if await self._alerts.get(key, session=session) is not None:
            return 0
        doc_type = self._rules.document_type(facts.type_system, facts.type_code)
        label = doc_type.label if doc_type else (facts.type_display or "document")
        alert: dict[str, Any] = {
            "_id": key,
            "kind": INTENDED_RECIPIENT_KIND,
            "recipient": recipient,
            "mdt": f"{BEDS}{ods}",
            "audience": [BED_MANAGER],
            "priority": "routine",
            "patient": facts.patient_nhs_number,
            "document": facts.model_dump(mode="json"),
            "label": label,
            "text": f"New {label} from {facts.custodian} (this organisation is an intended recipient)",
            "pathway_id": None,
            # The MDT escalation rules are for an MDT's alerts; an organisation's has no acknowledgement clock.
            "escalate": False,
        }
        return int(await self._alerting.raise_alert(alert, correlation, session))

    async def alert_for(
        self, facts: DocumentFacts, stored_at: datetime, team: CareTeamState, correlation: str | None, session: Session
    ) -> int:
        """The team's alert for the document (1), unless it has one already (0)."""
        recipient = f"{CARETEAM_PREFIX}{team.careteam_id}"
        key = alert_id(facts.document_id, recipient)
        if await self._alerts.get(key, session=session) is not None:
            return 0
        doc_type = self._rules.document_type(facts.type_system, facts.type_code)
        pathway = await self._pathways.active(facts.patient_nhs_number, team.careteam_id, session=session)
        if pathway is None and doc_type and doc_type.opens_pathway:
            opening = doc_type.opens_pathway
            pathway, new = await self._pathways.open(
                patient=facts.patient_nhs_number,
                mdt=team.careteam_id,
                tumour_site=team.tumour_site,
                route=opening.route,
                starts=opening.starts,
                on=day_of(stored_at),
                opened_by=facts.document_id,
                session=session,
            )
            if new:
                await self._breach_checks.schedule(pathway, opening.starts, session)
        elif pathway is not None and facts.document_id not in pathway["documents"]:
            pathway["documents"].append(facts.document_id)
            await self._pathways.save(pathway, session=session)
        rule = self._rules.alert_rule(doc_type, self._pathways.state(pathway))
        label = doc_type.label if doc_type else (facts.type_display or "document")
        audience = list(rule.notify)
        if "named-clinician" in audience and not any(r.startswith("Practitioner/") for r in facts.related):
            audience.remove("named-clinician")
        alert: dict[str, Any] = {
            "_id": key,
            "kind": "document-available",
            "recipient": recipient,
            "mdt": team.careteam_id,
            "audience": audience,
            "priority": rule.priority,
            "patient": facts.patient_nhs_number,
            "document": facts.model_dump(mode="json"),
            "label": label,
            "text": f"New {label} from {facts.custodian}",
            "pathway_id": pathway["_id"] if pathway else None,
        }
        return int(await self._alerting.raise_alert(alert, correlation, session))
