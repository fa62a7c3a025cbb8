"""The sharing policy as every service sees it, and the one access decision they all use.

The agreements service owns organisations, MDTs and ISAs and publishes their full state on every change
(``policy.*`` events). Each service that decides access keeps a replica of that state in its own store,
fed from its queue, and asks ``PolicyView.decide``. An organisation, MDT or ISA the replica has not
heard of does not exist for the decision: it fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shared.auth import Caller
from shared.events import (
    AgreementState,
    AgreementStatus,
    CarerGrantState,
    CareTeamState,
    ConsentSynced,
    DocumentFacts,
    Event,
    OrganisationState,
    Payload,
    PatientPreferencesState,
)
from shared.store import DocumentStore, Index, Session

DIRECT_CARE = "direct-care"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str

    @classmethod
    def permit(cls, rule: str, reason: str) -> Decision:
        return cls(True, rule, reason)

    @classmethod
    def deny(cls, rule: str, reason: str) -> Decision:
        return cls(False, rule, reason)


_KINDS: dict[type[Payload], tuple[str, str]] = {
    OrganisationState: ("policy_organisations", "ods_code"),
    CareTeamState: ("policy_careteams", "careteam_id"),
    AgreementState: ("policy_agreements", "agreement_id"),
    CarerGrantState: ("policy_carer_grants", "grant_id"),
    PatientPreferencesState: ("policy_preferences", "patient_nhs_number"),
}


class PolicyView:
    def __init__(self, store: DocumentStore) -> None:
        self._organisations = store.collection("policy_organisations")
        self._careteams = store.collection("policy_careteams", [Index(("organisation",))])
        self._agreements = store.collection("policy_agreements", [Index(("parties",))])
        self._carer_grants = store.collection("policy_carer_grants", [Index(("patient_nhs_number",))])
        self._preferences = store.collection("policy_preferences")
        self._by_kind = {
            OrganisationState: self._organisations,
            CareTeamState: self._careteams,
            AgreementState: self._agreements,
            CarerGrantState: self._carer_grants,
            PatientPreferencesState: self._preferences,
        }

    @staticmethod
    def handles(event: Event) -> bool:
        return event.type.startswith("policy.")

    async def apply(self, event: Event, *, session: Session | None = None) -> bool:
        """Keep the newest state of the object the event describes; returns whether it changed."""
        payload = event.payload()
        if isinstance(payload, ConsentSynced):
            payload = payload.carer_grant or payload.preferences
        collection = self._by_kind.get(type(payload))
        if collection is None:
            return False
        key = getattr(payload, _KINDS[type(payload)][1])
        current = await collection.get(key, session=session)
        if current is not None and current["version"] >= payload.version:  # type: ignore[attr-defined]
            return False
        doc = {"_id": key, **payload.model_dump(mode="json")}
        await collection.replace(doc, session=session, upsert=True)
        return True

    async def organisation(self, ods_code: str) -> OrganisationState | None:
        doc = await self._organisations.get(ods_code)
        return OrganisationState.model_validate(_strip(doc)) if doc else None

    async def careteam(self, careteam_id: str) -> CareTeamState | None:
        doc = await self._careteams.get(careteam_id)
        return CareTeamState.model_validate(_strip(doc)) if doc else None

    async def agreements_between(self, a: str, b: str) -> list[AgreementState]:
        docs = await self._agreements.find({"parties": a}, limit=1000)
        found = [AgreementState.model_validate(_strip(d)) for d in docs]
        return [ag for ag in found if b in ag.parties]

    async def acts_for_patient(self, who: Caller, nhs_number: str) -> Decision:
        """May ``who`` act for the patient with ``nhs_number``: the patient, or a carer they authorised."""
        if who.role == "patient":
            if who.patient == nhs_number:
                return Decision.permit("patient", "the patient themself")
            return Decision.deny("not-the-patient", "a patient may only see their own records")
        if who.role == "carer":
            now = datetime.now(UTC)
            for doc in await self._carer_grants.find({"patient_nhs_number": nhs_number}, limit=1000):
                grant = CarerGrantState.model_validate(_strip(doc))
                if grant.carer_subject == who.subject and grant.active and (grant.valid_to is None or now < grant.valid_to):
                    return Decision.permit("carer-grant", f"carer grant {grant.grant_id} is active")
            return Decision.deny("no-carer-grant", "no active carer grant from this patient")
        return Decision.deny("not-patient-facing", "only the patient or their authorised carer")

    async def decide(
        self, who: Caller, document: DocumentFacts, *, purpose: str = DIRECT_CARE
    ) -> Decision:
        """May ``who`` see ``document`` for ``purpose``? Custodian, then an accepted, in-date ISA."""
        if who.role in ("patient", "carer"):
            return Decision.deny("patient-access", "patients see their records through the patient view")
        requester = await self.organisation(who.org)
        if requester is None or not requester.active:
            return Decision.deny("unknown-organisation", f"{who.org} is not a known active organisation")
        if who.org == document.custodian:
            return Decision.permit("custodian", f"{who.org} is the custodian")
        now = datetime.now(UTC)
        for agreement in await self.agreements_between(who.org, document.custodian):
            if (
                agreement.status is AgreementStatus.ACCEPTED
                and (agreement.valid_from is None or agreement.valid_from <= now)
                and (agreement.valid_to is None or now < agreement.valid_to)
                and (purpose in agreement.purposes or DIRECT_CARE in agreement.purposes)
            ):
                return Decision.permit("isa", f"ISA {agreement.agreement_id} is accepted")
        return Decision.deny(
            "no-isa",
            f"no accepted ISA between {who.org} and {document.custodian} for purpose {purpose}",
        )


def _strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "_id"}
