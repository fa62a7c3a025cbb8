"""Audit's use cases: record every event, search the trail, verify the chain, export a date range, and
tell a patient who holds and who has seen their records.

Who may do what:
- search and export: an organisation's DCC administrators and auditors, over the records that involve
  their own organisation (the record's ``orgs``); the exchange operator over every record;
- verify: DCC administrators, auditors, systems and the operator (the result names record numbers, not
  their contents);
- the access report: the patient (NHS number from the token) and carers the patient has authorised.
Searches, exports and access reports are themselves recorded in the chain (the audit service writes
those records straight into it), the operator's exchange-wide ones included.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.audit.chain import AuditChain
from services.audit.records import AUDIT_SOURCE, KINDS, Who, audited, build, consent_decision, facts, records_for
from services.audit.settings import AuditSettings
from services.audit.signing import CheckpointSigner
from services.audit.verifying import Verification
from shared.auth import Caller
from shared.context import ServiceContext
from shared.correlation import denial_recorded
from shared.events import Event
from shared.fhir.errors import Code, FhirError
from shared.policy import PolicyView
from shared.store import Index, Session

log = logging.getLogger(__name__)

# An organisation's own staff see the records that involve their organisation; the operator sees all.
ORGANISATION_READERS = ("dcc-admin", "auditor")
OPERATOR = "exchange-operator"
VERIFIERS = ("dcc-admin", "auditor", "system", OPERATOR)
# Events that tell which organisations hold a patient's documents, and who accessed them.
HOLDING = "document.stored"
NO_LONGER_HELD = ("document.superseded", "document.withdrawn")
# A search of the patient's documents is a look at their records too, whatever it found (issue 19).
ACCESSES = ("document.retrieved", "document.searched", "record.read", "access.denied")


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
    # The access-decision rule behind each access (by AuditEvent id), for saying why in plain words.
    rules: dict[str, str] = field(default_factory=dict)
    # What kind of document each one is (by document id), as its custodian named its type.
    kinds: dict[str, str] = field(default_factory=dict)


class Audit:
    def __init__(self, ctx: ServiceContext, settings: AuditSettings) -> None:
        self.ctx = ctx
        data_dir = ctx.runtime.settings.data_dir
        self.chain = AuditChain(
            ctx.store,
            signer=lambda: CheckpointSigner.for_settings(settings, data_dir),
            checkpoint_every=settings.checkpoint_interval,
            extra_indexes=[Index(("date",)), Index(("event_type",)), Index(("agent_orgs",))],
        )
        self.policy = PolicyView(ctx.store)
        # Document id -> custodian, so a read or a refusal is on the custodian's record too even when
        # its event names only the reader (record.read, access.denied). Agreements' parties are added
        # when reading (scope_for): an agreement can be proposed and downloaded before audit hears of it.
        self.custodians = ctx.store.collection("audit_custodians")

    async def record(self, event: Event) -> None:
        """Append the event's record(s); a policy event also updates the local policy view, in the same
        transaction, so a carer's grant is known here exactly when its record is."""
        apply = self.policy.handles(event)
        if not audited(event):
            if apply:
                await self.policy.apply(event)
            return
        records = records_for(event)
        await self._involve_custodians(event, records)
        for i, (record_id, resource, index) in enumerate(records):
            last = i == len(records) - 1

            async def also(session: Session, _last: bool = last) -> None:
                if apply and _last:
                    await self.policy.apply(event, session=session)

            await self.chain.append(record_id, resource, index, also=also)

    async def _involve_custodians(
        self, event: Event, records: list[tuple[str, dict[str, Any], dict[str, Any]]]
    ) -> None:
        # A document's custodian travels in its facts; a care plan's in the plan event itself.
        custodian = facts(event)["custodian"] or event.data.get("custodian")
        for _, _, index in records:
            documents = [_held_key(e) for e in index["entities"] if e.startswith(HELD_RECORDS)]
            for document in dict.fromkeys(documents):
                if custodian is not None:
                    await self.custodians.replace({"_id": document, "custodian": custodian}, upsert=True)
                elif (known := await self.custodians.get(document)) is not None:
                    index["orgs"] = sorted({*index["orgs"], known["custodian"]})
            # An alert for an MDT (a breach risk has no document behind it) involves the MDT's organisation.
            for team_id in [e.split("/", 1)[1] for e in index["entities"] if e.startswith("CareTeam/")]:
                if (team := await self.policy.careteam(team_id)) is not None:
                    index["orgs"] = sorted({*index["orgs"], team.organisation})

    async def _own(
        self,
        event_type: str,
        who: Caller,
        *,
        address: str | None,
        request_id: str | None,
        query: str | None = None,
        patient: str | None = None,
        entities: list[str] | None = None,
    ) -> None:
        resource, index = build(
            event_type=event_type,
            source=AUDIT_SOURCE,
            moment=datetime.now(UTC),
            who=Who.of(who, address),
            entities=entities or [],
            orgs=[who.org],
            patient=patient,
            request_id=request_id,
            recorded=datetime.now(UTC),
            kind=KINDS[event_type],
            query=query,
        )
        await self.chain.append(f"audit:{uuid.uuid4()}", resource, index)

    # -- search -------------------------------------------------------------------------------------
    async def scope_for(self, who: Caller) -> dict[str, Any]:
        """The records the caller may read: every record for the operator; for an organisation, those
        that involve it, and those about an agreement it is party to (a download of its signed PDF names
        only the reader). Decided when reading, so a record written before audit heard of the agreement
        is still found."""
        if who.role == OPERATOR:
            return {}
        if who.role in ORGANISATION_READERS:
            agreements = await self.policy.agreements_of(who.org)
            if not agreements:
                return {"orgs": who.org}
            return {"$or": [{"orgs": who.org}, *({"entities": f"Contract/{a.agreement_id}"} for a in agreements)]}
        if who.role in ("patient", "carer"):
            raise FhirError.of(Code.FORBIDDEN, "Patients see who accessed their records in their access report.")
        raise FhirError.of(
            Code.FORBIDDEN,
            "Only an organisation's DCC administrators and auditors, and the exchange "
            "operator, may read the audit log.",
        )

    async def search(
        self,
        who: Caller,
        where: dict[str, Any],
        *,
        count: int,
        offset: int,
        query: str,
        address: str | None = None,
        request_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        scope = await self.scope_for(who)
        await self._own(
            "audit.searched", who, address=address, request_id=request_id, query=query, patient=where.get("patient")
        )
        docs = await self.chain.search({**where, **scope}, limit=count + 1, skip=offset)
        return [d["resource"] for d in docs[:count]], len(docs) > count

    # -- verify -------------------------------------------------------------------------------------
    async def verify(self, who: Caller, *, since: int | str | None = None) -> Verification:
        """The whole chain, or from a checkpoint (its record number, or ``"latest"``) on."""
        if who.role not in VERIFIERS:
            raise FhirError.of(
                Code.FORBIDDEN, "Only DCC administrators, auditors and systems may verify the audit chain."
            )
        if since == "latest":
            newest = await self.chain.checkpoints(limit=1)
            since = newest[0]["seq"] if newest else None
        return await self.chain.verify(since=since if isinstance(since, int) else None)

    # -- export -------------------------------------------------------------------------------------
    async def export(
        self, who: Caller, start: str, end: str, *, address: str | None = None, request_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The stored records (chain fields included) with ``start <= recorded < end``, in chain order.

        The operator's export is the whole chain, which re-verifies link by link; an organisation's is
        its slice, in which each record's hash still verifies but the links skip other organisations'."""
        scope = await self.scope_for(who)
        await self._own("audit.exported", who, address=address, request_id=request_id, query=f"start={start}&end={end}")
        return self._export(start, end, scope)

    async def _export(self, start: str, end: str, scope: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async for doc in self.chain.scan({"date": {"$gte": start, "$lt": end}, **scope}):
            yield {k: v for k, v in doc.items() if k != "_id"}

    # -- the patient's access report ----------------------------------------------------------------
    async def access_report(
        self, who: Caller, nhs_number: str | None, *, address: str | None = None, request_id: str | None = None
    ) -> AccessReport:
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
                event_type="audit.access-report",
                source=AUDIT_SOURCE,
                who=Who.of(who, address),
                patient=nhs_number,
                basis=decision.reason,
                allowed=decision.allowed,
                request_id=request_id,
                recorded=datetime.now(UTC),
                entities=[],
                orgs=[who.org],
            )
            await self.chain.append(f"audit:{uuid.uuid4()}", *record)
            if not decision.allowed:
                denial_recorded()  # the consent decision above is this refusal's record
                raise FhirError.of(Code.ACCESS_DENIED, decision.public(request_id))
        else:
            raise FhirError.of(Code.FORBIDDEN, "The access report is for the patient and the carers they authorise.")
        assert nhs_number is not None
        await self._own(
            "audit.access-report",
            who,
            address=address,
            request_id=request_id,
            query=f"patient={nhs_number}",
            patient=nhs_number,
        )
        return await self._report(nhs_number)

    async def _report(self, nhs_number: str) -> AccessReport:
        holders: dict[str, Holder] = {}
        accesses: list[dict[str, Any]] = []
        rules: dict[str, str] = {}
        custodians: dict[str, str] = {}
        kinds: dict[str, str] = {}
        async for doc in self.chain.scan({"patient": nhs_number}):
            kind = doc.get("event_type")
            if kind == HOLDING:
                custodian, document = (doc.get("orgs") or [None])[0], _document_of(doc)
                if document and doc.get("document_type"):
                    kinds[document] = doc["document_type"]
                if custodian and document:
                    custodians[document] = custodian
                    holder = holders.setdefault(custodian, Holder(custodian, None))
                    if document not in holder.documents:
                        holder.documents.append(document)
            elif kind in NO_LONGER_HELD:
                gone = _document_of(doc)
                for holder in holders.values():
                    if gone in holder.documents:
                        holder.documents.remove(gone)
            elif kind in ACCESSES and not doc["event_id"].endswith("#authz-consent"):
                if kind != "access.denied" and _own_use(doc, custodians):
                    # The holder opening its own record (a hospital system polling its submission) is not a
                    # sharing: it stays in the audit log, but the patient's report lists who else looked.
                    continue
                accesses.append(_for_patient(doc["resource"], kinds))
                if doc.get("rule"):
                    rules[doc["resource"]["id"]] = doc["rule"]
        names: dict[str, str] = {}
        orgs = set(holders) | {a["org"] for a in (summary(r) for r in accesses) if a["org"]}
        for ods in orgs:
            org = await self.policy.organisation(ods)
            if org is not None:
                names[ods] = org.name
        for holder in holders.values():
            holder.name = names.get(holder.ods_code)
        held = [h for h in holders.values() if h.documents]
        return AccessReport(
            nhs_number, datetime.now(UTC), sorted(held, key=lambda h: h.ods_code), accesses, names, rules, kinds
        )


# Records that one organisation holds: a read or refusal of one involves its holder.
HELD_RECORDS = ("DocumentReference/", "Binary/", "CarePlan/")


def _held_key(entity: str) -> str:
    """Documents by bare id (DocumentReference and Binary share it); other records by reference."""
    kind, _, ident = entity.partition("/")
    return ident if kind in ("DocumentReference", "Binary") else entity


def _own_use(doc: dict[str, Any], custodians: dict[str, str]) -> bool:
    """Was this read made by the organisation that holds the document it read?"""
    reader = summary(doc["resource"])["org"]
    document = _document_of(doc)
    return bool(reader) and document is not None and custodians.get(document) == reader


def _document_of(doc: dict[str, Any]) -> str | None:
    """The document a document.* record is about (its first DocumentReference entity)."""
    return next(
        (e.removeprefix("DocumentReference/") for e in doc.get("entities", []) if e.startswith("DocumentReference/")),
        None,
    )


def _for_patient(resource: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    """The record as the patient sees it: staff network addresses are not theirs to see, and each
    document it names says what kind of document it is (Reference.display)."""
    agents = [{k: v for k, v in a.items() if k != "network"} for a in resource.get("agent", [])]
    entities = []
    for entity in resource.get("entity", []):
        ref = (entity.get("what") or {}).get("reference", "")
        kind = kinds.get(ref.partition("/")[2]) if ref.startswith("DocumentReference/") else None
        entities.append({**entity, "what": {**entity["what"], "display": kind}} if kind else entity)
    return {**resource, "agent": agents, "entity": entities}


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
    refs = [e["what"]["reference"] for e in resource.get("entity", []) if e.get("what", {}).get("reference")]
    document = next((r.split("/", 1)[1] for r in refs if r.startswith("DocumentReference/")), None)
    interaction = next(
        (
            c.get("code")
            for c in resource.get("subtype", [])
            if c.get("system") == "http://hl7.org/fhir/restful-interaction"
        ),
        None,
    )
    return {
        "org": org,
        "subject": subject,
        "role": role,
        "when": resource.get("period", {}).get("start"),
        "document": document,
        "allowed": resource.get("outcome") == "0",
        "refs": refs,
        "search": interaction == "search",
        # The LHCIE event type is always the second subtype (services/audit/records.py).
        "event": (resource.get("subtype") or [{}, {}])[1].get("code")
        if len(resource.get("subtype") or []) > 1
        else None,
    }
