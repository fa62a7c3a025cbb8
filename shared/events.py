"""The message contract: every routing key, its payload model and the CloudEvents envelope.

This module is the only place an event's shape is defined. Documents travel by reference (bucket key,
SHA-256, size, media type); bytes never cross the bus.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

EXCHANGE = "lhcie.events"
DEAD_LETTER_EXCHANGE = "lhcie.dead"
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


class RoutingKey(StrEnum):
    DOCUMENT_RECEIVED = "document.received"
    DOCUMENT_STORED = "document.stored"
    DOCUMENT_REJECTED = "document.rejected"
    DOCUMENT_RETRIEVED = "document.retrieved"
    DOCUMENT_SUPERSEDED = "document.superseded"
    DOCUMENT_WITHDRAWN = "document.withdrawn"
    DOCUMENT_SEARCHED = "document.searched"
    ALERT_RAISED = "alert.raised"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    ALERT_ESCALATED = "alert.escalated"
    WEBHOOK_DELIVERED = "webhook.delivered"
    WEBHOOK_FAILED = "webhook.failed"
    ACCESS_DENIED = "access.denied"
    # A read of patient data or of a controlled record (read, vread, search, export, download) that no
    # other event already records: BALP's Read and Query patterns, and the patient's access report.
    RECORD_READ = "record.read"
    # An administrative operation with effects beyond one record ($reconcile and the like), by whom.
    OPERATION_INVOKED = "operation.invoked"
    # policy.<kind>.<change>: the full current state of one policy object travels in each event
    # (event-carried state transfer), so any service can rebuild its view from the stream alone.
    POLICY_ORGANISATION_UPDATED = "policy.organisation.updated"
    POLICY_CARETEAM_UPDATED = "policy.careteam.updated"
    POLICY_AGREEMENT_PROPOSED = "policy.agreement.proposed"
    POLICY_AGREEMENT_ACCEPTED = "policy.agreement.accepted"
    POLICY_AGREEMENT_REJECTED = "policy.agreement.rejected"
    POLICY_AGREEMENT_REVOKED = "policy.agreement.revoked"
    POLICY_AGREEMENT_EXPIRED = "policy.agreement.expired"
    # A step that does not change the lifecycle status: one party signs, a party joins or leaves a
    # template ISA, the signed PDF is attached.
    POLICY_AGREEMENT_UPDATED = "policy.agreement.updated"
    # A patient's carer grants and sharing preferences (policy.consent.*), full state each time.
    POLICY_CONSENT_CARER_GRANTED = "policy.consent.carer_granted"
    POLICY_CONSENT_CARER_REVOKED = "policy.consent.carer_revoked"
    POLICY_CONSENT_PREFERENCES_UPDATED = "policy.consent.preferences_updated"
    # Re-announcements of unchanged state at agreements' start-up; consumers upsert by version.
    POLICY_ORGANISATION_SYNCED = "policy.organisation.synced"
    POLICY_CARETEAM_SYNCED = "policy.careteam.synced"
    POLICY_AGREEMENT_SYNCED = "policy.agreement.synced"
    POLICY_CONSENT_SYNCED = "policy.consent.synced"
    # The care service (issue 18): end-of-life care plans, repatriations and discharge summaries.
    CAREPLAN_CREATED = "careplan.created"
    CAREPLAN_UPDATED = "careplan.updated"
    TRANSFER_REQUESTED = "transfer.requested"
    TRANSFER_UPDATED = "transfer.updated"
    TRANSFER_ESCALATED = "transfer.escalated"
    DISCHARGE_DELIVERED = "discharge.delivered"
    DISCHARGE_ACKNOWLEDGED = "discharge.acknowledged"
    DISCHARGE_SUPERSEDED = "discharge.superseded"
    DISCHARGE_ESCALATED = "discharge.escalated"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    routing_keys: ClassVar[tuple[RoutingKey, ...]] = ()


class Actor(Payload):
    """Who caused an event: taken from the verified token, never from the request body."""

    org: str
    role: str
    subject: str
    mdt: str | None = None
    address: str | None = None
    # The person's display name when they signed in (issue 19); absent for systems and older events.
    name: str | None = None


class DocumentFacts(Payload):
    """What every service may know about a document without reading it."""

    document_id: str
    patient_nhs_number: str
    custodian: str
    type_system: str | None = None
    type_code: str | None = None
    type_display: str | None = None
    related: tuple[str, ...] = ()
    content_type: str
    size: int = Field(ge=0)
    sha256: str
    # MHD intendedRecipient (issue 16): whom the source asked to be told of the document, resolved
    # (``Organization/<ODS>``, ``CareTeam/<id>``) and admitted by the sharing policy when it was received.
    intended_recipients: tuple[str, ...] = ()


class DocumentReceived(Payload):
    routing_keys = (RoutingKey.DOCUMENT_RECEIVED,)
    submission_id: str
    document: DocumentFacts
    staging_key: str
    actor: Actor


class DocumentStored(Payload):
    routing_keys = (RoutingKey.DOCUMENT_STORED,)
    submission_id: str
    document: DocumentFacts
    object_key: str
    stored_at: datetime


class DocumentRejected(Payload):
    routing_keys = (RoutingKey.DOCUMENT_REJECTED,)
    submission_id: str
    document: DocumentFacts
    reason_code: str
    reason: str


class DocumentRetrieved(Payload):
    routing_keys = (RoutingKey.DOCUMENT_RETRIEVED,)
    document: DocumentFacts
    actor: Actor
    rule: str | None = None  # the policy rule that allowed it (custodian, isa, carer-grant, ...)


class DocumentStatusChanged(Payload):
    """A stored document was superseded by a replacement, or marked entered-in-error by its custodian."""

    routing_keys = (RoutingKey.DOCUMENT_SUPERSEDED, RoutingKey.DOCUMENT_WITHDRAWN)
    document: DocumentFacts
    status: str  # the FHIR DocumentReference.status it now has
    replaced_by: str | None = None
    actor: Actor


class DocumentSearched(Payload):
    """An ITI-67 search, for the audit trail: who asked, about whom, what, and how many matches they saw."""

    routing_keys = (RoutingKey.DOCUMENT_SEARCHED,)
    actor: Actor
    patient_nhs_number: str
    query: str  # the search's query string, as BALP records a query entity
    results: int = Field(ge=0)


class AccessDenied(Payload):
    routing_keys = (RoutingKey.ACCESS_DENIED,)
    actor: Actor
    resource: str
    action: str
    reason_code: str
    reason: str
    patient_nhs_number: str | None = None


class RecordRead(Payload):
    """Who read what, about whom: one record per read, search or download of patient data or a controlled record.

    ``resource`` is a FHIR reference or a search base (``DocumentReference/{id}``, ``Communication``,
    ``Contract/{id}/$document``); ``patient_nhs_number`` is set only when the reader was allowed to know it.
    """

    routing_keys = (RoutingKey.RECORD_READ,)
    actor: Actor
    resource: str
    action: Literal["read", "vread", "search", "export", "download"]
    patient_nhs_number: str | None = None
    query: str | None = None
    results: int | None = Field(default=None, ge=0)
    rule: str | None = None  # the policy rule that allowed it, as in document.retrieved


class OperationInvoked(Payload):
    """An administrative operation with effects beyond one record, for the audit trail."""

    routing_keys = (RoutingKey.OPERATION_INVOKED,)
    actor: Actor
    operation: str  # "$reconcile", ...
    target: str  # the FHIR type or reference it ran on
    outcome: Literal["success", "refused", "failed"] = "success"
    detail: str | None = None


class AlertRaised(Payload):
    """Any alert: a document for an MDT, a breach risk, a transfer in, a daily digest (``kind``)."""

    routing_keys = (RoutingKey.ALERT_RAISED,)
    alert_id: str
    recipient: str
    priority: str
    document: DocumentFacts | None = None
    kind: str = "document-available"
    patient_nhs_number: str | None = None


class AlertAcknowledged(Payload):
    routing_keys = (RoutingKey.ALERT_ACKNOWLEDGED,)
    alert_id: str
    recipient: str
    document_id: str
    patient_nhs_number: str
    actor: Actor


class AlertEscalated(Payload):
    routing_keys = (RoutingKey.ALERT_ESCALATED,)
    alert_id: str
    recipient: str
    escalated_to: str
    reason: str
    document_id: str
    patient_nhs_number: str


class WebhookDelivered(Payload):
    routing_keys = (RoutingKey.WEBHOOK_DELIVERED,)
    subscription_id: str
    event_number: int
    endpoint_host: str
    attempts: int


class WebhookFailed(Payload):
    routing_keys = (RoutingKey.WEBHOOK_FAILED,)
    subscription_id: str
    event_number: int
    endpoint_host: str
    attempts: int
    reason: str


class OrganisationState(Payload):
    routing_keys = (RoutingKey.POLICY_ORGANISATION_UPDATED, RoutingKey.POLICY_ORGANISATION_SYNCED)
    ods_code: str
    name: str
    kind: str
    active: bool = True
    version: int = Field(ge=1)


class CareTeamState(Payload):
    routing_keys = (RoutingKey.POLICY_CARETEAM_UPDATED, RoutingKey.POLICY_CARETEAM_SYNCED)
    careteam_id: str
    name: str
    organisation: str
    tumour_site: str | None = None
    coordinators: tuple[str, ...] = ()
    active: bool = True
    version: int = Field(ge=1)


class AgreementStatus(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    REVOKED = "revoked"
    EXPIRED = "expired"


class AgreementState(Payload):
    routing_keys = (
        RoutingKey.POLICY_AGREEMENT_PROPOSED,
        RoutingKey.POLICY_AGREEMENT_ACCEPTED,
        RoutingKey.POLICY_AGREEMENT_REJECTED,
        RoutingKey.POLICY_AGREEMENT_REVOKED,
        RoutingKey.POLICY_AGREEMENT_EXPIRED,
        RoutingKey.POLICY_AGREEMENT_SYNCED,
        RoutingKey.POLICY_AGREEMENT_UPDATED,
    )
    agreement_id: str
    title: str
    parties: tuple[str, ...]
    purposes: tuple[str, ...]
    status: AgreementStatus
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    actor: Actor | None = None
    version: int = Field(ge=1)
    # Document categories covered (shared.policy.category_of); empty covers every category.
    categories: tuple[str, ...] = ()
    proposed_by: str | None = None
    # Parties that have signed; an ISA permits sharing only between two of them. Empty (older state)
    # means every party signed.
    accepted_by: tuple[str, ...] = ()
    # A template ISA (a standard agreement): in force from publication, organisations join by signing.
    template: bool = False
    document_sha256: str | None = None
    # Duplicate rationalisation: the agreements a merged ISA replaces, and the one that replaced this.
    supersedes: tuple[str, ...] = ()
    replaced_by: str | None = None


class CarerGrantState(Payload):
    """A patient's grant to a carer (FHIR RelatedPerson + Consent); ``active`` false once revoked."""

    routing_keys = (RoutingKey.POLICY_CONSENT_CARER_GRANTED, RoutingKey.POLICY_CONSENT_CARER_REVOKED)
    grant_id: str
    patient_nhs_number: str
    carer_subject: str  # the carer's token subject (``sub``)
    carer_name: str
    relationship: str | None = None
    active: bool = True
    valid_to: datetime | None = None
    version: int = Field(ge=1)


