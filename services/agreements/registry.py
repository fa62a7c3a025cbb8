"""Organisations, MDTs, ISAs, carer grants and sharing preferences: the agreements service's own data.

Every change is written with its ``policy.*`` event in one transaction; the event carries the object's
full new state and version, which is how the other services keep their policy views current. The
service's own ``PolicyView`` is updated in the same transaction, so its decisions never lag its writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.context import ServiceContext
from shared.events import (
    AgreementState,
    CarerGrantState,
    CareTeamState,
    ConsentSynced,
    Event,
    OrganisationState,
    PatientPreferencesState,
    Payload,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError
from shared.policy import PolicyView
from shared.store import ASCENDING, Document, Index, Session

P = TypeVar("P", bound=Payload)

SYNC_KEYS: dict[type[Payload], RoutingKey] = {
    OrganisationState: RoutingKey.POLICY_ORGANISATION_SYNCED,
    CareTeamState: RoutingKey.POLICY_CARETEAM_SYNCED,
    AgreementState: RoutingKey.POLICY_AGREEMENT_SYNCED,
    CarerGrantState: RoutingKey.POLICY_CONSENT_SYNCED,
    PatientPreferencesState: RoutingKey.POLICY_CONSENT_SYNCED,
}
ID_FIELDS = {
    OrganisationState: "ods_code",
    CareTeamState: "careteam_id",
    AgreementState: "agreement_id",
    CarerGrantState: "grant_id",
    PatientPreferencesState: "patient_nhs_number",
}
PAGE = 500

# A change computed from the current state (None when the object is new): the new state and its key.
Change = Callable[[P | None], Awaitable[tuple[P, RoutingKey]]]


class PolicyRegistry:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.organisations = ctx.store.collection("organisations")
        self.careteams = ctx.store.collection("careteams", [Index(("organisation",))])
        self.agreements = ctx.store.collection("agreements", [Index(("parties",)), Index(("status",))])
        self.carer_grants = ctx.store.collection(
            "carer_grants", [Index(("patient_nhs_number",)), Index(("carer_subject",))]
        )
        self.preferences = ctx.store.collection("preferences")
        # What a policy event does not carry: organisation contacts, the signed PDF's object key.
        self.details = ctx.store.collection("details")
        self.policy = PolicyView(ctx.store)
        self._collections = {
            OrganisationState: self.organisations,
            CareTeamState: self.careteams,
            AgreementState: self.agreements,
            CarerGrantState: self.carer_grants,
            PatientPreferencesState: self.preferences,
        }

    async def save(self, state: Payload, key: RoutingKey, *, details: dict[str, Any] | None = None) -> Payload:
        """Write the new state (its version one above the stored one) and announce it."""

        async def replace(_: Any) -> tuple[Payload, RoutingKey]:
            return state, key

        return await self.change(type(state), _object_id(state), replace, details=details)

    async def change(
        self, kind: type[P], object_id: str, change: Change[P], *, details: dict[str, Any] | None = None
    ) -> P:
        """Read, change and write one object and publish its event, all in one transaction.

        ``change`` sees the committed current state, so two concurrent steps (two parties signing at
        once) cannot overwrite each other.
        """
        collection = self._collections[kind]
        async with self.ctx.store.transaction() as session:
            current_doc = await collection.get(object_id, session=session)
            current = kind.model_validate(_state(current_doc)) if current_doc else None
            state, key = await change(current)
            state = state.model_copy(update={"version": (current_doc["version"] + 1) if current_doc else 1})
            await collection.replace({"_id": object_id, **state.model_dump(mode="json")}, session=session, upsert=True)
            if details is not None:
                await self.details.replace(
                    {"_id": f"{kind.__name__}/{object_id}", **details}, session=session, upsert=True
                )
            event = Event.new(key, state, source=self.ctx.source, subject=_subject(state))
            await self.policy.apply(event, session=session)
            await self.ctx.publish(event, session=session)
        self.ctx.outbox.notify()
        return state

    async def details_of(self, kind: type[Payload], object_id: str) -> dict[str, Any]:
        doc = await self.details.get(f"{kind.__name__}/{object_id}")
        return _state(doc) if doc else {}

    async def is_empty(self) -> bool:
        return await self.organisations.count() == 0

    async def all(
        self, kind: type[P], where: dict[str, Any] | None = None, *, limit: int = PAGE, skip: int = 0
    ) -> list[P]:
        collection = self._collections[kind]
        docs = await collection.find(where or {}, sort=[("_id", ASCENDING)], limit=limit, skip=skip)
        return [kind.model_validate(_state(d)) for d in docs]

    async def every(self, kind: type[P], where: dict[str, Any] | None = None) -> list[P]:
        """Every matching object, page by page (the DCC's views are over hundreds, not millions)."""
        found: list[P] = []
        while page := await self.all(kind, where, limit=PAGE, skip=len(found)):
            found.extend(page)
        return found

    async def one(self, kind: type[P], object_id: str) -> P | None:
        doc = await self._collections[kind].get(object_id)
        return kind.model_validate(_state(doc)) if doc else None

    async def require(self, kind: type[P], object_id: str) -> P:
        found = await self.one(kind, object_id)
        if found is None:
            raise FhirError.of(Code.NOT_FOUND)
        return found

    async def announce_all(self) -> int:
        """Re-publish every object's current state, so a policy view that missed events converges."""
        sent = 0
        for kind, key in SYNC_KEYS.items():
            skip = 0
            while page := await self.all(kind, limit=PAGE, skip=skip):
                async with self.ctx.store.transaction() as session:
                    for state in page:
                        await self._announce(state, key, session)
                sent += len(page)
                skip += PAGE
        self.ctx.outbox.notify()
        return sent

    async def _announce(self, state: Payload, key: RoutingKey, session: Session) -> None:
        subject = _subject(state)
        if isinstance(state, CarerGrantState):
            state = ConsentSynced(carer_grant=state)
        elif isinstance(state, PatientPreferencesState):
            state = ConsentSynced(preferences=state)
        await self.ctx.publish(Event.new(key, state, source=self.ctx.source, subject=subject), session=session)


def _state(doc: Document) -> Document:
    return {k: v for k, v in doc.items() if k != "_id"}


def _object_id(state: Payload) -> str:
    return str(getattr(state, ID_FIELDS[type(state)]))


def _subject(state: Payload) -> str | None:
    # A consent event's subject would otherwise be an NHS number, which has no place in message headers.
    if isinstance(state, OrganisationState | CareTeamState | AgreementState):
        return _object_id(state)
    if isinstance(state, CarerGrantState):
        return f"carer-grant/{state.grant_id}"
    return None
