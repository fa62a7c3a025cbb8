"""Who may see an MDT's alerts and pathways, and the record every read and refusal leaves.

An MDT claim in a token is the caller's say-so: it counts only for a team the policy view knows as one
of the caller's own organisation. Refusals publish ``access.denied`` and reads ``record.read`` through
the outbox, so the audit service (and the patient's access report) sees both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn

from services.notification.outgoing import Outgoing
from shared.auth import Caller
from shared.events import Actor, DocumentFacts, OperationInvoked, RoutingKey
from shared.fhir.errors import Code, FhirError
from shared.fhir.identifiers import LOINC
from shared.policy import CANCER_CARE, Decision, PolicyView

STAFF_ROLES = ("mdt-coordinator", "clinician")
# A trust's bed managers' alerts (repatriations into it) are kept under this key instead of an MDT's.
BEDS, BED_MANAGER = "beds:", "bed-manager"
# A transfer hands the whole pathway to another provider: for the policy it is an inter-provider referral.
TRANSFER_TYPE = (LOINC, "57133-1")
NO_CONTENT = "0" * 64


def _not_a_member() -> FhirError:
    return FhirError.of(Code.FORBIDDEN, "Only members of this MDT may see its alerts.")


def _reference(request_id: str | None) -> str:
    return f" (reference {request_id})" if request_id else ""


def actor_of(who: Caller) -> Actor:
    return Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, name=who.name)


class Access:
    def __init__(self, outgoing: Outgoing, policy: PolicyView) -> None:
        self._outgoing = outgoing
        self.policy = policy

    async def team(
        self, who: Caller, mdt: str, *, resource: str, action: str = "read", request_id: str | None = None
    ) -> None:
        """Refuse (403, audited) unless ``who`` is staff of the MDT ``mdt`` of their own organisation, or,
        for a trust's bed managers' alerts (``beds:<ODS>``), one of that trust's bed managers."""
        if mdt.startswith(BEDS):
            if who.role != BED_MANAGER or who.org != mdt.removeprefix(BEDS):
                await self.deny(
                    who,
                    resource,
                    action,
                    Decision.deny("not-bed-manager", f"not a bed manager of {mdt.removeprefix(BEDS)}"),
                    request_id=request_id,
                    error=FhirError.of(Code.FORBIDDEN, "Only the trust's bed managers may see its transfer alerts."),
                )
            return
        if who.role not in STAFF_ROLES or who.mdt != mdt:
            await self.deny(
                who,
                resource,
                action,
                Decision.deny("not-mdt-member", f"not a member of CareTeam/{mdt}"),
                request_id=request_id,
                error=_not_a_member(),
            )
        if not await self.policy.careteam_of(mdt, who.org):
            await self.deny(
                who,
                resource,
                action,
                Decision.deny("mdt-not-of-organisation", f"CareTeam/{mdt} is not a team of {who.org}"),
                request_id=request_id,
                error=_not_a_member(),
            )

    async def member(self, who: Caller, *, resource: str, action: str, request_id: str | None = None) -> None:
        """Refuse (403, audited) a caller who is staff of no MDT of their own organisation, before a change's
        body is read: whoever may not change pathways learns nothing from its validation either."""
        await self.team(who, who.mdt or "", resource=resource, action=action, request_id=request_id)

    async def transfer(
        self, who: Caller, *, resource: str, patient: str, to_org: str, to_mdt: str, request_id: str | None
    ) -> None:
        """A transfer discloses the patient's pathway to the receiving organisation: the one policy
        decision must allow that organisation to see cancer-care records of this patient from ours."""
        facts = DocumentFacts(
            document_id=resource,
            patient_nhs_number=patient,
            custodian=who.org,
            type_system=TRANSFER_TYPE[0],
            type_code=TRANSFER_TYPE[1],
            related=(f"CareTeam/{to_mdt}",),
            content_type="application/fhir+json",
            size=0,
            sha256=NO_CONTENT,
        )
        receiver = Caller(
            org=to_org, role="mdt-coordinator", subject=f"CareTeam/{to_mdt}", scopes=frozenset(), mdt=to_mdt
        )
        decision = await self.policy.decide(receiver, facts, purpose=CANCER_CARE)
        if not decision.allowed:
            # The caller learns that the move is refused, not which rule (it may be the patient's preference).
            await self.deny(
                who,
                resource,
                "transfer",
                decision,
                patient=patient,
                request_id=request_id,
                error=FhirError.of(
                    Code.ACCESS_DENIED,
                    f"Access denied: CareTeam/{to_mdt} may not receive "
                    f"this pathway under the sharing policy{_reference(request_id)}.",
                ),
            )

    async def deny(
        self,
        who: Caller,
        resource: str,
        action: str,
        decision: Decision,
        *,
        error: FhirError,
        patient: str | None = None,
        request_id: str | None = None,
    ) -> NoReturn:
        await self._outgoing.publish_now(
            self._outgoing.event(
                RoutingKey.ACCESS_DENIED,
                self.policy.refusal_record(actor_of(who), resource, action, decision, patient=patient),
                subject=resource,
                correlation_id=request_id,
            )
        )
        raise error

    async def read(
        self,
        who: Caller,
        resource: str,
        action: str,
        patients: Iterable[str | None],
        *,
        query: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """One ``record.read`` per patient the answer showed (BALP: a query touching several patients
        leaves one record per patient), or one without a patient when it showed none."""
        counts: dict[str | None, int] = {}
        for patient in patients:
            counts[patient] = counts.get(patient, 0) + 1
        rows: list[tuple[str | None, int]] = [(p, n) for p, n in counts.items() if p]
        rows = rows or [(None, sum(counts.values()))]
        events = [
            self._outgoing.event(
                RoutingKey.RECORD_READ,
                self.policy.read_record(
                    actor_of(who), resource, action, patient=patient, rule="mdt-member", query=query, results=n
                ),
                subject=resource,
                correlation_id=request_id,
            )
            for patient, n in rows
        ]
        await self._outgoing.publish_now(*events)

    async def invoked(
        self,
        who: Caller,
        operation: str,
        target: str,
        outcome: str,
        detail: str | None = None,
        *,
        request_id: str | None = None,
    ) -> None:
        await self._outgoing.publish_now(
            self._outgoing.event(
                RoutingKey.OPERATION_INVOKED,
                OperationInvoked(
                    actor=actor_of(who), operation=operation, target=target, outcome=outcome, detail=detail
                ),
                subject=target,
                correlation_id=request_id,
            )
        )