class PatientPreferencesState(Payload):
    """What a patient has opted out of sharing: document categories and named organisations."""

    routing_keys = (RoutingKey.POLICY_CONSENT_PREFERENCES_UPDATED,)
    patient_nhs_number: str
    opted_out_categories: tuple[str, ...] = ()
    opted_out_organisations: tuple[str, ...] = ()
    version: int = Field(ge=1)


class ConsentSynced(Payload):
    """Start-up re-announcement of one consent object's unchanged state (exactly one of the two)."""

    routing_keys = (RoutingKey.POLICY_CONSENT_SYNCED,)
    carer_grant: CarerGrantState | None = None
    preferences: PatientPreferencesState | None = None


# --- The care service (issue 18) ------------------------------------------------------------------


class CarePlanChanged(Payload):
    """A care plan's new version: subscribers (GP, hospice, ambulance service) read it through the API.

    ``status`` is the FHIR CarePlan.status; a draft is visible only to its author, so subscribers act on
    ``active`` (and ``revoked``) versions.
    """

    routing_keys = (RoutingKey.CAREPLAN_CREATED, RoutingKey.CAREPLAN_UPDATED)
    plan_id: str
    resource: str  # CarePlan/{id} (the version is ``version``)
    version: int = Field(ge=1)
    status: str
    record_type: str  # the SNOMED record type (NRL pointer type)
    patient_nhs_number: str
    custodian: str
    actor: Actor
    reason: str | None = None


