"""Intake's use cases: accept a submission, read a document's metadata, search a patient's documents."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from services.intake.registry import RECEIVED, REJECTED, STORED, Registry, facts_of, to_fhir
from services.intake.validation import Submission
from shared.auth import Caller
from shared.events import AccessDenied, Actor, DocumentFacts, DocumentReceived, Event, RoutingKey
from shared.fhir.errors import Code, FhirError, Issue, informational
from shared.lifecycle import ServiceContext
from shared.objects import ObjectStore, ObjectStoreUnavailable, one_chunk
from shared.policy import PolicyView

log = logging.getLogger(__name__)


def actor_of(who: Caller, address: str | None = None) -> Actor:
    return Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, address=address)


@dataclass(frozen=True)
class Outcome:
    """What a read answers: a status and a FHIR resource."""

    status: int
    resource: dict[str, Any]
    retry_after: int | None = None


class Intake:
    def __init__(self, ctx: ServiceContext, objects: ObjectStore) -> None:
        self.ctx = ctx
        self.objects = objects
        self.registry = Registry(ctx.store)
        self.policy = PolicyView(ctx.store)

    async def submit(self, submission: Submission, who: Caller, *, request_id: str, address: str | None) -> dict[str, Any]:
        document_id, submission_id = str(uuid.uuid4()), str(uuid.uuid4())
        staging_key = f"staging/{submission_id}"
        try:
            staged = await self.objects.put(
                staging_key, one_chunk(submission.content), content_type=submission.content_type
            )
        except ObjectStoreUnavailable:
            raise FhirError.of(Code.UNAVAILABLE, "Document storage is unavailable.", headers={"Retry-After": "5"}) from None
        facts = DocumentFacts(
            document_id=document_id,
            patient_nhs_number=submission.patient_nhs_number,
            custodian=submission.custodian,
            type_system=submission.type_system,
            type_code=submission.type_code,
            type_display=submission.type_display,
            related=submission.related,
            content_type=submission.content_type,
            size=staged.size,
            sha256=staged.sha256,
        )
        actor = actor_of(who, address)
        event = Event.new(
            RoutingKey.DOCUMENT_RECEIVED,
            DocumentReceived(submission_id=submission_id, document=facts, staging_key=staging_key, actor=actor),
            source=self.ctx.source,
            subject=document_id,
            correlation_id=request_id,
        )
        try:
            async with self.ctx.store.transaction() as session:
                doc = await self.registry.record(
                    facts=facts,
                    submission_id=submission_id,
                    resource=submission.resource,
                    staging_key=staging_key,
                    actor=actor,
                    session=session,
                )
                await self.ctx.publish(event, session=session)
        except BaseException:
            await self.objects.delete(staging_key)  # nothing of a failed submission stays behind
            raise
        self.ctx.outbox.notify()
        log.info("intake.accepted document=%s", document_id, extra={"code": "INT001"})
        return to_fhir(doc)

    async def read(self, document_id: str, who: Caller, *, request_id: str) -> Outcome:
        doc = await self.registry.get(document_id)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        submitter = doc["submitted_by"]["org"] == who.org
        if doc["status"] == STORED:
            decision = await self.policy.decide(who, facts_of(doc))
            if not decision.allowed:
                await self.deny(who, f"DocumentReference/{document_id}", decision.rule, decision.reason,
                                patient=doc["patient"], request_id=request_id)
            return Outcome(200, to_fhir(doc))
        if not submitter:
            raise FhirError.of(Code.NOT_FOUND)
        if doc["status"] == RECEIVED:
            return Outcome(202, informational("The document was accepted and is being stored."), retry_after=1)
        assert doc["status"] == REJECTED
        rejection = doc["rejection"]
        raise FhirError([Issue(Code.PROCESSING, f"The document was rejected: {rejection['reason']}",
                               "DocumentReference")])

    async def search_by_patient(self, nhs_number: str, who: Caller, *, count: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
        # Fetch one extra to know whether a next page exists; filter to what the caller may see.
        docs = await self.registry.stored_for_patient(nhs_number, limit=count + 1, skip=offset)
        visible = []
        for doc in docs[:count]:
            if (await self.policy.decide(who, facts_of(doc))).allowed:
                visible.append(to_fhir(doc))
        return visible, len(docs) > count

    async def deny(self, who: Caller, resource: str, rule: str, reason: str, *, patient: str | None, request_id: str) -> None:
        event = Event.new(
            RoutingKey.ACCESS_DENIED,
            AccessDenied(actor=actor_of(who), resource=resource, action="read", reason_code=rule, reason=reason,
                         patient_nhs_number=patient),
            source=self.ctx.source,
            subject=resource,
            correlation_id=request_id,
        )
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(event, session=session)
        self.ctx.outbox.notify()
        raise FhirError.of(Code.ACCESS_DENIED, f"Access denied: {reason}.")
