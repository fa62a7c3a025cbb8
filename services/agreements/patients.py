"""What a patient (or a carer they authorised) sees and controls: which organisations hold records
about them, their sharing preferences, and their carers' access.

Agreements does not own documents: it learns who holds what from ``document.stored`` events and keeps
one row per patient and organisation (no document ids, titles or content).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.agreements.consent_fhir import CarerRequest, Preferences
from services.agreements.isas import actor_of
from services.agreements.registry import PolicyRegistry
from shared.auth import Caller
from shared.context import ServiceContext
from shared.events import (
    CarerGrantState,
    DocumentStored,
    Event,
    OrganisationState,
    PatientPreferencesState,
    RecordRead,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import valid_nhs_number
from shared.policy import category_of
from shared.store import ASCENDING, Index, Session

# The exceptions to a patient's opt-outs, as the law and the ISAs allow; shown to the patient with
# their preferences (Consent.policyRule) and in docs/agreements.md.
EXCEPTIONS = (
    "The organisation that made a record keeps it and can always see it.",
    "An opt-out applies from when it is set: documents already shared stay in the receiving organisation's "
    "own records, which it must keep under its records-management duty.",
    "Disclosures the law requires or permits without consent (safeguarding a child or adult at risk, a court "
    "order, serious risk of harm) are made outside this exchange, organisation to organisation, and are not "
    "blocked by these preferences.",
)


class Patients:
    def __init__(self, ctx: ServiceContext, registry: PolicyRegistry) -> None:
        self.ctx = ctx
        self.registry = registry
        self.holders = ctx.store.collection("record_holders", [Index(("patient",))])

    # -- who holds records ---------------------------------------------------------------------------

    async def on_stored(self, event: Event) -> None:
        stored = event.payload()
        assert isinstance(stored, DocumentStored)
        facts = stored.document
        key = f"{facts.patient_nhs_number}|{facts.custodian}"
        when = stored.stored_at.isoformat()

        async def record(session: Session) -> None:
            doc = await self.holders.get(key, session=session) or {
                "_id": key,
                "patient": facts.patient_nhs_number,
                "organisation": facts.custodian,
                "documents": 0,
                "categories": [],
                "first_stored": when,
                "last_stored": when,
            }
            doc["documents"] += 1
            if (category := category_of(facts)) not in doc["categories"]:
                doc["categories"].append(category)
            doc["first_stored"] = min(doc["first_stored"], when)
            doc["last_stored"] = max(doc["last_stored"], when)
            await self.holders.replace(doc, session=session, upsert=True)

        # Shared with other deliveries' records (one commit): it reads the holder through its session.
        await self.ctx.once(event, record, shared=True)

    async def record_holders(self, who: Caller, nhs_number: str) -> list[dict[str, Any]]:
        await self.require_access(who, nhs_number)
        rows = await self.holders.find({"patient": nhs_number}, sort=[("organisation", ASCENDING)], limit=1000)
        found = []
        for row in rows:
            org = await self.registry.one(OrganisationState, row["organisation"])
            found.append(
                {
                    "organisation": row["organisation"],
                    "name": org.name if org else row["organisation"],
                    "kind": org.kind if org else None,
                    "documents": row["documents"],
                    "categories": sorted(row["categories"]),
                    "first_stored": row["first_stored"],
                    "last_stored": row["last_stored"],
                }
            )
        return found

    async def on_record(
        self, who: Caller, nhs_number: str, resource: str, *, request_id: str | None, address: str | None
    ) -> None:
        """A carer's look at the patient's holders, preferences or carers discloses them to someone other
        than the patient: it goes on the record, so into the patient's own access report. The patient's
        own look discloses nothing and is not recorded."""
        if who.role == "patient" and who.patient == nhs_number:
            return
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(
                Event.new(
                    RoutingKey.RECORD_READ,
                    RecordRead(
                        actor=actor_of(who, address),
                        resource=resource,
                        action="read",
                        patient_nhs_number=nhs_number,
                        rule="carer-grant",
                    ),
                    source=self.ctx.source,
                    subject=resource,
                    correlation_id=request_id,
                ),
                session=session,
            )
        self.ctx.outbox.notify()

    # -- who may act ---------------------------------------------------------------------------------

    def patient_of(self, who: Caller, asked: str | None) -> str:
        """The patient a request is about: a patient's own; a carer names theirs (``?patient=``)."""
        # People write NHS numbers in groups ("900 000 0009"); the number is the digits.
        nhs = "".join(asked.split()) if asked else (who.patient if who.role == "patient" else None)
        if not nhs:
            raise FhirError.of(Code.INVALID_PARAMETER, "Name the patient (patient=<NHS number>).", "patient")
        if not valid_nhs_number(nhs):
            raise FhirError.of(Code.INVALID_NHS_NUMBER, expression="patient")
        return nhs

    async def require_access(self, who: Caller, nhs_number: str) -> None:
        decision = await self.registry.policy.acts_for_patient(who, nhs_number)
        if not decision.allowed:
            # The same answer whether or not the patient exists or has any records.
            raise FhirError.of(Code.ACCESS_DENIED, decision.public())

    def require_patient(self, who: Caller, nhs_number: str) -> None:
        """Only the patient themself changes preferences and carers (a carer's access is to see)."""
        if who.role != "patient" or who.patient != nhs_number:
            raise FhirError.of(Code.ACCESS_DENIED, "Access denied: only the patient may change this.")

    # -- preferences ---------------------------------------------------------------------------------

    async def preferences(self, who: Caller, nhs_number: str) -> PatientPreferencesState | None:
        await self.require_access(who, nhs_number)
        return await self.registry.one(PatientPreferencesState, nhs_number)

    async def set_preferences(self, who: Caller, nhs_number: str, wanted: Preferences) -> PatientPreferencesState:
        self.require_patient(who, nhs_number)
        for org in wanted.organisations:
            if await self.registry.one(OrganisationState, org) is None:
                raise FhirError.of(
                    Code.BUSINESS_RULE, f"{org} is not a registered organisation.", "Consent.provision.provision"
                )
        state = PatientPreferencesState(
            patient_nhs_number=nhs_number,
            opted_out_categories=wanted.categories,
            opted_out_organisations=wanted.organisations,
            version=1,
        )
        saved = await self.registry.save(state, RoutingKey.POLICY_CONSENT_PREFERENCES_UPDATED)
        assert isinstance(saved, PatientPreferencesState)
        return saved

    # -- carers --------------------------------------------------------------------------------------

    async def carers(self, who: Caller, nhs_number: str) -> list[CarerGrantState]:
        await self.require_access(who, nhs_number)
        grants = await self.registry.every(CarerGrantState, {"patient_nhs_number": nhs_number})
        if who.role == "carer":
            # A carer sees their own grant, not who else the patient has trusted.
            grants = [g for g in grants if g.carer_subject == who.subject]
        return grants

    async def grant(self, who: Caller, nhs_number: str, request: CarerRequest) -> CarerGrantState:
        self.require_patient(who, nhs_number)
        if request.valid_to and request.valid_to <= datetime.now(UTC):
            raise FhirError.of(Code.BUSINESS_RULE, "The grant would already have ended.", "RelatedPerson.period.end")
        if request.carer_subject == who.subject:
            raise FhirError.of(Code.BUSINESS_RULE, "A patient cannot be their own carer.", "RelatedPerson.identifier")
        state = CarerGrantState(
            grant_id=f"grant-{uuid.uuid4().hex[:12]}",
            patient_nhs_number=nhs_number,
            carer_subject=request.carer_subject,
            carer_name=request.carer_name,
            relationship=request.relationship,
            valid_to=request.valid_to,
            version=1,
        )
        saved = await self.registry.save(state, RoutingKey.POLICY_CONSENT_CARER_GRANTED)
        assert isinstance(saved, CarerGrantState)
        return saved

    async def revoke(self, who: Caller, grant_id: str) -> CarerGrantState:
        grant = await self.registry.one(CarerGrantState, grant_id)
        if grant is None or who.role != "patient" or who.patient != grant.patient_nhs_number:
            raise FhirError.of(Code.NOT_FOUND)

        async def end(current: CarerGrantState | None) -> tuple[CarerGrantState, RoutingKey]:
            assert current is not None
            if not current.active:
                raise FhirError.of(Code.CONFLICT, "The grant is already revoked.")
            return current.model_copy(update={"active": False}), RoutingKey.POLICY_CONSENT_CARER_REVOKED

        return await self.registry.change(CarerGrantState, grant_id, end)