class TransferChanged(Payload):
    """A repatriation Task's new state, or its escalation after waiting longer than its network allows."""

    routing_keys = (RoutingKey.TRANSFER_REQUESTED, RoutingKey.TRANSFER_UPDATED, RoutingKey.TRANSFER_ESCALATED)
    task_id: str
    resource: str  # Task/{id}
    state: str  # requested, consultant-identified, accepted, bed-confirmed, fit-and-ready, ...
    patient_nhs_number: str
    sender: str  # ODS code of the tertiary centre
    receiver: str  # ODS code of the patient's local trust
    network: str | None = None
    requested_at: datetime
    hours_waited: float = Field(ge=0)
    actor: Actor | None = None  # None for an escalation (the exchange's own timer)
    reason: str | None = None


class DischargeChanged(Payload):
    """A discharge summary delivered to one recipient, acknowledged by it, superseded, or escalated."""

    routing_keys = (
        RoutingKey.DISCHARGE_DELIVERED,
        RoutingKey.DISCHARGE_ACKNOWLEDGED,
        RoutingKey.DISCHARGE_SUPERSEDED,
        RoutingKey.DISCHARGE_ESCALATED,
    )
    summary_id: str
    resource: str  # Bundle/{id}
    patient_nhs_number: str
    sender: str
    recipient: str | None = None
    # ITK3-style acknowledgement: ``infrastructure`` (accepted | rejected) or ``business``.
    acknowledgement: str | None = None
    outcome: str | None = None
    code: str | None = None
    # The replacing summary's Bundle id (not ``replaced_by``: audit reads that as a DocumentReference).
    superseded_by: str | None = None
    actor: Actor | None = None
    reason: str | None = None


