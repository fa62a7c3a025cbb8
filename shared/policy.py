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
    AccessDenied,
    Actor,
    AgreementState,
    AgreementStatus,
    CarerGrantState,
    CareTeamState,
    ConsentSynced,
    DocumentFacts,
    Event,
    OrganisationState,
    PatientPreferencesState,
    Payload,
    RecordRead,
)
from shared.fhir.identifiers import LOINC, SNOMED
from shared.store import Document, DocumentStore, Index, Session

DIRECT_CARE = "direct-care"
CANCER_CARE = "cancer-care"
# Direct care and the sub-purposes an ISA may be limited to; an ISA for direct care covers them all.
PURPOSES = (DIRECT_CARE, CANCER_CARE, "end-of-life-care", "transfer-of-care")

# Document categories a patient opts out of and an ISA covers, by document type. A type not listed
# here is "other": it is still governed (an ISA limited to named categories does not cover it).
CATEGORY_BY_TYPE: dict[tuple[str, str], str] = {
    (LOINC, "11526-1"): "pathology",
    (LOINC, "60568-3"): "pathology",
    (LOINC, "18748-4"): "imaging",
    (LOINC, "57133-1"): "referral",
    (LOINC, "18842-5"): "discharge-summary",
    (LOINC, "11488-4"): "clinic-letter",
    (LOINC, "18776-5"): "care-plan",
}
OTHER_CATEGORY = "other"
CATEGORIES = (*sorted(set(CATEGORY_BY_TYPE.values())), OTHER_CATEGORY)


def category_of(document: DocumentFacts) -> str:
    return CATEGORY_BY_TYPE.get((document.type_system or "", document.type_code or ""), OTHER_CATEGORY)


def purpose_for(who: Caller) -> str:
    """The purpose the token states; else the role's default: MDT members work on cancer care."""
    if who.purpose:
        return who.purpose
    return CANCER_CARE if who.mdt else DIRECT_CARE


def covers(agreement: AgreementState, a: str, b: str, purpose: str, category: str, now: datetime) -> bool:
    """Does this ISA, as it stands at ``now``, permit sharing between ``a`` and ``b`` for the purpose?"""
    signed = agreement.accepted_by or agreement.parties
    return (
        agreement.status is AgreementStatus.ACCEPTED
        and a in signed
        and b in signed
        and (agreement.valid_from is None or agreement.valid_from <= now)
        and (agreement.valid_to is None or now < agreement.valid_to)
        and (purpose in agreement.purposes or DIRECT_CARE in agreement.purposes)
        and purpose_admits(agreement, purpose, category)
        and (not agreement.categories or category in agreement.categories)
    )


# What a refused caller is told. The rule and the reason (which may say that the patient opted out, a
# preference the patient has not shared with that organisation) go to the access.denied event instead,
# so into the AuditEvent and the patient's own access report; the reference finds that record.
DENIED = "not permitted by the sharing policy"


