"""The document registry: DocumentReference metadata and each submission's state.

Two states live side by side. ``status`` is the pipeline: ``received`` -> ``stored`` (storage filed it) or
``rejected`` (storage refused it, with the reason). ``fhir_status`` is the document's own
DocumentReference.status: ``current`` -> ``superseded`` (replaced) or ``entered-in-error`` (withdrawn).
Only stored documents are returned to readers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events import Actor, DocumentFacts
from shared.fhir import dates
from shared.store import DESCENDING, Document, DocumentStore, Filter, Index, Session
from shared.store.base import MAX_PAGE

RECEIVED, STORED, REJECTED = "received", "stored", "rejected"
SCAN_LIMIT = MAX_PAGE - 1  # a search reads at most this many of one patient's documents (then: no total, narrow it)
CURRENT, SUPERSEDED, ENTERED_IN_ERROR = "current", "superseded", "entered-in-error"


class DocumentRegistry:
    def __init__(self, store: DocumentStore) -> None:
        self._documents = store.collection(
            "documents",
            [
                Index(("patient", "status", "received_at")),
                Index(("custodian",)),
                Index(("submission_id",)),
                Index(("bundle_id",)),
                # Idempotency: one document per custodian master identifier and per Idempotency-Key.
                Index(("master_key",), unique=True),
                Index(("idempotency_key",), unique=True),
            ],
        )

    async def record(
        self,
        *,
        facts: DocumentFacts,
        submission_id: str,
        resource: dict[str, Any],
        staging_key: str,
        actor: Actor,
        search: dict[str, Any],
        replaces: tuple[str, ...],
        master_key: str | None,
        idempotency_key: str | None,
        bundle_id: str | None,
        bundle_index: int | None,
        session: Session,
        bundle_layout: dict[str, Any] | None = None,
    ) -> Document:
        doc: Document = {
            "_id": facts.document_id,
            "submission_id": submission_id,
            "status": RECEIVED,
            "fhir_status": CURRENT,
            "patient": facts.patient_nhs_number,
            "custodian": facts.custodian,
            "facts": facts.model_dump(mode="json"),
            "resource": resource,
            "staging_key": staging_key,
            "submitted_by": actor.model_dump(mode="json"),
            "received_at": datetime.now(UTC).isoformat(),
            **_touched(),
            "search": search,
            "replaces": list(replaces),
        }
        for key, value in (
            ("master_key", master_key),
            ("idempotency_key", idempotency_key),
            ("bundle_id", bundle_id),
            ("bundle_index", bundle_index),
            ("bundle_layout", bundle_layout),
        ):
            if value is not None:
                doc[key] = value
        await self._documents.insert(doc, session=session)
        return doc

    async def mark_stored(self, document_id: str, *, object_key: str, stored_at: datetime, session: Session) -> bool:
        changed = await self._documents.update(
            {"_id": document_id, "status": RECEIVED},
            {
                "status": STORED,
                "object_key": object_key,
                "stored_at": stored_at.isoformat(),
                **_touched(stored_at),
                # Version 1 is the document as readers first see it; each later change of status adds one.
                "version": 1,
                "versions": [{"status": CURRENT, "at": stored_at.isoformat()}],
            },
            session=session,
        )
        return changed > 0

    async def mark_rejected(self, document_id: str, *, code: str, reason: str, session: Session) -> bool:
        changed = await self._documents.update(
            {"_id": document_id, "status": RECEIVED},
            {"status": REJECTED, "rejection": {"code": code, "reason": reason}, **_touched()},
            session=session,
        )
        return changed > 0

    async def set_fhir_status(
        self, document_id: str, status: str, *, session: Session, replaced_by: str | None = None
    ) -> bool:
        doc = await self._documents.get(document_id, session=session)
        if doc is None or doc.get("fhir_status") != CURRENT:
            return False
        now = datetime.now(UTC)
        version = doc.get("version", 1)
        changes: dict[str, Any] = {
            "fhir_status": status,
            "status_changed_at": now.isoformat(),
            **_touched(now),
            "version": version + 1,
            "versions": [*versions(doc), {"status": status, "at": now.isoformat()}],
        }
        if replaced_by:
            changes["replaced_by"] = replaced_by
        changed = await self._documents.update({"_id": document_id, "fhir_status": CURRENT}, changes, session=session)
        return changed > 0

    async def get(self, document_id: str, session: Session | None = None) -> Document | None:
        return await self._documents.get(document_id, session=session)

    async def find_one(self, where: Filter) -> Document | None:
        return await self._documents.find_one(where)

    async def in_bundle(self, bundle_id: str) -> list[Document]:
        return await self._documents.find({"bundle_id": bundle_id}, sort=[("bundle_index", 1)], limit=1000)

    async def search(self, where: Filter) -> list[Document]:
        """Stored documents matching ``where``, newest first, at most ``SCAN_LIMIT + 1`` (one more tells
        the caller the scan was cut short)."""
        return await self._documents.find(
            {**where, "status": STORED}, sort=[("received_at", DESCENDING)], limit=SCAN_LIMIT + 1
        )


def _touched(moment: datetime | None = None) -> dict[str, str]:
    """When a document last changed, as ``_lastUpdated`` searches compare it (a one-microsecond range)."""
    low, high = dates.keys(dates.Range.instant(moment or datetime.now(UTC)))
    return {"updated_low": low, "updated_high": high}


def facts_of(doc: Document) -> DocumentFacts:
    return DocumentFacts.model_validate(doc["facts"])


def versions(doc: Document) -> list[dict[str, str]]:
    """Every version of a stored document, oldest first (documents stored before versions were kept have one)."""
    if "versions" in doc:
        return list(doc["versions"])
    at = doc.get("stored_at") or doc["received_at"]
    history = [{"status": CURRENT, "at": at}]
    if doc.get("fhir_status", CURRENT) != CURRENT:
        history.append({"status": doc["fhir_status"], "at": doc.get("status_changed_at") or at})
    return history


def version_of(doc: Document) -> int:
    return len(versions(doc)) if doc.get("status") == STORED else 1


def to_fhir(doc: Document, version: int | None = None) -> dict[str, Any]:
    """The registry entry as the DocumentReference a reader sees: the current version, or ``version``.

    Only the status changes from one version to the next; the metadata a source sent is immutable.
    """
    resource = dict(doc["resource"])
    resource["id"] = doc["_id"]
    history = versions(doc) if doc.get("status") == STORED else None
    meta = dict(resource.get("meta") or {})  # the source's meta.security and meta.profile are kept
    if history:
        number = version or len(history)
        state = history[number - 1]
        resource["status"] = state["status"]
        meta.update({"versionId": str(number), "lastUpdated": state["at"]})
    else:
        resource["status"] = doc.get("fhir_status", CURRENT)
        meta.update({"versionId": "1", "lastUpdated": doc["received_at"]})
    resource["meta"] = meta
    facts = doc["facts"]
    content = [dict(c) for c in resource.get("content") or [{}]]
    attachment = dict(content[0].get("attachment") or {})
    attachment.update({"url": f"/fhir/Binary/{doc['_id']}", "size": facts["size"]})
    content[0] = {**content[0], "attachment": attachment}
    resource["content"] = content
    return resource
