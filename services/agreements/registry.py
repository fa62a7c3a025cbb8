"""Organisations, MDTs (CareTeams) and ISAs (Contracts): the agreements service's own data.

Every change is written with its ``policy.*`` event in one transaction; the event carries the object's
full new state and version, which is how the other services keep their policy views current.
"""

from __future__ import annotations

from typing import TypeVar

from shared.events import (
    AgreementState,
    CareTeamState,
    Event,
    OrganisationState,
    Payload,
    RoutingKey,
)
from shared.lifecycle import ServiceContext
from shared.store import ASCENDING, Document, Index

P = TypeVar("P", bound=Payload)

SYNC_KEYS = {
    OrganisationState: RoutingKey.POLICY_ORGANISATION_SYNCED,
    CareTeamState: RoutingKey.POLICY_CARETEAM_SYNCED,
    AgreementState: RoutingKey.POLICY_AGREEMENT_SYNCED,
}
PAGE = 500


class Registry:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.organisations = ctx.store.collection("organisations")
        self.careteams = ctx.store.collection("careteams", [Index(("organisation",))])
        self.agreements = ctx.store.collection("agreements", [Index(("parties",)), Index(("status",))])
        self._collections = {
            OrganisationState: (self.organisations, "ods_code"),
            CareTeamState: (self.careteams, "careteam_id"),
            AgreementState: (self.agreements, "agreement_id"),
        }

    async def save(self, state: Payload, key: RoutingKey) -> None:
        """Write the new state (its version one above the stored one) and announce it."""
        collection, id_field = self._collections[type(state)]
        object_id = getattr(state, id_field)
        async with self.ctx.store.transaction() as session:
            current = await collection.get(object_id, session=session)
            state = state.model_copy(update={"version": (current["version"] + 1) if current else 1})
            await collection.replace({"_id": object_id, **state.model_dump(mode="json")}, session=session, upsert=True)
            await self.ctx.publish(
                Event.new(key, state, source=self.ctx.source, subject=object_id), session=session
            )
        self.ctx.outbox.notify()

    async def is_empty(self) -> bool:
        return await self.organisations.count() == 0

    async def all(self, kind: type[P], where: dict | None = None, *, limit: int = PAGE, skip: int = 0) -> list[P]:
        collection, _ = self._collections[kind]
        docs = await collection.find(where or {}, sort=[("_id", ASCENDING)], limit=limit, skip=skip)
        return [kind.model_validate(_state(d)) for d in docs]

    async def one(self, kind: type[P], object_id: str) -> P | None:
        collection, _ = self._collections[kind]
        doc = await collection.get(object_id)
        return kind.model_validate(_state(doc)) if doc else None

    async def announce_all(self) -> int:
        """Re-publish every object's current state, so a policy view that missed events converges."""
        sent = 0
        for kind, key in SYNC_KEYS.items():
            skip = 0
            while page := await self.all(kind, limit=PAGE, skip=skip):
                async with self.ctx.store.transaction() as session:
                    for state in page:
                        await self.ctx.publish(
                            Event.new(key, state, source=self.ctx.source, subject=_object_id(state)), session=session
                        )
                sent += len(page)
                skip += PAGE
        self.ctx.outbox.notify()
        return sent


def _state(doc: Document) -> Document:
    return {k: v for k, v in doc.items() if k != "_id"}


def _object_id(state: Payload) -> str:
    for field in ("ods_code", "careteam_id", "agreement_id"):
        if hasattr(state, field):
            return str(getattr(state, field))
    raise TypeError(type(state).__name__)
