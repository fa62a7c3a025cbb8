"""End-of-life care plans: create, change (a new version each time), read the current version, history.

Concurrency is optimistic: a change names the version it was made from (``If-Match``) and the store
updates the plan only where that is still the current version, in the same transaction as the new
version row and its ``careplan.*`` event; a lost race is a 412.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from services.care.access import Access, actor_of, facts
from services.care.plans import END_OF_LIFE_CATEGORY, PlanInput, check_plan, version_view
from shared.auth import Caller
from shared.clock import Clock, fhir_instant
from shared.context import ServiceContext
from shared.events import CarePlanChanged, Event, RoutingKey
from shared.fhir.errors import Code, FhirError, Issue
from shared.policy import Decision
from shared.store import DESCENDING, Document, Index, Session

log = logging.getLogger(__name__)
DRAFT, ACTIVE, REVOKED = "draft", "active", "revoked"
# A change moves a plan along these; ``revoked`` ends it.
MOVES = {DRAFT: {DRAFT, ACTIVE, REVOKED}, ACTIVE: {ACTIVE, REVOKED}, REVOKED: set()}


class PreconditionFailed(FhirError):
    pass


@dataclass(frozen=True)
class Versioned:
    resource: dict[str, Any]
    version: int

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


def parse_etag(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise FhirError.of(Code.MALFORMED_REQUEST, 'If-Match must be an ETag such as W/"3".')
    return int(text)


class CarePlans:
    def __init__(self, ctx: ServiceContext, access: Access, clock: Clock) -> None:
        self.ctx = ctx
        self.access = access
        self.clock = clock
        self._plans = ctx.store.collection("careplans", [Index(("patient",))])
        self._versions = ctx.store.collection("careplan_versions", [Index(("plan_id", "version"))])

    # -- writing ----------------------------------------------------------------------------------

    async def create(self, data: dict[str, Any], who: Caller, *, request_id: str) -> Versioned:
        plan = check_plan(data)
        self._may_write(who, plan, started_by_patient=who.role == "patient")
        plan_id = str(uuid.uuid4())
        row = {
            "_id": plan_id,
            "patient": plan.patient,
            "category": END_OF_LIFE_CATEGORY,
            "record_type": plan.record_type,
            "status": plan.status,
            "version": 0,
            "custodian": who.org,
            "started_by_patient": who.role == "patient",
        }
        async with self.ctx.store.transaction() as session:
            await self._plans.insert(row, session=session)
            out = await self._save(row, plan, who, 0, request_id, RoutingKey.CAREPLAN_CREATED, session)
        self.ctx.outbox.notify()
        log.info("care.plan_created status=%s", plan.status, extra={"code": "CAR001"})
        return out

    async def update(
        self, plan_id: str, data: dict[str, Any], who: Caller, *, if_match: int | None, request_id: str
    ) -> Versioned:
        if if_match is None:
            raise FhirError(
                [
                    Issue(
                        Code.CONFLICT,
                        'A change must name the version it was made from: send If-Match: W/"<versionId>".',
                    )
                ],
                status=428,
            )
        row = await self._plans.get(plan_id)
        if row is None or not await self._may_see_draft(who, row):
            raise FhirError.of(Code.NOT_FOUND)
        if data.get("id") not in (None, plan_id):
            raise FhirError.of(Code.INVALID_RESOURCE, "The resource id must match the URL.", "CarePlan.id")
        plan = check_plan(data)
        if plan.patient != row["patient"]:
            raise FhirError.of(Code.BUSINESS_RULE, "A plan's patient cannot change.", "CarePlan.subject")
        if plan.status not in MOVES[row["status"]]:
            raise FhirError.of(Code.CONFLICT, f"A {row['status']} plan cannot become {plan.status}.", "CarePlan.status")
        self._may_write(
            who, plan, started_by_patient=row["started_by_patient"], custodian=row["custodian"], current=row["status"]
        )
        if row["version"] != if_match:
            raise _stale(row["version"])
        async with self.ctx.store.transaction() as session:
            out = await self._save(row, plan, who, if_match, request_id, RoutingKey.CAREPLAN_UPDATED, session)
        self.ctx.outbox.notify()
        return out

    def _may_write(
        self,
        who: Caller,
        plan: PlanInput,
        *,
        started_by_patient: bool,
        custodian: str | None = None,
        current: str | None = None,
    ) -> None:
        if who.role == "patient":
            if who.patient != plan.patient:
                raise FhirError.of(Code.FORBIDDEN, "A patient may only start their own plan.", "CarePlan.subject")
            if plan.status != DRAFT or (current is not None and not started_by_patient):
                raise FhirError.of(Code.FORBIDDEN, "A patient may start or edit a draft; a clinician completes it.")
            return
        if who.role not in ("clinician", "system"):
            raise FhirError.of(Code.FORBIDDEN, "Only clinical staff change care plans.")
        # A clinician completes a plan the patient started (and their organisation becomes its custodian);
        # otherwise only the custodian's staff change it.
        if custodian is not None and custodian != who.org and not (started_by_patient and current == DRAFT):
            raise FhirError.of(Code.FORBIDDEN, f"Only {custodian}, the plan's custodian, may change it.")
        if plan.status == ACTIVE and current != ACTIVE and who.role != "clinician":
            raise FhirError.of(Code.FORBIDDEN, "A plan is completed by a clinician.", "CarePlan.status")

    async def _save(
        self,
        row: Document,
        plan: PlanInput,
        who: Caller,
        expected: int,
        request_id: str,
        key: RoutingKey,
        session: Session,
    ) -> Versioned:
        version = expected + 1
        custodian = row["custodian"] if who.role == "patient" else who.org
        resource = version_view(
            row["_id"],
            version,
            plan.resource,
            updated=fhir_instant(self.clock.now()),
            custodian=custodian,
            changed_by=f"{who.subject} ({who.org})",
            reason=plan.reason,
        )
        won = await self._plans.update(
            {"_id": row["_id"], "version": expected},
            {
                "version": version,
                "status": plan.status,
                "record_type": plan.record_type,
                "custodian": custodian,
                "resource": resource,
                "updated": resource["meta"]["lastUpdated"],
            },
            session=session,
        )
        if not won:
            raise _stale(None)
        await self._versions.insert(
            {
                "_id": f"{row['_id']}/{version}",
                "plan_id": row["_id"],
                "version": version,
                "resource": resource,
                "method": "POST" if version == 1 else "PUT",
            },
            session=session,
        )
        await self.ctx.publish(
            Event.new(
                key,
                CarePlanChanged(
                    plan_id=row["_id"],
                    resource=f"CarePlan/{row['_id']}",
                    version=version,
                    status=plan.status,
                    record_type=plan.record_type,
                    patient_nhs_number=plan.patient,
                    custodian=custodian,
                    actor=actor_of(who),
                    reason=plan.reason,
                ),
                source=self.ctx.source,
                subject=f"CarePlan/{row['_id']}",
                correlation_id=request_id,
            ),
            session=session,
        )
        return Versioned(resource, version)

    # -- reading ----------------------------------------------------------------------------------

    async def read(self, plan_id: str, who: Caller, *, version: int | None = None, request_id: str) -> Versioned:
        row = await self._plans.get(plan_id)
        if row is None or not await self._may_see_draft(who, row):
            raise FhirError.of(Code.NOT_FOUND)
        decision = await self._decide(who, row)
        action = "read" if version is None else "vread"
        if not decision.allowed:
            raise await self.access.deny(
                who, f"CarePlan/{plan_id}", decision, action=action, patient=row["patient"], request_id=request_id
            )
        found: Versioned
        if version is None:
            found = Versioned(row["resource"], row["version"])
        else:
            stored = await self._versions.get(f"{plan_id}/{version}")
            if stored is None:
                raise FhirError.of(Code.NOT_FOUND, "No such version of this plan.")
            found = Versioned(stored["resource"], version)
        await self._audit([plan_id], row["patient"], who, action, decision.rule, request_id)
        return found

    async def history(self, plan_id: str, who: Caller, *, request_id: str) -> list[Document]:
        row = await self._plans.get(plan_id)
        if row is None or not await self._may_see_draft(who, row):
            raise FhirError.of(Code.NOT_FOUND)
        decision = await self._decide(who, row)
        if not decision.allowed:
            raise await self.access.deny(
                who, f"CarePlan/{plan_id}", decision, action="vread", patient=row["patient"], request_id=request_id
            )
        versions = await self._versions.find({"plan_id": plan_id}, sort=[("version", DESCENDING)], limit=1000)
        await self._audit([plan_id], row["patient"], who, "vread", decision.rule, request_id)
        return versions

    async def search(
        self,
        patient: str,
        who: Caller,
        *,
        record_types: set[str] | None,
        statuses: set[str] | None,
        query: str,
        request_id: str,
    ) -> list[dict[str, Any]]:
        """The patient's current plans the caller may see. Plans it may not see are left out, as documents
        are from a search: that a patient has an end-of-life plan is itself sensitive, so a caller without
        the right learns nothing of it; the refusal is on the record (access.denied) for the patient's report."""
        rows = await self._plans.find({"patient": patient}, sort=[("updated", DESCENDING)], limit=100)
        candidates = [
            r
            for r in rows
            if (record_types is None or r["record_type"] in record_types)
            and (statuses is None or r["status"] in statuses)
            and (r["status"] != DRAFT or await self._may_see_draft(who, r, searching=True))
        ]
        allowed: list[tuple[Document, Decision]] = []
        refused: Decision | None = None
        for row in candidates:
            decision = await self._decide(who, row)
            if decision.allowed:
                allowed.append((row, decision))
            else:
                refused = refused or decision
        if refused is not None and not allowed:
            await self.access.deny(who, "CarePlan", refused, action="search", patient=patient, request_id=request_id)
        async with self.ctx.store.transaction() as session:
            for row, decision in allowed:
                await self.access.read(
                    who,
                    f"CarePlan/{row['_id']}",
                    action="search",
                    patient=patient,
                    rule=decision.rule,
                    request_id=request_id,
                    session=session,
                    query=query,
                    results=len(allowed),
                )
            if not allowed:
                await self.access.read(
                    who,
                    "CarePlan",
                    action="search",
                    patient=patient,
                    rule=None,
                    request_id=request_id,
                    session=session,
                    query=query,
                    results=0,
                )
        self.ctx.outbox.notify()
        return [row["resource"] for row, _ in allowed]

    async def _decide(self, who: Caller, row: Document) -> Decision:
        if who.role not in ("patient", "carer") and who.org == row["custodian"]:
            return Decision.permit("custodian", f"{who.org} is the custodian")
        if row["status"] == DRAFT and who.role == "clinician" and row["started_by_patient"]:
            return Decision.permit("patient-draft", "a clinician completing a plan the patient started")
        return await self.access.decide(who, facts(row["_id"], row["patient"], row["custodian"], row["record_type"]))

    async def _may_see_draft(self, who: Caller, row: Document, *, searching: bool = False) -> bool:
        """A draft is seen by its author organisation and the patient; a clinician may open (by id, not
        find) a draft the patient started, to complete it."""
        if row["status"] != DRAFT:
            return True
        if who.role in ("patient", "carer"):
            return who.role == "patient" and who.patient == row["patient"]
        if who.org == row["custodian"]:
            return True
        return not searching and row["started_by_patient"] and who.role == "clinician"

    async def _audit(self, ids: list[str], patient: str, who: Caller, action: str, rule: str, request_id: str) -> None:
        async with self.ctx.store.transaction() as session:
            for plan_id in ids:
                await self.access.read(
                    who,
                    f"CarePlan/{plan_id}",
                    action=action,
                    patient=patient,
                    rule=rule,
                    request_id=request_id,
                    session=session,
                )
        self.ctx.outbox.notify()

    async def current_for(self, patient: str) -> list[Document]:
        """For the demo seed and tools: the patient's plans as stored."""
        return await self._plans.find({"patient": patient}, limit=100)


def _stale(current: int | None) -> FhirError:
    hint = f' (the current version is W/"{current}")' if current is not None else ""
    return PreconditionFailed(
        [
            Issue(
                Code.CONFLICT,
                f"The plan was changed by someone else since that version{hint}; read it again and reapply the change.",
            )
        ],
        status=412,
    )
