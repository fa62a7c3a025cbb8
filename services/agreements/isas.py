"""The ISA lifecycle: propose, each party accepts or rejects, either revokes, it expires; templates that
organisations join; what is pending on an organisation; duplicates and their rationalisation.

Every step is one ``PolicyRegistry.change`` (state + ``policy.agreement.*`` event in one transaction), so
every step reaches the other services' policy views and the audit log.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from typing import Any

from services.agreements.contract_fhir import ContractInput
from services.agreements.registry import PolicyRegistry
from shared.auth import Caller
from shared.events import (
    AccessDenied,
    Actor,
    AgreementState,
    AgreementStatus,
    Event,
    OrganisationState,
    RecordRead,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError
from shared.objects import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from shared.policy import DIRECT_CARE

LIVE = (AgreementStatus.PROPOSED, AgreementStatus.ACCEPTED)
OPERATOR = "exchange-operator"
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
MAX_REASON = 500


def actor_of(who: Caller, address: str | None = None) -> Actor:
    return Actor(org=who.org, role=who.role, subject=who.subject, address=address)


def _conflict(message: str) -> FhirError:
    return FhirError.of(Code.CONFLICT, message)


def _rule(message: str) -> FhirError:
    return FhirError.of(Code.BUSINESS_RULE, message)


@dataclass(frozen=True)
class Overlap:
    """Two live ISAs that both cover sharing between ``parties`` for ``purposes``."""

    first: AgreementState
    second: AgreementState
    parties: tuple[str, ...]
    purposes: tuple[str, ...]


class Agreements:
    def __init__(self, registry: PolicyRegistry, objects: ObjectStore) -> None:
        self.registry = registry
        self.objects = objects

    # -- proposing ---------------------------------------------------------------------------------

    async def propose(self, who: Caller, draft: ContractInput, *, supersedes: tuple[str, ...] = ()) -> AgreementState:
        """A DCC proposes an ISA on behalf of its own organisation, which signs it by proposing."""
        parties = draft.parties if who.org in draft.parties else (who.org, *draft.parties)
        if draft.template:
            parties = (who.org,)
        elif len(parties) < 2:
            raise _rule("An ISA needs at least two parties (or mark it as a template to join).")
        for party in parties:
            org = await self.registry.one(OrganisationState, party)
            if org is None or not org.active:
                raise _rule(f"{party} is not a registered active organisation.")
        if draft.valid_to and draft.valid_to <= datetime.now(UTC):
            raise _rule("The agreement would already have expired.")
        state = AgreementState(
            agreement_id=f"isa-{uuid.uuid4().hex[:12]}",
            title=draft.title,
            parties=parties,
            purposes=draft.purposes,
            categories=draft.categories,
            status=AgreementStatus.ACCEPTED if draft.template else AgreementStatus.PROPOSED,
            valid_from=draft.valid_from,
            valid_to=draft.valid_to,
            actor=actor_of(who),
            proposed_by=who.org,
            accepted_by=(who.org,),
            template=draft.template,
            supersedes=supersedes,
            version=1,
        )
        key = RoutingKey.POLICY_AGREEMENT_ACCEPTED if draft.template else RoutingKey.POLICY_AGREEMENT_PROPOSED
        details: dict[str, Any] = {"signed_at": {who.org: _now()}}
        if draft.template and draft.admits:
            details["admits"] = draft.admits
        saved = await self.registry.save(state, key, details=details)
        assert isinstance(saved, AgreementState)
        return saved

    # -- each party's answer -----------------------------------------------------------------------

    async def accept(self, who: Caller, agreement_id: str) -> AgreementState:
        details = await self.registry.details_of(AgreementState, agreement_id)

        async def sign(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            ag = self._party_step(current, who)
            if ag.template:
                raise _conflict("A template ISA is joined, not accepted: use $join.")
            if ag.status is not AgreementStatus.PROPOSED:
                raise _conflict(f"The agreement is {ag.status.value}; only a proposed agreement can be accepted.")
            if who.org in ag.accepted_by:
                raise _conflict(f"{who.org} has already accepted this agreement.")
            signed = (*ag.accepted_by, who.org)
            complete = set(signed) == set(ag.parties)
            return ag.model_copy(
                update={
                    "accepted_by": signed,
                    "actor": actor_of(who),
                    "status": AgreementStatus.ACCEPTED if complete else AgreementStatus.PROPOSED,
                }
            ), RoutingKey.POLICY_AGREEMENT_ACCEPTED if complete else RoutingKey.POLICY_AGREEMENT_UPDATED

        details.setdefault("signed_at", {})[who.org] = _now()
        state = await self.registry.change(AgreementState, agreement_id, sign, details=details)
        if state.status is AgreementStatus.ACCEPTED:
            for replaced in state.supersedes:
                await self._retire(replaced, state, actor_of(who))
        return state

    async def reject(self, who: Caller, agreement_id: str, reason: str | None = None) -> AgreementState:
        async def refuse(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            ag = self._party_step(current, who)
            if ag.status is not AgreementStatus.PROPOSED or ag.template:
                raise _conflict(f"The agreement is {ag.status.value}; only a proposed agreement can be rejected.")
            return ag.model_copy(
                update={"status": AgreementStatus.REJECTED, "actor": actor_of(who)}
            ), RoutingKey.POLICY_AGREEMENT_REJECTED

        details = await self._decided(who, agreement_id, "reject", reason)
        return await self.registry.change(AgreementState, agreement_id, refuse, details=details)

    async def revoke(self, who: Caller, agreement_id: str, reason: str | None = None) -> AgreementState:
        """Either party ends an ISA; a template's signatory leaves it, and its owner ends it for all."""

        async def end(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            ag = self._party_step(current, who)
            if ag.status not in LIVE:
                raise _conflict(f"The agreement is already {ag.status.value}.")
            if ag.template and who.org != ag.proposed_by:
                return ag.model_copy(
                    update={
                        "parties": tuple(p for p in ag.parties if p != who.org),
                        "accepted_by": tuple(p for p in ag.accepted_by if p != who.org),
                        "actor": actor_of(who),
                    }
                ), RoutingKey.POLICY_AGREEMENT_UPDATED
            return ag.model_copy(
                update={"status": AgreementStatus.REVOKED, "actor": actor_of(who)}
            ), RoutingKey.POLICY_AGREEMENT_REVOKED

        current = await self.registry.require(AgreementState, agreement_id)
        action = "leave" if current.template and who.org != current.proposed_by else "revoke"
        details = await self._decided(who, agreement_id, action, reason)
        return await self.registry.change(AgreementState, agreement_id, end, details=details)

    async def _decided(self, who: Caller, agreement_id: str, action: str, reason: str | None) -> dict[str, Any]:
        """The agreement's details with this decision added: who ended or refused it, when and why, kept
        with the agreement so that the other parties (and a later audit) can read the reason."""
        details = await self.registry.details_of(AgreementState, agreement_id)
        if reason is not None and len(reason) > MAX_REASON:
            raise FhirError.of(
                Code.INVALID_RESOURCE,
                f"The reason is longer than {MAX_REASON} characters.",
                "Parameters.parameter.where(name='reason')",
            )
        details.setdefault("decisions", []).append(
            {
                "action": action,
                "organisation": who.org,
                "person": who.name or who.subject,
                "reason": reason.strip() if reason and reason.strip() else None,
                "at": _now(),
            }
        )
        return details

    async def join(self, who: Caller, agreement_id: str) -> tuple[AgreementState, bool]:
        """Ask to sign a template ISA; returns the state and whether the organisation has joined.

        Joining shares the owner's documents, so the owner approves each organisation (``decide_join``)
        unless the template said in advance that it admits any organisation of the joiner's type. Either
        way the change is a policy.agreement.updated event, and a request waits in the owner's $pending."""
        org = await self.registry.one(OrganisationState, who.org)
        if org is None or not org.active:
            raise _rule(f"{who.org} is not a registered active organisation.")
        details = await self.registry.details_of(AgreementState, agreement_id)
        requests = details.setdefault("join_requests", [])
        admitted = details.get("admits") == org.kind
        asked = any(r["organisation"] == who.org for r in requests)

        async def sign(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            if current is None:
                raise FhirError.of(Code.NOT_FOUND)
            if not current.template or current.status is not AgreementStatus.ACCEPTED:
                raise _conflict("Only a template ISA in force can be joined.")
            if who.org in current.parties:
                raise _conflict(f"{who.org} has already joined this agreement.")
            if asked:
                raise _conflict(f"{who.org} has already asked to join this agreement.")
            if not admitted:
                return current.model_copy(update={"actor": actor_of(who)}), RoutingKey.POLICY_AGREEMENT_UPDATED
            return current.model_copy(
                update={
                    "parties": (*current.parties, who.org),
                    "accepted_by": (*current.accepted_by, who.org),
                    "actor": actor_of(who),
                }
            ), RoutingKey.POLICY_AGREEMENT_UPDATED

        if admitted:
            details.setdefault("signed_at", {})[who.org] = _now()
        else:
            requests.append({"organisation": who.org, "requested_at": _now(), "requested_by": who.subject})
        state = await self.registry.change(AgreementState, agreement_id, sign, details=details)
        return state, admitted

    async def decide_join(self, who: Caller, agreement_id: str, org: str, *, approve: bool) -> AgreementState:
        """The template's owner approves or refuses an organisation's request to join."""
        details = await self.registry.details_of(AgreementState, agreement_id)
        requests = details.get("join_requests", [])

        async def decide(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            if current is None or not current.template:
                raise FhirError.of(Code.NOT_FOUND)
            if who.org != current.proposed_by:
                raise FhirError.of(
                    Code.FORBIDDEN, f"Only {current.proposed_by}, which owns this template, approves who joins it."
                )
            if not any(r["organisation"] == org for r in requests):
                raise _conflict(f"{org} has not asked to join this agreement.")
            if not approve:
                return current.model_copy(update={"actor": actor_of(who)}), RoutingKey.POLICY_AGREEMENT_UPDATED
            if current.status is not AgreementStatus.ACCEPTED:
                raise _conflict("Only a template ISA in force can be joined.")
            return current.model_copy(
                update={
                    "parties": (*current.parties, org),
                    "accepted_by": (*current.accepted_by, org),
                    "actor": actor_of(who),
                }
            ), RoutingKey.POLICY_AGREEMENT_UPDATED

        details["join_requests"] = [r for r in requests if r["organisation"] != org]
        if approve:
            details.setdefault("signed_at", {})[org] = _now()
        return await self.registry.change(AgreementState, agreement_id, decide, details=details)

    @staticmethod
    def _party_step(current: AgreementState | None, who: Caller) -> AgreementState:
        if current is None:
            raise FhirError.of(Code.NOT_FOUND)
        if who.org not in current.parties:
            raise FhirError.of(Code.FORBIDDEN, f"{who.org} is not a party to this agreement.")
        return current

    # -- expiry ------------------------------------------------------------------------------------

    async def expire_due(self, now: datetime | None = None) -> list[str]:
        """Mark every live ISA past its end date expired (the periodic check); returns their ids.

        Access decisions already honour the end date; this makes the lifecycle (and audit) say so.
        """
        now = now or datetime.now(UTC)
        expired = []
        for status in LIVE:
            for ag in await self.registry.every(AgreementState, {"status": status.value}):
                if ag.valid_to is None or ag.valid_to > now:
                    continue

                async def expire(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
                    assert current is not None
                    if current.status not in LIVE:
                        raise _conflict("already ended")
                    return current.model_copy(
                        update={"status": AgreementStatus.EXPIRED, "actor": None}
                    ), RoutingKey.POLICY_AGREEMENT_EXPIRED

                try:
                    await self.registry.change(AgreementState, ag.agreement_id, expire)
                except FhirError:
                    continue  # ended concurrently by a party
                expired.append(ag.agreement_id)
        return expired

    # -- the signed agreement (PDF) ----------------------------------------------------------------

    @staticmethod
    def document_key(agreement_id: str) -> str:
        return f"agreements/{agreement_id}/signed-agreement.pdf"

    async def read_document(
        self, who: Caller, agreement_id: str, *, request_id: str | None, address: str | None = None
    ) -> tuple[AgreementState, bytes]:
        """The signed PDF, for the agreement's parties and the exchange operator; every download and
        every refusal is on the audit record."""
        state = await self.registry.require(AgreementState, agreement_id)
        resource = f"Contract/{agreement_id}/$document"
        if who.org not in state.parties and who.role != OPERATOR:
            await self._emit(
                Event.new(
                    RoutingKey.ACCESS_DENIED,
                    AccessDenied(
                        actor=actor_of(who, address),
                        resource=resource,
                        action="read",
                        reason_code="not-a-party",
                        reason=f"{who.org} is not a party to {agreement_id}",
                    ),
                    source=self.registry.ctx.source,
                    subject=f"Contract/{agreement_id}",
                    correlation_id=request_id,
                )
            )
            raise FhirError.of(
                Code.FORBIDDEN,
                "Only the parties to this agreement and the exchange operator may download its signed document.",
            )
        if not state.document_sha256:
            raise FhirError.of(Code.NOT_FOUND, "No signed agreement has been attached.")
        try:
            data = await self.objects.read_all(self.document_key(agreement_id))
        except ObjectNotFound:
            raise FhirError.of(Code.NOT_FOUND, "No signed agreement has been attached.") from None
        except ObjectStoreUnavailable:
            raise FhirError.of(
                Code.UNAVAILABLE, "Document storage is unavailable.", headers={"Retry-After": "5"}
            ) from None
        await self._emit(
            Event.new(
                RoutingKey.RECORD_READ,
                RecordRead(
                    actor=actor_of(who, address),
                    resource=resource,
                    action="download",
                    rule="party" if who.org in state.parties else OPERATOR,
                ),
                source=self.registry.ctx.source,
                subject=f"Contract/{agreement_id}",
                correlation_id=request_id,
            )
        )
        return state, data

    async def _emit(self, event: Event) -> None:
        ctx = self.registry.ctx
        async with ctx.store.transaction() as session:
            await ctx.publish(event, session=session)
        ctx.outbox.notify()

    async def attach_document(self, who: Caller, agreement_id: str, content: bytes) -> AgreementState:
        current = await self.registry.require(AgreementState, agreement_id)
        self._party_step(current, who)
        if current.status not in LIVE:
            raise _conflict(f"The agreement is {current.status.value}; its document can no longer change.")
        if not content.startswith(b"%PDF-"):
            raise FhirError.of(Code.UNSUPPORTED_MEDIA_TYPE, "The signed agreement must be a PDF.")
        if len(content) > MAX_DOCUMENT_BYTES:
            raise FhirError.of(Code.TOO_LARGE, "The signed agreement exceeds 20 MiB.")
        try:
            info = await self.objects.put(
                self.document_key(agreement_id), _chunks(content), content_type="application/pdf"
            )
        except ObjectStoreUnavailable:
            raise FhirError.of(
                Code.UNAVAILABLE, "Document storage is unavailable.", headers={"Retry-After": "5"}
            ) from None
        details = await self.registry.details_of(AgreementState, agreement_id)
        details["document_size"] = info.size
        # A countersigned copy replaces the proposer's: the Contract says who attached the one it holds.
        details["document_attached"] = {"organisation": who.org, "at": _now()}

        async def attach(state: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            assert state is not None
            return state.model_copy(
                update={"document_sha256": hashlib.sha256(content).hexdigest(), "actor": actor_of(who)}
            ), RoutingKey.POLICY_AGREEMENT_UPDATED

        return await self.registry.change(AgreementState, agreement_id, attach, details=details)

    # -- views -------------------------------------------------------------------------------------

    async def pending_on(self, org: str) -> list[AgreementState]:
        """Proposals waiting for ``org``'s signature, and its templates with requests to join."""
        proposed = await self.registry.every(AgreementState, {"status": AgreementStatus.PROPOSED.value, "parties": org})
        owned = await self.registry.every(
            AgreementState, {"status": AgreementStatus.ACCEPTED.value, "proposed_by": org}
        )
        asked = [
            ag
            for ag in owned
            if ag.template and (await self.registry.details_of(AgreementState, ag.agreement_id)).get("join_requests")
        ]
        return [ag for ag in proposed if org not in ag.accepted_by] + asked

    async def for_organisation(self, org: str) -> list[AgreementState]:
        return await self.registry.every(AgreementState, {"parties": org})

    async def templates(self) -> list[AgreementState]:
        found = await self.registry.every(AgreementState, {"status": AgreementStatus.ACCEPTED.value})
        return [ag for ag in found if ag.template]

    async def duplicates_for(
        self, who: Caller, party: str | None, *, request_id: str | None, address: str | None = None
    ) -> list[Overlap]:
        """An organisation's duplicates, for that organisation itself; anyone's (or all) for the operator."""
        if who.role == OPERATOR:
            return await self.duplicates(party)
        party = party or who.org
        if party != who.org:
            await self._emit(
                Event.new(
                    RoutingKey.ACCESS_DENIED,
                    AccessDenied(
                        actor=actor_of(who, address),
                        resource=f"Organization/{party}",
                        action="search",
                        reason_code="not-the-party",
                        reason=f"{who.org} asked for {party}'s duplicate agreements",
                    ),
                    source=self.registry.ctx.source,
                    subject=f"Organization/{party}",
                    correlation_id=request_id,
                )
            )
            raise FhirError.of(
                Code.FORBIDDEN,
                f"Only {party} itself and the exchange operator may list {party}'s duplicate agreements.",
            )
        return await self.duplicates(party)

    async def duplicates(self, org: str | None = None) -> list[Overlap]:
        """Pairs of live ISAs covering the same parties for the same purposes (and overlapping dates)."""
        live = [ag for status in LIVE for ag in await self.registry.every(AgreementState, {"status": status.value})]
        if org:
            live = [ag for ag in live if org in ag.parties]
        found = []
        for a, b in combinations(sorted(live, key=lambda ag: ag.agreement_id), 2):
            parties = tuple(p for p in a.parties if p in b.parties)
            purposes = _shared_purposes(a, b)
            if len(parties) >= 2 and purposes and _categories_overlap(a, b) and _dates_overlap(a, b):
                found.append(Overlap(a, b, parties, purposes))
        return found

    # -- rationalisation ---------------------------------------------------------------------------

    async def retire(self, who: Caller, agreement_id: str, kept_id: str) -> AgreementState:
        """Retire a duplicate ISA in favour of one that covers everything it did."""
        if agreement_id == kept_id:
            raise _rule("An agreement cannot replace itself.")
        retired = await self.registry.require(AgreementState, agreement_id)
        kept = await self.registry.require(AgreementState, kept_id)
        self._party_step(retired, who)
        if kept.status is not AgreementStatus.ACCEPTED:
            raise _conflict(f"{kept_id} is {kept.status.value}; only an accepted ISA can replace another.")
        if retired.status not in LIVE:
            raise _conflict(f"{agreement_id} is already {retired.status.value}.")
        gaps = _gaps(retired, kept)
        if gaps:
            raise _rule(f"{kept_id} does not cover {', '.join(gaps)} of {agreement_id}; propose a merged ISA instead.")
        return await self._retire(agreement_id, kept, actor_of(who))

    async def merge(self, who: Caller, ids: tuple[str, ...], title: str) -> AgreementState:
        """Propose one ISA covering all of ``ids``; once every party accepts it, they are retired."""
        if len(set(ids)) < 2:
            raise _rule("Name at least two agreements to merge.")
        found = [await self.registry.require(AgreementState, i) for i in dict.fromkeys(ids)]
        if any(ag.status not in LIVE for ag in found):
            raise _conflict("Only live (proposed or accepted) agreements can be merged.")
        if any(ag.template for ag in found):
            raise _rule("A template ISA is rationalised by leaving it, not by merging.")
        if any(who.org not in ag.parties for ag in found):
            raise FhirError.of(Code.FORBIDDEN, f"{who.org} is not a party to every agreement named.")
        starts = [ag.valid_from for ag in found]
        ends = [ag.valid_to for ag in found]
        draft = ContractInput(
            title=title,
            parties=tuple(dict.fromkeys(p for ag in found for p in ag.parties)),
            purposes=tuple(dict.fromkeys(p for ag in found for p in ag.purposes)),
            categories=()
            if any(not ag.categories for ag in found)
            else tuple(dict.fromkeys(c for ag in found for c in ag.categories)),
            valid_from=None if None in starts else min(s for s in starts if s),
            valid_to=None if None in ends else max(e for e in ends if e),
            template=False,
        )
        return await self.propose(who, draft, supersedes=tuple(ag.agreement_id for ag in found))

    async def _retire(self, agreement_id: str, kept: AgreementState, actor: Actor) -> AgreementState:
        async def replace(current: AgreementState | None) -> tuple[AgreementState, RoutingKey]:
            assert current is not None
            if current.status not in LIVE:
                return current, RoutingKey.POLICY_AGREEMENT_UPDATED
            return current.model_copy(
                update={"status": AgreementStatus.REVOKED, "replaced_by": kept.agreement_id, "actor": actor}
            ), RoutingKey.POLICY_AGREEMENT_REVOKED

        return await self.registry.change(AgreementState, agreement_id, replace)


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _chunks(content: bytes) -> AsyncIterable[bytes]:
    yield content


def _shared_purposes(a: AgreementState, b: AgreementState) -> tuple[str, ...]:
    if DIRECT_CARE in a.purposes:
        return b.purposes
    if DIRECT_CARE in b.purposes:
        return a.purposes
    return tuple(p for p in a.purposes if p in b.purposes)


def _categories_overlap(a: AgreementState, b: AgreementState) -> bool:
    return not a.categories or not b.categories or bool(set(a.categories) & set(b.categories))


def _dates_overlap(a: AgreementState, b: AgreementState) -> bool:
    lo = max((d for d in (a.valid_from, b.valid_from) if d), default=None)
    hi = min((d for d in (a.valid_to, b.valid_to) if d), default=None)
    return lo is None or hi is None or lo < hi


def _gaps(retired: AgreementState, kept: AgreementState) -> list[str]:
    """What ``retired`` permits that ``kept`` does not."""
    gaps: list[str] = []
    if set(retired.parties) - set(kept.parties):
        gaps.append("parties " + ", ".join(sorted(set(retired.parties) - set(kept.parties))))
    if DIRECT_CARE not in kept.purposes and set(retired.purposes) - set(kept.purposes):
        gaps.append("purposes " + ", ".join(sorted(set(retired.purposes) - set(kept.purposes))))
    if kept.categories and (not retired.categories or set(retired.categories) - set(kept.categories)):
        gaps.append("document categories")
    if kept.valid_to and (retired.valid_to is None or retired.valid_to > kept.valid_to):
        gaps.append("its later end date")
    return gaps


def overlap_json(o: Overlap) -> dict[str, Any]:
    return {
        "agreements": [o.first.agreement_id, o.second.agreement_id],
        "titles": [o.first.title, o.second.title],
        "parties": list(o.parties),
        "purposes": list(o.purposes),
    }
