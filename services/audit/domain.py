"""Audit's use cases: record every event, search the trail, verify the chain, export a date range, and
tell a patient who holds and who has seen their records.

Who may do what:
- search: DCC administrators (every record) and an organisation's auditors (records involving it);
- verify: DCC administrators, auditors and systems (the result names records, not their contents);
- export: DCC administrators;
- the access report: the patient (NHS number from the token) and carers the patient has authorised.
Searches, exports and access reports are themselves recorded in the chain (the audit service writes
those records straight into it).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.audit.chain import AuditChain, Verification
from services.audit.records import AUDIT_SOURCE, KINDS, Who, audited, build, consent_decision, records_for
from services.audit.signing import CheckpointSigner
from shared.auth import Caller
from shared.correlation import denial_recorded
from shared.events import Event
from shared.fhir.errors import Code, FhirError
from shared.context import ServiceContext
from shared.policy import PolicyView
from shared.store import Index, Session

log = logging.getLogger(__name__)

SEARCHERS = ("dcc-admin", "auditor")
VERIFIERS = ("dcc-admin", "auditor", "system")
# Events that tell which organisations hold a patient's documents, and who accessed them.
HOLDING = "document.stored"
NO_LONGER_HELD = ("document.superseded", "document.withdrawn")
ACCESSES = ("document.retrieved", "access.denied")


@dataclass
class Holder:
    ods_code: str
    name: str | None
    documents: list[str] = field(default_factory=list)


@dataclass
class AccessReport:
    nhs_number: str
    generated: datetime
    holders: list[Holder]
    accesses: list[dict[str, Any]]  # AuditEvents, oldest first
    names: dict[str, str]


class Audit:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = ctx.runtime.settings
        self.chain = AuditChain(
            ctx.store,
            signer=lambda: CheckpointSigner.for_settings(settings),
            checkpoint_every=settings.audit_checkpoint_interval,
            extra_indexes=[Index(("date",)), Index(("event_type",)), Index(("agent_orgs",))],
        )
        self.policy = PolicyView(ctx.store)

    async def record(self, event: Event) -> None:
        """Append the event's record(s); a policy event also updates the local policy view, in the same
        transaction, so a carer's grant is known here exactly when its record is."""
        apply = self.policy.handles(event)
        if not audited(event):
            if apply:
                await self.policy.apply(event)
            return
        records = records_for(event)
        for i, (record_id, resource, index) in enumerate(records):
            last = i == len(records) - 1

            async def also(session: Session, _last: bool = last) -> None:
                if apply and _last:
                    await self.policy.apply(event, session=session)

            await self.chain.append(record_id, resource, index, also=also)

    async def _own(self, event_type: str, who: Caller, *, address: str | None, request_id: str | None,
                   query: str | None = None, patient: str | None = None, entities: list[str] | None = None) -> None:
        resource, index = build(
            event_type=event_type, source=AUDIT_SOURCE, moment=datetime.now(UTC), who=Who.of(who, address),
            entities=entities or [], orgs=[who.org], patient=patient, request_id=request_id,
            recorded=datetime.now(UTC), kind=KINDS[event_type], query=query,
        )
        await self.chain.append(f"audit:{uuid.uuid4()}", resource, index)

    # -- search -------------------------------------------------------------------------------------
    @staticmethod
    def scope_for(who: Caller) -> dict[str, Any]:
        """DCC administrators see every record; an organisation's auditors see records involving it."""
        if who.role == "dcc-admin":
            return {}
        if who.role == "auditor":
            return {"orgs": who.org}
        if who.role in ("patient", "carer"):
            raise FhirError.of(Code.FORBIDDEN, "Patients see who accessed their records in their access report.")
        raise FhirError.of(Code.FORBIDDEN, "Only DCC administrators and an organisation's auditors may search the audit log.")

    async def search(self, who: Caller, where: dict[str, Any], *, count: int, offset: int, query: str,
                     address: str | None = None, request_id: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        scope = self.scope_for(who)
        await self._own("audit.searched", who, address=address, request_id=request_id, query=query,
                        patient=where.get("patient"))
        docs = await self.chain.search({**where, **scope}, limit=count + 1, skip=offset)
        return [d["resource"] for d in docs[:count]], len(docs) > count

    # -- verify -------------------------------------------------------------------------------------
    async def verify(self, who: Caller, *, since: int | str | None = None) -> Verification:
        """The whole chain, or from a checkpoint (its record number, or ``"latest"``) on."""
        if who.role not in VERIFIERS:
            raise FhirError.of(Code.FORBIDDEN, "Only DCC administrators, auditors and systems may verify the audit chain.")
        if since == "latest":
            newest = await self.chain.checkpoints(limit=1)
            since = newest[0]["seq"] if newest else None
        return await self.chain.verify(since=since if isinstance(since, int) else None)

    # -- export -------------------------------------------------------------------------------------
    async def export(self, who: Caller, start: str, end: str, *, address: str | None = None,
                     request_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The stored records (chain fields included, so an archive can be re-verified) with
        ``start <= recorded < end``, in chain order."""
        if who.role != "dcc-admin":
            raise FhirError.of(Code.FORBIDDEN, "Only DCC administrators may export the audit log.")
        await self._own("audit.exported", who, address=address, request_id=request_id,
                        query=f"start={start}&end={end}")
        return self._export(start, end)

    async def _export(self, start: str, end: str) -> AsyncIterator[dict[str, Any]]:
        async for doc in self.chain.scan({"date": {"$gte": start, "$lt": end}}):
            yield {k: v for k, v in doc.items() if k != "_id"}

    # -- the patient's access report ----------------------------------------------------------------
    async def access_report(self, who: Caller, nhs_number: str | None, *, address: str | None = None,
                            request_id: str | None = None) -> AccessReport:
        if who.role == "patient":
            if not who.patient:
                raise FhirError.of(Code.FORBIDDEN, "The token does not name a patient.")
            if nhs_number not in (None, who.patient):
                raise FhirError.of(Code.FORBIDDEN, "A patient may only see their own access report.")
            nhs_number = who.patient
        elif who.role == "carer":
            if nhs_number is None:
                raise FhirError.of(Code.INVALID_PARAMETER, "Name the patient: ?patient=<NHS number>.", "patient")
            decision = await self.policy.acts_for_patient(who, nhs_number)
            record = consent_decision(
                event_type="audit.access-report", source=AUDIT_SOURCE, who=Who.of(who, address), patient=nhs_number,
                basis=decision.reason, allowed=decision.allowed, request_id=request_id, recorded=datetime.now(UTC),
                entities=[], orgs=[who.org],
            )
            await self.chain.append(f"audit:{uuid.uuid4()}", *record)
            if not decision.allowed:
                denial_recorded()  # the consent decision above is this refusal's record
                raise FhirError.of(Code.ACCESS_DENIED, "Access denied: no active carer grant from this patient.")
        else:
            raise FhirError.of(Code.FORBIDDEN, "The access report is for the patient and the carers they authorise.")
        assert nhs_number is not None
        await self._own("audit.access-report", who, address=address, request_id=request_id,
                        query=f"patient={nhs_number}", patient=nhs_number)
        return await self._report(nhs_number)

    async def _report(self, nhs_number: str) -> AccessReport:
        holders: dict[str, Holder] = {}
        accesses: list[dict[str, Any]] = []
        async for doc in self.chain.scan({"patient": nhs_number}):
            kind = doc.get("event_type")
            if kind == HOLDING:
                custodian, document = (doc.get("orgs") or [None])[0], _document_of(doc)
                if custodian and document:
                    holder = holders.setdefault(custodian, Holder(custodian, None))
                    if document not in holder.documents:
                        holder.documents.append(document)
            elif kind in NO_LONGER_HELD:
                gone = _document_of(doc)
                for holder in holders.values():
                    if gone in holder.documents:
                        holder.documents.remove(gone)
            elif kind in ACCESSES and not doc["event_id"].endswith("#authz-consent"):
                accesses.append(_for_patient(doc["resource"]))
        names: dict[str, str] = {}
        orgs = set(holders) | {a["org"] for a in (summary(r) for r in accesses) if a["org"]}
        for ods in orgs:
            org = await self.policy.organisation(ods)
            if org is not None:
                names[ods] = org.name
        for holder in holders.values():
            holder.name = names.get(holder.ods_code)
        held = [h for h in holders.values() if h.documents]
        return AccessReport(nhs_number, datetime.now(UTC), sorted(held, key=lambda h: h.ods_code),
                            accesses, names)


def _document_of(doc: dict[str, Any]) -> str | None:
    """The document a document.* record is about (its first DocumentReference entity)."""
    return next((e.removeprefix("DocumentReference/") for e in doc.get("entities", [])
                 if e.startswith("DocumentReference/")), None)


def _for_patient(resource: dict[str, Any]) -> dict[str, Any]:
    """The record as the patient sees it: staff network addresses are not theirs to see."""
    agents = [{k: v for k, v in a.items() if k != "network"} for a in resource.get("agent", [])]
    return {**resource, "agent": agents}


def summary(resource: dict[str, Any]) -> dict[str, Any]:
    """Who, from which organisation, as what, when, which document, and whether it was allowed."""
    org = subject = role = None
    for agent in resource.get("agent", []):
        codes = {c.get("code") for c in agent.get("type", {}).get("coding", [])}
        if "PROV" in codes:
            org = agent["who"]["identifier"]["value"]
        if agent.get("requestor") and agent.get("role"):
            subject = agent["who"].get("display")
            role = agent["role"][0]["coding"][0]["code"]
    document = next((e["what"]["reference"].split("/", 1)[1] for e in resource.get("entity", [])
                     if e.get("what", {}).get("reference", "").startswith("DocumentReference/")), None)
    return {"org": org, "subject": subject, "role": role, "when": resource.get("period", {}).get("start"),
            "document": document, "allowed": resource.get("outcome") == "0"}

