"""Cancer pathways: one per patient per MDT, with its waiting-time clocks, kept as FHIR EpisodeOfCare.

A pathway opens on a document type the rules mark as opening one (an urgent suspected-cancer referral)
or on explicit registration; later documents for the patient at that MDT attach to it. Clocks start and
stop on the rules' document types and recorded events; a transfer moves the pathway to another MDT and
keeps its clocks. A recorded event's date can be corrected: the clocks are then replayed from the opening
over every recorded event in date order, so a correction counts as if the right date had been recorded.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from services.notification import waiting_times
from services.notification.rules import PathwayEvent, RuleSet
from shared.fhir.identifiers import NHS_NUMBER
from shared.store import DESCENDING, Document, DocumentStore, Index, Session

PATHWAY_NAMESPACE = uuid.UUID("0b7e8a52-5d1e-4a8f-9d0c-2f6e1c9a7b31")
ACTIVE, FINISHED = "active", "finished"
CLOCK_URL = "https://lhcie.london/fhir/StructureDefinition/cwt-clock"
EVENT_URL = "https://lhcie.london/fhir/StructureDefinition/cwt-event"
ROUTE_URL = "https://lhcie.london/fhir/StructureDefinition/cwt-referral-route"


def pathway_id(patient: str, mdt: str, opened_by: str) -> str:
    return str(uuid.uuid5(PATHWAY_NAMESPACE, f"{patient}|{mdt}|{opened_by}"))


class Pathways:
    def __init__(self, store: DocumentStore, rules: RuleSet) -> None:
        self._rows = store.collection("pathways", [Index(("patient", "mdt", "status")), Index(("mdt", "status"))])
        self._rules = rules

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        return await self._rows.get(key, session=session)

    async def active(self, patient: str, mdt: str, *, session: Session | None = None) -> Document | None:
        return await self._rows.find_one({"patient": patient, "mdt": mdt, "status": ACTIVE}, session=session)

    async def for_mdt(self, mdt: str, *, status: str | None = ACTIVE) -> list[Document]:
        where: dict[str, Any] = {"mdt": mdt}
        if status:
            where["status"] = status
        return await self._rows.find(where, sort=[("opened", DESCENDING)], limit=1000)

    async def open(
        self,
        *,
        patient: str,
        mdt: str,
        tumour_site: str | None,
        route: str,
        starts: tuple[str, ...],
        on: date,
        opened_by: str,
        session: Session,
    ) -> tuple[Document, bool]:
        """Open a pathway (idempotent on what opened it); returns it and whether it is new."""
        key = pathway_id(patient, mdt, opened_by)
        existing = await self._rows.get(key, session=session)
        if existing is not None:
            return existing, False
        doc: Document = {
            "_id": key,
            "patient": patient,
            "mdt": mdt,
            "tumour_site": tumour_site,
            "route": route,
            "status": ACTIVE,
            "opened": on.isoformat(),
            "opened_by": opened_by,
            "clocks": {name: waiting_times.new_clock(on) for name in starts},
            "starts": list(starts),
            "events": [],
            "documents": [],
            "teams": [{"mdt": mdt, "from": on.isoformat()}],
            "version": 1,
        }
        await self._rows.insert(doc, session=session)
        return doc, True

    async def save(self, doc: Document, *, session: Session) -> None:
        doc["version"] = int(doc.get("version", 1)) + 1
        await self._rows.replace(doc, session=session)

    def apply_event(self, doc: Document, name: str, on: date, *, by: str) -> list[str]:
        """Apply a recorded event to the pathway's clocks; returns the clocks it started."""
        event: PathwayEvent = self._rules.events[name]
        started = _apply(event, doc["clocks"], on)
        doc["events"].append({"id": str(len(doc["events"]) + 1), "event": name, "date": on.isoformat(), "by": by})
        if event.closes_pathway:
            doc["status"] = FINISHED
        return started

    def repeatable(self, name: str) -> bool:
        """Pauses and resumes happen more than once on a pathway; every other event happens once, so a
        second record of it is a correction of the first one's date."""
        event = self._rules.events[name]
        return bool(event.pauses or event.resumes)

    def recorded(self, doc: Document, *, event_id: str | None = None, name: str | None = None) -> Document | None:
        """A recorded event by its id, or the latest record of the event ``name``."""
        for index, event in reversed(list(enumerate(doc["events"]))):
            if (event_id is not None and event_id_of(event, index) == event_id) or (
                event_id is None and event["event"] == name
            ):
                found: Document = event
                return found
        return None

    def correct_event(self, doc: Document, event: Document, on: date, *, by: str, at: str, reason: str | None) -> str:
        """Give a recorded event its right date and replay the clocks; returns the date it had."""
        before = str(event["date"])
        event.setdefault("corrections", []).append(
            {"from": before, "to": on.isoformat(), "by": by, "at": at, **({"reason": reason} if reason else {})}
        )
        event["date"] = on.isoformat()
        self.replay(doc)
        return before

    def replay(self, doc: Document) -> None:
        """The clocks recomputed from the opening and every recorded event, in date order (events on one
        day in the order they were recorded)."""
        opened = date.fromisoformat(doc["opened"])
        starts = doc.get("starts") or self._rules.routes.get(doc["route"], ())
        clocks: dict[str, dict[str, Any]] = {name: waiting_times.new_clock(opened) for name in starts}
        for recorded in sorted(doc["events"], key=lambda e: e["date"]):
            _apply(self._rules.events[recorded["event"]], clocks, date.fromisoformat(recorded["date"]))
        doc["clocks"] = clocks

    def state(self, doc: Document | None) -> str:
        """The pathway state the alert rules match on."""
        if doc is None or doc["status"] != ACTIVE:
            return "none"
        if "dtt" in doc["clocks"]:
            return "decision-to-treat"
        return "open"

    def clock_summary(self, doc: Document, today: date) -> list[dict[str, Any]]:
        out = []
        for name, clock in doc["clocks"].items():
            rule = self._rules.clocks[name]
            out.append(
                {
                    "clock": name,
                    "day": waiting_times.day(clock, today),
                    "target": rule.target_days,
                    "risk": waiting_times.risk(clock, rule, today),
                    "start": clock["start"],
                    "stop": clock.get("stop"),
                }
            )
        return out

    def breach_check_due(self, clock: dict[str, Any], name: str, today: date) -> date | None:
        """The date the clock reaches its breach-risk day, or None if it already has or has stopped."""
        if clock.get("stop"):
            return None
        remaining = self._rules.clocks[name].breach_risk_day - waiting_times.day(clock, today)
        return today + timedelta(days=remaining) if remaining > 0 else None

    def to_fhir(self, doc: Document, today: date) -> dict[str, Any]:
        history = [
            {"status": "active", "period": {"start": t["from"], **({"end": t["to"]} if t.get("to") else {})}}
            for t in doc["teams"]
        ]
        resource: dict[str, Any] = {
            "resourceType": "EpisodeOfCare",
            "id": doc["_id"],
            "meta": {"versionId": str(doc.get("version", 1))},
            "status": doc["status"],
            "statusHistory": history,
            "type": [
                {
                    "coding": [
                        {
                            "system": "https://lhcie.london/fhir/CodeSystem/cancer-pathway",
                            "code": doc.get("tumour_site") or "unspecified",
                        }
                    ]
                }
            ],
            "patient": {"identifier": {"system": NHS_NUMBER, "value": doc["patient"]}},
            "team": [{"reference": f"CareTeam/{doc['mdt']}"}],
            "period": {"start": doc["opened"]},
            "extension": [{"url": ROUTE_URL, "valueCode": doc["route"]}],
        }
        for clock in self.clock_summary(doc, today):
            parts: list[dict[str, Any]] = [
                {"url": "clock", "valueCode": clock["clock"]},
                {"url": "start", "valueDate": clock["start"]},
                {"url": "day", "valueInteger": clock["day"]},
                {"url": "target", "valueInteger": clock["target"]},
                {"url": "risk", "valueCode": clock["risk"]},
            ]
            if clock["stop"]:
                parts.append({"url": "stop", "valueDate": clock["stop"]})
            resource["extension"].append({"url": CLOCK_URL, "extension": parts})
        for index, event in enumerate(doc["events"]):
            recorded: list[dict[str, Any]] = [
                {"url": "id", "valueString": event_id_of(event, index)},
                {"url": "event", "valueCode": event["event"]},
                {"url": "date", "valueDate": event["date"]},
                {"url": "recordedBy", "valueString": event["by"]},
            ]
            for correction in event.get("corrections", []):
                recorded.append({"url": "correctedFrom", "valueDate": correction["from"]})
            resource["extension"].append({"url": EVENT_URL, "extension": recorded})
        return resource


