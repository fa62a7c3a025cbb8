"""Alerts for MDT coordinators, kept as FHIR Communication resources.

One alert per document per recipient team: its id is derived from both, so a redelivered event, a
reconciliation pass or a second replica cannot raise it twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from services.notification.pathways import Pathways
from services.notification.rules import rank
from shared.clock import Clock, day_of, stamp
from shared.fhir.dates import DateSearch, instant_filter
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE
from shared.store import DESCENDING, Document, DocumentStore, Filter, Index, Session

ALERT_NAMESPACE = uuid.UUID("6f1c3f0e-2d7b-4c3e-9a55-1f3f6b1d2c4a")
OPEN, ACKNOWLEDGED = "in-progress", "completed"
CATEGORY_SYSTEM = "https://lhcie.london/fhir/CodeSystem/alert-category"
STATE_URL = "https://lhcie.london/fhir/StructureDefinition/alert-state"
CLOCK_URL = "https://lhcie.london/fhir/StructureDefinition/cwt-clock"
AUDIENCE_URL = "https://lhcie.london/fhir/StructureDefinition/alert-audience"
CARETEAM_PREFIX = "CareTeam/"

# Alert lifecycle (the ``state`` field): FHIR status is in-progress until acknowledged or resolved.
RAISED, DELIVERED, ESCALATED, ACK, RESOLVED = "raised", "delivered", "escalated", "acknowledged", "resolved"


def alert_id(subject_key: str, recipient: str) -> str:
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{subject_key}|{recipient}"))


@dataclass(frozen=True)
class AlertQuery:
    mdt: str
    patient: str | None = None
    status: str | None = None
    priority: str | None = None
    sent: tuple[DateSearch, ...] = ()  # every one must match

    def filter(self) -> Filter:
        where: Filter = {"mdt": self.mdt}
        if self.patient:
            where["patient"] = self.patient
        if self.status:
            where["status"] = self.status
        if self.priority:
            where["priority"] = self.priority
        # ``sent`` is an instant, stored as a stamp whose string order is its time order.
        where.update(instant_filter("sent", self.sent, stamp))
        return where


class Alerts:
    def __init__(self, store: DocumentStore) -> None:
        self._alerts = store.collection(
            "alerts",
            [Index(("mdt", "sent")), Index(("mdt", "status", "rank")), Index(("patient",)), Index(("status",))],
        )

    async def raise_if_absent(self, doc: Document, *, session: Session) -> bool:
        """Insert ``doc`` unless the alert already exists; returns whether it was new."""
        if await self._alerts.get(doc["_id"], session=session) is not None:
            return False
        await self._alerts.insert({**doc, "rank": rank(doc["priority"])}, session=session)
        return True

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        return await self._alerts.get(key, session=session)

    async def transition(self, key: str, expected: Filter, changes: Document, *, session: Session) -> bool:
        """Change an alert only if it is still as ``expected`` (so two replicas cannot both do it)."""
        return await self._alerts.update({"_id": key, **expected}, changes, session=session) > 0

    async def mark_delivered(self, key: str, at: str) -> None:
        await self._alerts.update({"_id": key, "state": RAISED}, {"state": DELIVERED, "delivered": at})

    async def search(self, query: AlertQuery, *, limit: int, skip: int) -> list[Document]:
        # Most urgent first, newest first within a priority: how a coordinator works through the list.
        return await self._alerts.find(
            query.filter(), sort=[("rank", DESCENDING), ("sent", DESCENDING)], limit=limit, skip=skip
        )

    async def open_by_priority(self, mdt: str) -> dict[str, int]:
        return {
            p: await self._alerts.count({"mdt": mdt, "status": OPEN, "priority": p})
            for p in ("stat", "asap", "urgent", "routine")
        }

    async def open_for_pathway(self, pathway_id: str, kind: str) -> list[Document]:
        return await self._alerts.find({"pathway_id": pathway_id, "kind": kind, "status": OPEN}, limit=100)


class AlertRenderer:
    """An alert as FHIR Communication, with today's state of its pathway's running clocks."""

    def __init__(self, pathways: Pathways, clock: Clock) -> None:
        self._pathways = pathways
        self._clock = clock

    async def __call__(self, alert: Document) -> dict[str, Any]:
        clocks = None
        if alert.get("pathway_id"):
            pathway = await self._pathways.get(alert["pathway_id"])
            if pathway is not None:
                today = day_of(self._clock.now())
                clocks = [c for c in self._pathways.clock_summary(pathway, today) if not c["stop"]]
        return to_fhir(alert, clocks)


def mdt_of(recipient: str) -> str:
    return recipient.removeprefix(CARETEAM_PREFIX)


def to_fhir(doc: Document, clocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    facts = doc.get("document")
    if doc.get("patient"):
        resource_subject = {"subject": {"identifier": {"system": NHS_NUMBER, "value": doc["patient"]}}}
    else:
        resource_subject = {}
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": doc["_id"],
        "meta": {
            "tag": [
                {
                    "system": "https://lhcie.london/fhir/CodeSystem/rules-version",
                    "code": doc.get("rules_version", "unversioned"),
                }
            ]
        },
        "status": doc["status"],
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": doc.get("kind", "document-available")}]}],
        "priority": doc["priority"],
        **resource_subject,
        "sent": doc["sent"],
        "recipient": [{"reference": doc["recipient"]}],
        "payload": [{"contentString": doc.get("text", "")}],
        "extension": [
            {"url": STATE_URL, "valueCode": doc.get("state", RAISED)},
            *({"url": AUDIENCE_URL, "valueCode": a} for a in doc.get("audience", [])),
        ],
    }
    if facts:
        label = doc.get("label") or facts.get("type_display") or facts.get("type_code") or "document"
        resource["about"] = [{"reference": f"DocumentReference/{facts['document_id']}"}]
        resource["sender"] = {"identifier": {"system": ODS_CODE, "value": facts["custodian"]}}
        resource["payload"].append(
            {"contentReference": {"reference": f"DocumentReference/{facts['document_id']}", "display": label}}
        )
    if doc.get("pathway_id"):
        resource["partOf"] = [{"reference": f"EpisodeOfCare/{doc['pathway_id']}"}]
    if "about" not in resource:  # a pathway alert is about the pathway; a digest about the MDT
        target = f"EpisodeOfCare/{doc['pathway_id']}" if doc.get("pathway_id") else doc.get("about") or doc["recipient"]
        resource["about"] = [{"reference": target}]
    notes = []
    for step in doc.get("escalations", []):
        why = step.get("reason") or "not acknowledged in time"
        notes.append({"time": step["at"], "text": f"Escalated to {step['to']}: {why}"})
    if ack := doc.get("acknowledged"):
        resource["received"] = ack["at"]
        notes.append({"authorString": ack.get("name") or ack["by"], "time": ack["at"], "text": "Acknowledged"})
    if doc.get("resolved"):
        notes.append({"time": doc["resolved"]["at"], "text": f"Resolved: {doc['resolved']['reason']}"})
    if notes:
        resource["note"] = notes
    for clock in clocks or []:
        resource["extension"].append(
            {
                "url": CLOCK_URL,
                "extension": [
                    {"url": "clock", "valueCode": clock["clock"]},
                    {"url": "day", "valueInteger": clock["day"]},
                    {"url": "target", "valueInteger": clock["target"]},
                    {"url": "risk", "valueCode": clock["risk"]},
                ],
            }
        )
    return resource
