"""Discharge summaries: delivery to the GP practice and the local trust, ITK3-style acknowledgements,
replacement, and escalation of a summary nobody acknowledged.

Each recipient has a delivery. The recipient's system answers twice: an infrastructure acknowledgement
(accepted, or rejected with a code such as duplicate or payload-validation-failure) when its system took
the document in, then a business acknowledgement (patient known, not known, no longer at this setting)
when it filed it. A delivery without a business acknowledgement after ``discharge_ack_hours`` (and
without an infrastructure rejection, which the sender already heard of) escalates to the sender.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from services.care.access import Access, actor_of
from services.care.documents import (
    BUSINESS_CODES,
    INFRASTRUCTURE_OUTCOMES,
    REJECTION_CODES,
    Summary,
    check_summary,
)
from services.care.settings import CareSettings
from shared.auth import Caller
from shared.clock import Clock, fhir_instant
from shared.context import ServiceContext
from shared.events import DischargeChanged, Event, RoutingKey
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import ODS_CODE
from shared.store import DESCENDING, Document, DuplicateKey, Index, Session
from shared.timers import Timers

log = logging.getLogger(__name__)
ITK_CODES = "https://lhcie.london/fhir/CodeSystem/itk-acknowledgement"
ESCALATION = "discharge-escalation"
CURRENT, SUPERSEDED = "current", "superseded"


def itk_rejection(code: str, issues: list[Issue], status: int) -> FhirError:
    """The exchange's own infrastructure rejection: the OperationOutcome leads with the ITK code."""
    lead = Issue(
        Code.PROCESSING if code != "duplicate" else Code.CONFLICT,
        f"Infrastructure acknowledgement: rejected ({code}).",
        "Bundle",
    )
    error = FhirError([lead, *issues], status=status)
    error.headers["X-ITK-Acknowledgement"] = f"rejected; code={code}"
    return error