def event_id_of(event: Document, index: int) -> str:
    """A recorded event's id: its place in the pathway's history (events recorded before ids were kept
    have the same number)."""
    return str(event.get("id") or index + 1)


def _apply(event: PathwayEvent, clocks: dict[str, Any], on: date) -> list[str]:
    started = []
    for clock in event.starts:
        if clock not in clocks or clocks[clock].get("stop"):
            clocks[clock] = waiting_times.new_clock(on)
            started.append(clock)
    for clock in event.stops:
        if clock in clocks and not clocks[clock].get("stop"):
            waiting_times.stop(clocks[clock], on)
    for clock in event.pauses:
        if clock in clocks:
            waiting_times.pause(clocks[clock], on)
    for clock in event.resumes:
        if clock in clocks:
            waiting_times.resume(clocks[clock], on)
    return started


def tracking_list(pathways: list[Document], today: date) -> dict[str, Any]:
    """The weekly patient tracking list for one MDT: 62-day pathways by bucket, with and without a DTT."""
    rows = []
    buckets = {label: {"with_dtt": 0, "without_dtt": 0} for _, _, label in waiting_times.PTL_BUCKETS}
    passed_28: list[str] = []
    routes: dict[str, int] = {}
    week_ago = today - timedelta(days=7)
    for doc in pathways:
        if date.fromisoformat(doc["opened"]) > week_ago:
            routes[doc["route"]] = routes.get(doc["route"], 0) + 1
        rtt = doc["clocks"].get("rtt")
        if rtt is None or rtt.get("stop"):
            continue
        days = waiting_times.day(rtt, today)
        has_dtt = "dtt" in doc["clocks"]
        label = waiting_times.bucket(days)
        buckets[label]["with_dtt" if has_dtt else "without_dtt"] += 1
        if 28 < days <= 35:
            passed_28.append(doc["_id"])
        rows.append(
            {
                "pathway": doc["_id"],
                "patient": doc["patient"],
                "tumour_site": doc.get("tumour_site") or "",
                "route": doc["route"],
                "start": rtt["start"],
                "day": days,
                "bucket": label,
                "decision_to_treat": has_dtt,
            }
        )
    rows.sort(key=lambda r: -r["day"])
    return {"rows": rows, "buckets": buckets, "passed_day_28_last_7_days": passed_28, "new_referrals_by_route": routes}


