"""What an MDT's staff do with its cancer pathways: read and list them, register one, record an event on
its clocks, transfer it to another provider's MDT, and export the patient tracking list. Each is checked
against the caller's membership of the MDT and leaves a record of the patients it showed."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from services.notification.access import Access
from services.notification.alerting import Alerting
from services.notification.alerts import CARETEAM_PREFIX, alert_id
from services.notification.breach_checks import BreachChecks
from services.notification.feed import Writer
from services.notification.pathways import ACTIVE, Pathways, tracking_list
from services.notification.rules import RuleSet
from shared.auth import Caller
from shared.clock import Clock, day_of, stamp
from shared.fhir.errors import Code, FhirError
from shared.policy import PolicyView
from shared.store import Document, DocumentStore


class PathwayActions:
    def __init__(
        self,
        *,
        store: DocumentStore,
        pathways: Pathways,
        policy: PolicyView,
        access: Access,
        alerting: Alerting,
        breach_checks: BreachChecks,
        rules: RuleSet,
        clock: Clock,
        write: Writer,
    ) -> None:
        self._store = store
        self._pathways = pathways
        self._policy = policy
        self._access = access
        self._alerting = alerting
        self._breach_checks = breach_checks
        self._rules = rules
        self._clock = clock
        self._write = write

    def _today(self) -> date:
        return day_of(self._clock.now())

    async def read(self, who: Caller, key: str, *, request_id: str | None = None) -> dict[str, Any]:
        doc = await self._pathways.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        resource = f"EpisodeOfCare/{key}"
        await self._access.team(who, doc["mdt"], resource=resource, request_id=request_id)
        await self._access.read(who, resource, "read", [doc["patient"]], request_id=request_id)
        return self._pathways.to_fhir(doc, self._today())

    async def for_mdt(
        self, who: Caller, mdt: str, *, search: str | None = None, request_id: str | None = None
    ) -> list[dict[str, Any]]:
        await self._access.team(who, mdt, resource="EpisodeOfCare", action="search", request_id=request_id)
        docs = await self._pathways.for_mdt(mdt)
        await self._access.read(
            who, "EpisodeOfCare", "search", [d["patient"] for d in docs], query=search, request_id=request_id
        )
        return [self._pathways.to_fhir(d, self._today()) for d in docs]

    async def register(
        self, who: Caller, *, patient: str, mdt: str, route: str, on: date, request_id: str | None = None
    ) -> dict[str, Any]:
        """Open a pathway explicitly (a referral that did not come as a document, or an upgrade)."""
        await self._access.team(who, mdt, resource="EpisodeOfCare", action="create", request_id=request_id)
        if route not in self._rules.routes:
            raise FhirError.of(
                Code.INVALID_RESOURCE,
                f"route must be one of {', '.join(sorted(self._rules.routes))}.",
                "EpisodeOfCare.extension",
            )
        team = await self._policy.careteam(mdt)
        if await self._pathways.active(patient, mdt) is not None:
            raise FhirError.of(Code.CONFLICT, "The patient already has an active pathway at this MDT.")

        async def work() -> Document:
            async with self._store.transaction() as session:
                doc, _ = await self._pathways.open(
                    patient=patient,
                    mdt=mdt,
                    tumour_site=team.tumour_site if team else None,
                    route=route,
                    starts=self._rules.routes[route],
                    on=on,
                    opened_by=f"registration|{uuid.uuid4()}",
                    session=session,
                )
                await self._breach_checks.schedule(doc, self._rules.routes[route], session)
                return doc

        created = await self._write(work)
        return self._pathways.to_fhir(created, self._today())

    async def record_event(
        self,
        who: Caller,
        key: str,
        name: str,
        on: date,
        *,
        corrects: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Record an event on the pathway's clocks, or correct the date of one already recorded: the one
        ``corrects`` names, or the earlier record of an event that happens once. A correction replays the
        clocks, is kept in the event's history and is audited."""
        if name not in self._rules.events:
            raise FhirError.of(
                Code.INVALID_PARAMETER, f"event must be one of {', '.join(sorted(self._rules.events))}.", "event"
            )
        doc = await self._pathways.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        resource = f"EpisodeOfCare/{key}"
        await self._access.team(who, doc["mdt"], resource=resource, action="update", request_id=request_id)
        earlier = self._earlier(doc, name, corrects)
        if earlier is not None and earlier["date"] == on.isoformat():
            return self._pathways.to_fhir(doc, self._today())  # the same record again changes nothing
        if earlier is None and doc["status"] != ACTIVE:
            raise FhirError.of(Code.CONFLICT, "The pathway is finished.")
        corrected: list[str] = []

        async def work() -> Document:
            async with self._store.transaction() as session:
                current = await self._pathways.get(key, session=session)
                assert current is not None
                target = self._earlier(current, name, corrects)
                if target is not None:
                    corrected.append(
                        self._pathways.correct_event(
                            current, target, on, by=who.subject, at=stamp(self._clock.now()), reason=reason
                        )
                    )
                    started = [n for n, c in current["clocks"].items() if not c.get("stop")]
                else:
                    started = self._pathways.apply_event(current, name, on, by=who.subject)
                await self._pathways.save(current, session=session)
                # Scheduling is idempotent per clock start, and a check whose start moved finds nothing.
                await self._breach_checks.schedule(current, started, session)
                await self._breach_checks.resolve_stopped(current, session)
                return current

        updated = await self._write(work)
        if corrected:
            detail = f"{name} corrected from {corrected[0]} to {on.isoformat()}" + (f": {reason}" if reason else "")
            await self._access.invoked(who, "$record-event", resource, "success", detail, request_id=request_id)
        return self._pathways.to_fhir(updated, self._today())

    def _earlier(self, doc: Document, name: str, corrects: str | None) -> Document | None:
        """The recorded event a new record of ``name`` corrects, if it is a correction."""
        if corrects is not None:
            found = self._pathways.recorded(doc, event_id=corrects)
            if found is None or found["event"] != name:
                raise FhirError.of(
                    Code.INVALID_PARAMETER, f"corrects must name a recorded {name} event of this pathway.", "corrects"
                )
            return found
        if self._pathways.repeatable(name):
            return None
        return self._pathways.recorded(doc, name=name)

    async def transfer(
        self, who: Caller, key: str, to_mdt: str, on: date, *, request_id: str | None = None
    ) -> dict[str, Any]:
        doc = await self._pathways.get(key)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        resource = f"EpisodeOfCare/{key}"
        await self._access.team(who, doc["mdt"], resource=resource, action="transfer", request_id=request_id)
        team = await self._policy.careteam(to_mdt)
        if team is None or not team.active:
            raise FhirError.of(Code.BUSINESS_RULE, f"CareTeam/{to_mdt} is not a known active MDT.", "team")
        if doc["status"] != ACTIVE or to_mdt == doc["mdt"]:
            raise FhirError.of(Code.CONFLICT, "Only an active pathway can move, and only to another MDT.")
        await self._access.transfer(
            who,
            resource=resource,
            patient=doc["patient"],
            to_org=team.organisation,
            to_mdt=to_mdt,
            request_id=request_id,
        )

        async def work() -> Document:
            async with self._store.transaction() as session:
                current = await self._pathways.get(key, session=session)
                assert current is not None
                current["teams"][-1]["to"] = on.isoformat()
                current["teams"].append({"mdt": to_mdt, "from": on.isoformat()})
                current["mdt"], current["tumour_site"] = to_mdt, team.tumour_site or current.get("tumour_site")
                await self._pathways.save(current, session=session)
                recipient = f"{CARETEAM_PREFIX}{to_mdt}"
                # The clocks keep running across the move: that is why a transfer is a known breach risk.
                await self._alerting.raise_alert(
                    {
                        "_id": alert_id(f"transfer|{key}|{len(current['teams'])}", recipient),
                        "kind": "transfer-in",
                        "recipient": recipient,
                        "mdt": to_mdt,
                        "audience": ["coordinators", "tumour-site-lead"],
                        "priority": "urgent",
                        "patient": current["patient"],
                        "document": None,
                        "label": "Inter-provider transfer",
                        "pathway_id": key,
                        "text": f"Pathway transferred in from CareTeam/{current['teams'][-2]['mdt']}; "
                        "its clocks keep running",
                    },
                    None,
                    session,
                )
                return current

        updated = await self._write(work)
        return self._pathways.to_fhir(updated, self._today())

    async def tracking_list(
        self, who: Caller, mdt: str, *, export: bool = False, search: str | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        resource = "EpisodeOfCare/$tracking-list"
        action = "export" if export else "search"
        await self._access.team(who, mdt, resource=resource, action=action, request_id=request_id)
        report = tracking_list(await self._pathways.for_mdt(mdt), self._today())
        await self._access.read(
            who, resource, action, [r["patient"] for r in report["rows"]], query=search, request_id=request_id
        )
        return report