def denied_text(reference: str | None = None) -> str:
    """The generic refusal, with the request's correlation id as a reference when there is one."""
    return f"Access denied: {DENIED}" + (f" (reference {reference})." if reference else ".")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str  # private: for the audit record and the patient, never for the caller

    @property
    def detail(self) -> str:
        return self.reason

    def public(self, reference: str | None = None) -> str:
        """What the caller is told when refused."""
        return denied_text(reference)

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
            inner = payload.carer_grant or payload.preferences
            if inner is None:
                return False
            payload = inner
        collection = self._by_kind.get(type(payload))
        if collection is None:
            return False
        key = getattr(payload, _KINDS[type(payload)][1])
        current = await collection.get(key, session=session)
        if current is not None and current["version"] >= payload.version:  # type: ignore[attr-defined]  # every kind in _KINDS is versioned
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

    async def agreements_of(self, org: str) -> list[AgreementState]:
        """Every agreement naming ``org`` as a party, whatever its status."""
        docs = await self._agreements.find({"parties": org}, limit=1000)
        return [AgreementState.model_validate(_strip(d)) for d in docs]

    async def agreements_between(self, a: str, b: str) -> list[AgreementState]:
        docs = await self._agreements.find({"parties": a}, limit=1000)
        found = [AgreementState.model_validate(_strip(d)) for d in docs]
        return [ag for ag in found if b in ag.parties]

    async def preferences(self, nhs_number: str) -> PatientPreferencesState | None:
        doc = await self._preferences.get(nhs_number)
        return PatientPreferencesState.model_validate(_strip(doc)) if doc else None

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
                if (
                    grant.carer_subject == who.subject
                    and grant.active
                    and (grant.valid_to is None or now < grant.valid_to)
                ):
                    return Decision.permit("carer-grant", f"carer grant {grant.grant_id} is active")
            return Decision.deny("no-carer-grant", "no active carer grant from this patient")
        return Decision.deny("not-patient-facing", "only the patient or their authorised carer")

    async def decide(self, who: Caller, document: DocumentFacts, *, purpose: str | None = None) -> Decision:
        """May ``who`` see ``document`` for ``purpose``? Custodian; else an accepted, in-date ISA
        covering the purpose and the document's category, and no opt-out by the patient.

        Reasons name the rule and the organisations, never the patient or what they opted out of.
        """
        purpose = purpose or purpose_for(who)
        if who.role in ("patient", "carer"):
            return Decision.deny("patient-access", "patients see their records through the patient view")
        requester = await self.organisation(who.org)
        if requester is None or not requester.active:
            return Decision.deny("unknown-organisation", f"{who.org} is not a known active organisation")
        if who.org == document.custodian:
            return Decision.permit("custodian", f"{who.org} is the custodian")
        now = datetime.now(UTC)
        category = category_of(document)
        agreements = await self.agreements_between(who.org, document.custodian)
        permit = next(
            (ag for ag in agreements if covers(ag, who.org, document.custodian, purpose, category, now)), None
        )
        if permit is None:
            # Name the category only when it is what an otherwise valid ISA lacks.
            other_category = any(
                covers(ag.model_copy(update={"categories": ()}), who.org, document.custodian, purpose, category, now)
                for ag in agreements
            )
            return Decision.deny(
                "no-isa",
                f"no accepted ISA between {who.org} and {document.custodian} for purpose {purpose}"
                + (f" covering {category} documents" if other_category else ""),
            )
        # The custodian is exempt (it made the record); the exceptions are written down in docs/agreements.md.
        preferences = await self.preferences(document.patient_nhs_number)
        if preferences is not None:
            if who.org in preferences.opted_out_organisations:
                return Decision.deny(
                    "patient-opt-out-organisation",
                    f"a patient sharing preference (organisation opt-out) withholds this document from {who.org}",
                )
            if category in preferences.opted_out_categories:
                return Decision.deny(
                    "patient-opt-out-category",
                    f"a patient sharing preference (category opt-out) withholds this document from {who.org}",
                )
        return Decision.permit("isa", f"ISA {permit.agreement_id} is accepted")

    async def careteam_of(self, careteam_id: str, org: str) -> bool:
        """Is ``careteam_id`` a known MDT managed by ``org``? (A token's MDT claim counts only then.)"""
        team = await self.careteam(careteam_id)
        return team is not None and team.organisation == org

    # What an access decision leaves on the record, the same from every service that decides: each wraps it
    # in its own event (its source, its transaction or outbox) and chooses the actor (a service that serves
    # patients leaves their names off).

    @staticmethod
    def refusal_record(
        actor: Actor, resource: str, action: str, decision: Decision, *, patient: str | None
    ) -> AccessDenied:
        """``access.denied`` for a refusal: the rule and its private reason go on the record, the caller is
        told only ``decision.public``."""
        return AccessDenied(
            actor=actor,
            resource=resource,
            action=action,
            reason_code=decision.rule,
            reason=decision.reason,
            patient_nhs_number=patient,
        )

    @staticmethod
    def read_record(
        actor: Actor,
        resource: str,
        action: str,
        *,
        patient: str | None,
        rule: str | None,
        query: str | None = None,
        results: int | None = None,
    ) -> RecordRead:
        """``record.read`` for an allowed read or search: whose record, under which rule, how many results."""
        return RecordRead(
            actor=actor,
            resource=resource,
            action=action,  # pydantic checks it against RecordRead's actions
            patient_nhs_number=patient,
            query=query,
            results=results,
            rule=rule,
        )


def _strip(doc: Document) -> Document:
    return {k: v for k, v in doc.items() if k != "_id"}


# --- Purpose-limited ISAs (issue 18) --------------------------------------------------------------
END_OF_LIFE_CARE = "end-of-life-care"
TRANSFER_OF_CARE = "transfer-of-care"
# SNOMED record types of NHS England's National Record Locator, and the care service's transfer records.
CATEGORY_BY_TYPE.update(
    {
        (SNOMED, "861421000000109"): END_OF_LIFE_CARE,  # End of life care coordination summary
        (SNOMED, "736373009"): END_OF_LIFE_CARE,  # End of life care plan
        (SNOMED, "1382601000000107"): END_OF_LIFE_CARE,  # ReSPECT form
        (SNOMED, "373942005"): TRANSFER_OF_CARE,  # Discharge summary (the care service's FHIR documents)
        (SNOMED, "107724000"): TRANSFER_OF_CARE,  # Patient transfer (a repatriation request and its form)
    }
)
CATEGORIES = (*sorted(set(CATEGORY_BY_TYPE.values())), OTHER_CATEGORY)
# What an ISA limited to a purpose (and not to direct care) admits: an end-of-life ISA admits the
# end-of-life records and nothing else. Cancer care keeps its older meaning (the categories it names).
PURPOSE_CATEGORIES: dict[str, frozenset[str]] = {
    END_OF_LIFE_CARE: frozenset({END_OF_LIFE_CARE}),
    TRANSFER_OF_CARE: frozenset({TRANSFER_OF_CARE, "discharge-summary"}),
}


def purpose_admits(agreement: AgreementState, purpose: str, category: str) -> bool:
    if DIRECT_CARE in agreement.purposes:
        return True
    admitted = PURPOSE_CATEGORIES.get(purpose)
    return admitted is None or category in admitted


def never_applies(agreement: AgreementState) -> str | None:
    """Why no request could ever be admitted under this ISA, or None: for the DCC to warn on."""
    if len(set(agreement.parties)) < 2 and not agreement.template:  # a template waits for others to join
        return "it has fewer than two parties"
    if agreement.valid_from and agreement.valid_to and agreement.valid_to <= agreement.valid_from:
        return "it ends before it starts"
    if DIRECT_CARE in agreement.purposes or not agreement.categories:
        return None
    if all(
        not (PURPOSE_CATEGORIES.get(p) is None or PURPOSE_CATEGORIES[p] & set(agreement.categories))
        for p in agreement.purposes
    ):
        return (
            f"its purposes ({', '.join(agreement.purposes)}) admit none of its document categories "
            f"({', '.join(agreement.categories)})"
        )
    return None
