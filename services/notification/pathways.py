"""Cancer pathways: one per patient per MDT, with its waiting-time clocks, kept as FHIR EpisodeOfCare.

A pathway opens on a document type the rules mark as opening one (an urgent suspected-cancer referral)
or on explicit registration; later documents for the patient at that MDT attach to it. Clocks start and
stop on the rules' document types and recorded events; a transfer moves the pathway to another MDT and
keeps its clocks.
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

    async def open(self, *, patient: str, mdt: str, tumour_site: str | None, route: str, starts: tuple[str, ...],
                   on: date, opened_by: str, session: Session) -> tuple[Document, bool]:
        """Open a pathway (idempotent on what opened it); returns it and whether it is new."""
        key = pathway_id(patient, mdt, opened_by)
        existing = await self._rows.get(key, session=session)
        if existing is not None:
            return existing, False
        doc: Document = {
            "_id": key, "patient": patient, "mdt": mdt, "tumour_site": tumour_site, "route": route,
            "status": ACTIVE, "opened": on.isoformat(), "opened_by": opened_by,
            "clocks": {name: waiting_times.new_clock(on) for name in starts},
            "events": [], "documents": [], "teams": [{"mdt": mdt, "from": on.isoformat()}], "version": 1,
        }
        await self._rows.insert(doc, session=session)
        return doc, True

    async def save(self, doc: Document, *, session: Session) -> None:
        doc["version"] = int(doc.get("version", 1)) + 1
        await self._rows.replace(doc, session=session)

    def apply_event(self, doc: Document, name: str, on: date, *, by: str) -> list[str]:
        """Apply a recorded event to the pathway's clocks; returns the clocks it started."""
        event: PathwayEvent = self._rules.events[name]
        clocks = doc["clocks"]
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
        doc["events"].append({"event": name, "date": on.isoformat(), "by": by})
        if event.closes_pathway:
            doc["status"] = FINISHED
        return started

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
            out.append({"clock": name, "day": waiting_times.day(clock, today), "target": rule.target_days,
                        "risk": waiting_times.risk(clock, rule, today), "start": clock["start"],
                        "stop": clock.get("stop")})
        return out

    def breach_check_due(self, clock: dict[str, Any], name: str, today: date) -> date | None:
        """The date the clock reaches its breach-risk day, or None if it already has or has stopped."""
        if clock.get("stop"):
            return None
        remaining = self._rules.clocks[name].breach_risk_day - waiting_times.day(clock, today)
        return today + timedelta(days=remaining) if remaining > 0 else None

    def to_fhir(self, doc: Document, today: date) -> dict[str, Any]:
        history = [{"status": "active", "period": {"start": t["from"], **({"end": t["to"]} if t.get("to") else {})}}
                   for t in doc["teams"]]
        resource: dict[str, Any] = {
            "resourceType": "EpisodeOfCare",
            "id": doc["_id"],
            "meta": {"versionId": str(doc.get("version", 1))},
            "status": doc["status"],
            "statusHistory": history,
            "type": [{"coding": [{"system": "https://lhcie.london/fhir/CodeSystem/cancer-pathway",
                                  "code": doc.get("tumour_site") or "unspecified"}]}],
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
        return resource


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
        rows.append({"pathway": doc["_id"], "patient": doc["patient"], "tumour_site": doc.get("tumour_site") or "",
                     "route": doc["route"], "start": rtt["start"], "day": days, "bucket": label,
                     "decision_to_treat": has_dtt})
    rows.sort(key=lambda r: -r["day"])
    return {"rows": rows, "buckets": buckets, "passed_day_28_last_7_days": passed_28, "new_referrals_by_route": routes}
