"""Alerts for MDT coordinators, kept as FHIR Communication resources.

One alert per document per recipient team: its id is derived from both, so a redelivered event or a
second replica cannot raise it twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from shared.events import Actor, DocumentFacts
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE
from shared.store import DESCENDING, Document, DocumentStore, Index, Session

ALERT_NAMESPACE = uuid.UUID("6f1c3f0e-2d7b-4c3e-9a55-1f3f6b1d2c4a")
OPEN, ACKNOWLEDGED = "in-progress", "completed"
CATEGORY_SYSTEM = "https://lhcie.london/fhir/CodeSystem/alert-category"


def alert_id(document_id: str, recipient: str) -> str:
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{document_id}|{recipient}"))


class Alerts:
    def __init__(self, store: DocumentStore) -> None:
        self._alerts = store.collection(
            "alerts", [Index(("recipient", "sent")), Index(("patient",)), Index(("status",))]
        )

    async def raise_alert(
        self, facts: DocumentFacts, recipient: str, priority: str, *, session: Session
    ) -> Document:
        doc = {
            "_id": alert_id(facts.document_id, recipient),
            "recipient": recipient,
            "status": OPEN,
            "priority": priority,
            "patient": facts.patient_nhs_number,
            "document": facts.model_dump(mode="json"),
            "sent": datetime.now(UTC).isoformat(),
        }
        await self._alerts.insert(doc, session=session)
        return doc

    async def get(self, key: str) -> Document | None:
        return await self._alerts.get(key)

    async def acknowledge(self, key: str, actor: Actor, *, session: Session) -> bool:
        changed = await self._alerts.update(
            {"_id": key, "status": OPEN},
            {"status": ACKNOWLEDGED, "acknowledged": {"by": actor.subject, "org": actor.org,
                                                     "at": datetime.now(UTC).isoformat()}},
            session=session,
        )
        return changed > 0

    async def for_recipient(self, recipient: str, *, status: str | None, limit: int, skip: int) -> list[Document]:
        where: dict[str, Any] = {"recipient": recipient}
        if status:
            where["status"] = status
        return await self._alerts.find(where, sort=[("sent", DESCENDING)], limit=limit, skip=skip)


def to_fhir(doc: Document) -> dict[str, Any]:
    facts = doc["document"]
    label = facts.get("type_display") or facts.get("type_code") or "document"
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": doc["_id"],
        "status": doc["status"],
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "document-available"}]}],
        "priority": doc["priority"],
        "subject": {"identifier": {"system": NHS_NUMBER, "value": doc["patient"]}},
        "about": [{"reference": f"DocumentReference/{facts['document_id']}"}],
        "sent": doc["sent"],
        "recipient": [{"reference": doc["recipient"]}],
        "sender": {"identifier": {"system": ODS_CODE, "value": facts["custodian"]}},
        "payload": [
            {"contentString": f"New {label} from {facts['custodian']}"},
            {"contentReference": {"reference": f"DocumentReference/{facts['document_id']}", "display": label}},
        ],
    }
    if ack := doc.get("acknowledged"):
        resource["received"] = ack["at"]
        resource["note"] = [{"authorString": ack["by"], "time": ack["at"], "text": "Acknowledged"}]
    return resource
