"""Who may read a care record, and the audit trail of every read and refusal.

Other organisations' reads go through the one policy decision (shared.policy), which weighs the purpose
the token states, the ISAs between the reader and the custodian and the patient's opt-outs. Every read
publishes ``record.read`` and every refusal ``access.denied`` (then 403), in their own transaction.
"""

from __future__ import annotations

from shared.auth import Caller
from shared.context import ServiceContext
from shared.events import Actor, DocumentFacts, Event, RoutingKey
from shared.fhir.errors import Code, FhirError
from shared.policy import Decision, PolicyView
from shared.store import Session


def actor_of(who: Caller, address: str | None = None) -> Actor:
    return Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, address=address)


def facts(record_id: str, patient: str, custodian: str, record_type: str) -> DocumentFacts:
    """A care record as the policy sees a document: its custodian, patient and SNOMED record type."""
    from shared.fhir.identifiers import SNOMED

    return DocumentFacts(
        document_id=record_id,
        patient_nhs_number=patient,
        custodian=custodian,
        type_system=SNOMED,
        type_code=record_type,
        content_type="application/fhir+json",
        size=0,
        sha256="",
    )


class Access:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.policy = PolicyView(ctx.store)

    async def decide(self, who: Caller, record: DocumentFacts) -> Decision:
        if who.role in ("patient", "carer"):
            return await self.policy.acts_for_patient(who, record.patient_nhs_number)
        return await self.policy.decide(who, record)

    async def read(
        self,
        who: Caller,
        resource: str,
        *,
        action: str,
        patient: str | None,
        rule: str | None,
        request_id: str,
        session: Session,
        query: str | None = None,
        results: int | None = None,
    ) -> None:
        record = self.policy.read_record(
            actor_of(who), resource, action, patient=patient, rule=rule, query=query, results=results
        )
        await self.ctx.publish(
            Event.new(
                RoutingKey.RECORD_READ,
                record,
                source=self.ctx.source,
                subject=resource.split("/", 1)[0],
                correlation_id=request_id,
            ),
            session=session,
        )

    async def deny(
        self, who: Caller, resource: str, decision: Decision, *, action: str, patient: str | None, request_id: str
    ) -> FhirError:
        """Record the refusal; the caller raises the returned error (403)."""
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(
                Event.new(
                    RoutingKey.ACCESS_DENIED,
                    self.policy.refusal_record(actor_of(who), resource, action, decision, patient=patient),
                    source=self.ctx.source,
                    subject=resource.split("/", 1)[0],
                    correlation_id=request_id,
                ),
                session=session,
            )
        self.ctx.outbox.notify()
        return FhirError.of(Code.ACCESS_DENIED, decision.public(request_id))
