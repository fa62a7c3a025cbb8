"""One document's trip as the exchange's events describe it: the facts of a 10 KiB referral from RJ1 and
the three events it makes (received with its submitter, stored, the MDT alert). The audit scenario builds
its records from these; the contract floor sends them."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import Actor, AlertRaised, DocumentFacts, DocumentReceived, DocumentStored, Event, RoutingKey

ACTOR = Actor(org="RJ1", role="clinician", subject="bench-user", address="127.0.0.1")
RECIPIENT = "CareTeam/rj1-lung"


def facts(document_id: str, *, size: int = 10_240) -> DocumentFacts:
    return DocumentFacts(
        document_id=document_id,
        patient_nhs_number="9000000009",
        custodian="RJ1",
        type_system="http://snomed.info/sct",
        type_code="371530004",
        type_display="Clinical consultation report",
        content_type="application/pdf",
        size=size,
        sha256="0" * 64,
    )


def received(document: DocumentFacts) -> Event:
    payload = DocumentReceived(submission_id=document.document_id, document=document, staging_key="k", actor=ACTOR)
    return Event.new(
        RoutingKey.DOCUMENT_RECEIVED, payload, source="urn:lhcie:service:intake", correlation_id=document.document_id
    )


def stored(document: DocumentFacts, *, at: datetime | None = None) -> Event:
    payload = DocumentStored(
        submission_id=document.document_id, document=document, object_key="k", stored_at=at or datetime.now(UTC)
    )
    return Event.new(
        RoutingKey.DOCUMENT_STORED, payload, source="urn:lhcie:service:storage", correlation_id=document.document_id
    )


def alert(document: DocumentFacts, alert_id: str) -> Event:
    payload = AlertRaised(alert_id=alert_id, recipient=RECIPIENT, priority="routine", document=document)
    return Event.new(
        RoutingKey.ALERT_RAISED, payload, source="urn:lhcie:service:notification", correlation_id=document.document_id
    )
