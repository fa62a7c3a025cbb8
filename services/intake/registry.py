"""The document registry: DocumentReference metadata and each submission's state.

A document moves ``received`` -> ``stored`` (storage filed it) or ``received`` -> ``rejected`` (storage
refused it, with the reason). Only stored documents are returned to readers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events import Actor, DocumentFacts
from shared.store import DESCENDING, Document, DocumentStore, Index, Session

RECEIVED, STORED, REJECTED = "received", "stored", "rejected"


class Registry:
    def __init__(self, store: DocumentStore) -> None:
        self._documents = store.collection(
            "documents",
            [Index(("patient",)), Index(("custodian",)), Index(("status",)), Index(("submission_id",), unique=True)],
        )

    async def record(
        self,
        *,
        facts: DocumentFacts,
        submission_id: str,
        resource: dict[str, Any],
        staging_key: str,
        actor: Actor,
        session: Session,
    ) -> Document:
        doc = {
            "_id": facts.document_id,
            "submission_id": submission_id,
            "status": RECEIVED,
            "patient": facts.patient_nhs_number,
            "custodian": facts.custodian,
            "facts": facts.model_dump(mode="json"),
            "resource": resource,
            "staging_key": staging_key,
            "submitted_by": actor.model_dump(mode="json"),
            "received_at": datetime.now(UTC).isoformat(),
        }
        await self._documents.insert(doc, session=session)
        return doc

    async def mark_stored(self, document_id: str, *, object_key: str, stored_at: datetime, session: Session) -> bool:
        changed = await self._documents.update(
            {"_id": document_id, "status": RECEIVED},
            {"status": STORED, "object_key": object_key, "stored_at": stored_at.isoformat()},
            session=session,
        )
        return changed > 0

    async def mark_rejected(self, document_id: str, *, code: str, reason: str, session: Session) -> bool:
        changed = await self._documents.update(
            {"_id": document_id, "status": RECEIVED},
            {"status": REJECTED, "rejection": {"code": code, "reason": reason}},
            session=session,
        )
        return changed > 0

    async def get(self, document_id: str) -> Document | None:
        return await self._documents.get(document_id)

    async def stored_for_patient(self, nhs_number: str, *, limit: int, skip: int) -> list[Document]:
        return await self._documents.find(
            {"patient": nhs_number, "status": STORED},
            sort=[("received_at", DESCENDING)],
            limit=limit,
            skip=skip,
        )


def facts_of(doc: Document) -> DocumentFacts:
    return DocumentFacts.model_validate(doc["facts"])


def to_fhir(doc: Document) -> dict[str, Any]:
    """The registry entry as the DocumentReference a reader sees."""
    resource = dict(doc["resource"])
    resource["id"] = doc["_id"]
    resource["meta"] = {"lastUpdated": doc.get("stored_at") or doc["received_at"]}
    facts = doc["facts"]
    content = [dict(c) for c in resource.get("content") or [{}]]
    attachment = dict(content[0].get("attachment") or {})
    attachment.update({"url": f"/fhir/Binary/{doc['_id']}", "size": facts["size"]})
    content[0] = {**content[0], "attachment": attachment}
    resource["content"] = content
    return resource