PAYLOADS: dict[RoutingKey, type[Payload]] = {
    key: model
    for model in (
        DocumentReceived,
        DocumentStored,
        DocumentRejected,
        DocumentRetrieved,
        DocumentStatusChanged,
        DocumentSearched,
        AccessDenied,
        RecordRead,
        OperationInvoked,
        AlertRaised,
        AlertAcknowledged,
        AlertEscalated,
        WebhookDelivered,
        WebhookFailed,
        OrganisationState,
        CareTeamState,
        AgreementState,
        CarerGrantState,
        PatientPreferencesState,
        ConsentSynced,
        CarePlanChanged,
        TransferChanged,
        DischargeChanged,
    )
    for key in model.routing_keys
}
assert set(PAYLOADS) == set(RoutingKey), "every routing key needs exactly one payload model"


class Event(BaseModel):
    """A CloudEvents 1.0 envelope (structured mode) with the W3C trace context extension."""

    model_config = ConfigDict(frozen=True)

    specversion: str = SPEC_VERSION
    id: str
    source: str
    type: RoutingKey
    time: datetime
    subject: str | None = None
    datacontenttype: str = CONTENT_TYPE
    traceparent: str | None = None
    tracestate: str | None = None
    # Correlates every record of one request across services: generated by the server that took the
    # request, never taken from the client (it is the audit key).
    correlationid: str | None = None
    # The client's own X-Request-Id, kept for its support desk; untrusted, never used as a key.
    clientrequestid: str | None = None
    data: dict[str, Any]

    @classmethod
    def new(
        cls,
        key: RoutingKey,
        payload: Payload,
        *,
        source: str,
        subject: str | None = None,
        correlation_id: str | None = None,
        client_request_id: str | None = None,
        event_id: str | None = None,
    ) -> Event:
        if key not in payload.routing_keys:
            raise ValueError(f"{type(payload).__name__} is not the payload of {key}")
        from shared import telemetry  # late: keeps the contract importable without OpenTelemetry set up

        traceparent, tracestate = telemetry.current_trace_headers()
        return cls(
            id=event_id or str(uuid.uuid4()),
            source=source,
            type=key,
            time=datetime.now(UTC),
            subject=subject,
            traceparent=traceparent,
            tracestate=tracestate,
            correlationid=correlation_id,
            clientrequestid=client_request_id,
            data=payload.model_dump(mode="json"),
        )

    def payload(self) -> Payload:
        """The typed payload; raises ``pydantic.ValidationError`` when the data breaks the contract."""
        return PAYLOADS[self.type].model_validate(self.data)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> Event:
        return cls.model_validate_json(body)