def tracking_list_parameters(report: dict[str, Any]) -> dict[str, Any]:
    """The tracking list as the ``$tracking-list`` operation's output, a FHIR Parameters resource: one
    ``bucket`` per 62-day bucket, one ``row`` per patient (most days first), the pathways that passed day
    28 in the last 7 days, and the week's new referrals by route."""
    parameters: list[dict[str, Any]] = []
    for label, counts in report["buckets"].items():
        parameters.append(
            {
                "name": "bucket",
                "part": [
                    {"name": "days", "valueString": label},
                    {"name": "withDecisionToTreat", "valueInteger": counts["with_dtt"]},
                    {"name": "withoutDecisionToTreat", "valueInteger": counts["without_dtt"]},
                ],
            }
        )
    for row in report["rows"]:
        parts: list[dict[str, Any]] = [
            {"name": "pathway", "valueReference": {"reference": f"EpisodeOfCare/{row['pathway']}"}},
            {"name": "patient", "valueIdentifier": {"system": NHS_NUMBER, "value": row["patient"]}},
            {"name": "route", "valueCode": row["route"]},
            {"name": "start", "valueDate": row["start"]},
            {"name": "day", "valueInteger": row["day"]},
            {"name": "bucket", "valueString": row["bucket"]},
            {"name": "decisionToTreat", "valueBoolean": row["decision_to_treat"]},
        ]
        if row["tumour_site"]:  # FHIR has no empty strings
            parts.insert(2, {"name": "tumourSite", "valueCode": row["tumour_site"]})
        parameters.append({"name": "row", "part": parts})
    for key in report["passed_day_28_last_7_days"]:
        parameters.append({"name": "passedDay28Last7Days", "valueReference": {"reference": f"EpisodeOfCare/{key}"}})
    for route, count in sorted(report["new_referrals_by_route"].items()):
        parameters.append(
            {
                "name": "newReferrals",
                "part": [{"name": "route", "valueCode": route}, {"name": "count", "valueInteger": count}],
            }
        )
    return {"resourceType": "Parameters", "parameter": parameters}