class Discharges:
    def __init__(
        self, ctx: ServiceContext, access: Access, timers: Timers, settings: CareSettings, clock: Clock
    ) -> None:
        self.ctx = ctx
        self.access = access
        self.timers = timers
        self.settings = settings
        self.clock = clock
        self._summaries = ctx.store.collection("discharge_summaries", [Index(("key",), unique=True)])
        self._deliveries = ctx.store.collection(
            "discharge_deliveries", [Index(("summary_id",)), Index(("recipient", "delivered_at"))]
        )
        timers.on(ESCALATION, self._escalate)

    async def submit(self, data: dict[str, Any], who: Caller, *, request_id: str) -> Document:
        if who.role not in ("clinician", "system"):
            raise FhirError.of(Code.FORBIDDEN, "Only clinical systems send discharge summaries.")
        try:
            summary = check_summary(data, who.org)
        except FhirError as exc:
            raise itk_rejection("payload-validation-failure", exc.issues, 422) from None
        if not summary.recipients:
            raise itk_rejection(
                "unknown-recipient",
                [Issue(Code.BUSINESS_RULE, "No recipient other than the sender.", "Bundle.entry[0].resource.section")],
                422,
            )
        key = f"{who.org}|{summary.identifier}"
        if await self._summaries.find_one({"key": key}) is not None:
            raise itk_rejection(
                "duplicate",
                [Issue(Code.CONFLICT, "This document identifier was already received.", "Bundle.identifier")],
                409,
            )
        original = await self._replaced(summary, who)
        summary_id = str(uuid.uuid4())
        now = self.clock.now()
        at = fhir_instant(now)
        bundle = {**summary.bundle, "id": summary_id, "meta": {"versionId": "1", "lastUpdated": at}}
        row = {
            "_id": summary_id,
            "key": key,
            "sender": who.org,
            "patient": summary.patient,
            "status": CURRENT,
            "recipients": list(summary.recipients),
            "received_at": at,
            "bundle": bundle,
            "replaces": None,
        }
        try:
            async with self.ctx.store.transaction() as session:
                if original is not None:
                    row["replaces"] = original["_id"]
                    await self._supersede(original, summary_id, who, request_id, session)
                await self._summaries.insert(row, session=session)
                for recipient in summary.recipients:
                    delivery = {
                        "_id": f"{summary_id}:{recipient}",
                        "summary_id": summary_id,
                        "recipient": recipient,
                        "sender": who.org,
                        "patient": summary.patient,
                        "delivered_at": at,
                        "infrastructure": None,
                        "business": None,
                        "escalated": False,
                    }
                    await self._deliveries.insert(delivery, session=session)
                    await self.timers.schedule(
                        f"{ESCALATION}:{delivery['_id']}",
                        ESCALATION,
                        now + timedelta(hours=self.settings.discharge_ack_hours),
                        subject=str(delivery["_id"]),
                        session=session,
                    )
                    await self._announce(
                        RoutingKey.DISCHARGE_DELIVERED,
                        row,
                        session,
                        who=who,
                        recipient=recipient,
                        request_id=request_id,
                    )
        except DuplicateKey:
            raise itk_rejection(
                "duplicate",
                [Issue(Code.CONFLICT, "This document identifier was already received.", "Bundle.identifier")],
                409,
            ) from None
        self.ctx.outbox.notify()
        log.info("care.discharge_delivered recipients=%d", len(summary.recipients), extra={"code": "CAR020"})
        return row

    async def _replaced(self, summary: Summary, who: Caller) -> Document | None:
        if summary.replaces is None:
            return None
        original = await self._summaries.find_one({"key": f"{who.org}|{summary.replaces}"})
        if original is None:
            raise FhirError.of(
                Code.BUSINESS_RULE,
                "relatesTo names no discharge summary this sender sent.",
                "Bundle.entry[0].resource.relatesTo",
            )
        if original["status"] != CURRENT:
            raise FhirError.of(
                Code.CONFLICT, "That discharge summary was already replaced.", "Bundle.entry[0].resource.relatesTo"
            )
        return original

    async def _supersede(
        self, original: Document, replacement: str, who: Caller, request_id: str, session: Session
    ) -> None:
        if not await self._summaries.update(
            {"_id": original["_id"], "status": CURRENT},
            {"status": SUPERSEDED, "replaced_by": replacement},
            session=session,
        ):
            raise FhirError.of(Code.CONFLICT, "That discharge summary was already replaced.")
        for recipient in original["recipients"]:
            await self.timers.cancel_for(f"{original['_id']}:{recipient}", session=session)
        await self._announce(
            RoutingKey.DISCHARGE_SUPERSEDED,
            original,
            session,
            who=who,
            superseded_by=replacement,
            request_id=request_id,
        )

    async def acknowledge(
        self, summary_id: str, parameters: dict[str, Any], who: Caller, *, request_id: str
    ) -> dict[str, Any]:
        delivery = await self._deliveries.get(f"{summary_id}:{who.org}")
        if delivery is None or who.role not in ("clinician", "system"):
            raise FhirError.of(Code.NOT_FOUND)
        kind, outcome, code = _ack(parameters)
        ack = {"outcome": outcome, "code": code, "at": fhir_instant(self.clock.now()), "by": who.subject}
        field = "infrastructure" if kind == "infrastructure" else "business"
        earlier = delivery[field]
        if earlier is not None:
            if (earlier["outcome"], earlier["code"]) == (outcome, code):
                return ack_view(summary_id, who.org, kind, earlier)
            raise FhirError.of(Code.CONFLICT, f"A different {kind} acknowledgement was already given.")
        if kind == "business" and (delivery["infrastructure"] or {}).get("outcome") == "rejected":
            raise FhirError.of(Code.CONFLICT, "The document was rejected; no business acknowledgement follows.")
        summary = await self._summaries.get(summary_id)
        assert summary is not None
        async with self.ctx.store.transaction() as session:
            if not await self._deliveries.update({"_id": delivery["_id"], field: None}, {field: ack}, session=session):
                raise FhirError.of(Code.CONFLICT, f"A {kind} acknowledgement was given meanwhile.")
            if kind == "business" or outcome == "rejected":
                await self.timers.cancel_for(delivery["_id"], session=session)
            await self._announce(
                RoutingKey.DISCHARGE_ACKNOWLEDGED,
                summary,
                session,
                who=who,
                recipient=who.org,
                acknowledgement=kind,
                outcome=outcome,
                code=code,
                request_id=request_id,
            )
        self.ctx.outbox.notify()
        return ack_view(summary_id, who.org, kind, ack)

    async def read(self, summary_id: str, who: Caller, *, request_id: str) -> dict[str, Any]:
        summary = await self._summaries.get(summary_id)
        if summary is None or not _involved(summary, who):
            raise FhirError.of(Code.NOT_FOUND)
        async with self.ctx.store.transaction() as session:
            await self.access.read(
                who,
                f"Bundle/{summary_id}",
                action="read",
                patient=summary["patient"],
                rule="sender" if who.org == summary["sender"] else "recipient",
                request_id=request_id,
                session=session,
            )
        self.ctx.outbox.notify()
        return bundle_view(summary)

    async def inbox(self, who: Caller, *, query: str, request_id: str) -> list[dict[str, Any]]:
        """The discharge summaries delivered to the caller's organisation, newest first."""
        deliveries = await self._deliveries.find({"recipient": who.org}, sort=[("delivered_at", DESCENDING)], limit=100)
        summaries = [s for d in deliveries if (s := await self._summaries.get(d["summary_id"])) is not None]
        async with self.ctx.store.transaction() as session:
            await self.access.read(
                who,
                "Bundle",
                action="search",
                patient=None,
                rule="recipient",
                request_id=request_id,
                session=session,
                query=query,
                results=len(summaries),
            )
        self.ctx.outbox.notify()
        return [bundle_view(s) for s in summaries]

    async def status(self, summary_id: str, who: Caller) -> dict[str, Any]:
        """For the sender: each recipient's delivery and acknowledgements (a FHIR Parameters)."""
        summary = await self._summaries.get(summary_id)
        if summary is None or who.org != summary["sender"]:
            raise FhirError.of(Code.NOT_FOUND)
        deliveries = await self._deliveries.find({"summary_id": summary_id}, limit=100)
        params: list[dict[str, Any]] = [{"name": "status", "valueCode": summary["status"]}]
        if summary.get("replaced_by"):
            params.append({"name": "replaced-by", "valueReference": {"reference": f"Bundle/{summary['replaced_by']}"}})
        for d in sorted(deliveries, key=lambda d: d["recipient"]):
            part: list[dict[str, Any]] = [
                {"name": "recipient", "valueIdentifier": {"system": ODS_CODE, "value": d["recipient"]}},
                {"name": "delivered", "valueInstant": d["delivered_at"]},
                {"name": "escalated", "valueBoolean": d["escalated"]},
            ]
            for kind in ("infrastructure", "business"):
                if d[kind] is not None:
                    part.append({"name": kind, "valueCode": d[kind]["outcome"]})
                    if d[kind]["code"]:
                        part.append({"name": f"{kind}-code", "valueCode": d[kind]["code"]})
            params.append({"name": "delivery", "part": part})
        return {"resourceType": "Parameters", "parameter": params}

    async def _escalate(self, timer: Document, session: Session) -> None:
        delivery = await self._deliveries.get(timer["subject"], session=session)
        if delivery is None or delivery["business"] is not None:
            return
        summary = await self._summaries.get(delivery["summary_id"], session=session)
        if summary is None or summary["status"] != CURRENT:
            return
        await self._deliveries.update({"_id": delivery["_id"]}, {"escalated": True}, session=session)
        await self._announce(
            RoutingKey.DISCHARGE_ESCALATED,
            summary,
            session,
            recipient=delivery["recipient"],
            reason=f"not acknowledged within {self.settings.discharge_ack_hours:g} hours",
        )

    async def _announce(
        self,
        key: RoutingKey,
        summary: Document,
        session: Session,
        *,
        who: Caller | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> None:
        await self.ctx.publish(
            Event.new(
                key,
                DischargeChanged(
                    summary_id=summary["_id"],
                    resource=f"Bundle/{summary['_id']}",
                    patient_nhs_number=summary["patient"],
                    sender=summary["sender"],
                    actor=actor_of(who) if who else None,
                    **fields,
                ),
                source=self.ctx.source,
                subject=f"Bundle/{summary['_id']}",
                correlation_id=request_id,
            ),
            session=session,
        )


def _ack(parameters: dict[str, Any]) -> tuple[str, str, str | None]:
    if parameters.get("resourceType") != "Parameters":
        raise FhirError.of(Code.INVALID_RESOURCE, "Expected a Parameters resource.", "resourceType")
    given = parameters.get("parameter")
    values = (
        {p["name"]: p.get("valueCode") for p in given if isinstance(p, dict) and isinstance(p.get("name"), str)}
        if isinstance(given, list)
        else {}
    )
    kind, outcome, code = values.get("type"), values.get("outcome"), values.get("code")
    if kind == "infrastructure":
        if outcome not in INFRASTRUCTURE_OUTCOMES:
            raise FhirError.of(
                Code.INVALID_RESOURCE,
                "outcome must be accepted or rejected",
                "Parameters.parameter.where(name='outcome')",
            )
        if (outcome == "rejected") != (code is not None) or (code is not None and code not in REJECTION_CODES):
            raise FhirError.of(
                Code.INVALID_RESOURCE,
                "a rejection needs a code from " + ", ".join(REJECTION_CODES) + " (and an acceptance none)",
                "Parameters.parameter.where(name='code')",
            )
        return kind, str(outcome), code
    if kind == "business":
        if code not in BUSINESS_CODES:
            raise FhirError.of(
                Code.INVALID_RESOURCE,
                "code must be one of " + ", ".join(BUSINESS_CODES),
                "Parameters.parameter.where(name='code')",
            )
        return kind, "accepted", code
    raise FhirError.of(
        Code.INVALID_RESOURCE, "type must be infrastructure or business", "Parameters.parameter.where(name='type')"
    )


def _involved(summary: Document, who: Caller) -> bool:
    return who.role in ("clinician", "system") and (who.org == summary["sender"] or who.org in summary["recipients"])


def bundle_view(summary: Document) -> dict[str, Any]:
    bundle = dict(summary["bundle"])
    if summary["status"] == SUPERSEDED:
        bundle["meta"] = {**bundle["meta"], "tag": [{"system": ITK_CODES, "code": "superseded"}]}
    return bundle


def ack_view(summary_id: str, recipient: str, kind: str, ack: dict[str, Any]) -> dict[str, Any]:
    """An ITK3-style acknowledgement as a FHIR MessageHeader answering the document."""
    code = "ok" if ack["outcome"] == "accepted" else "fatal-error"
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "eventCoding": {"system": ITK_CODES, "code": f"{kind}-acknowledgement"},
        "source": {"endpoint": f"urn:ods:{recipient}"},
        "response": {"identifier": summary_id, "code": code},
        "focus": [{"reference": f"Bundle/{summary_id}"}],
    }
    if ack["code"]:
        header["reason"] = {"coding": [{"system": ITK_CODES, "code": ack["code"]}]}
    return header
