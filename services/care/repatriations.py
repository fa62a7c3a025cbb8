"""Repatriation use cases: request, move through the states, the receiving trust's live list, escalation.

Sending the form to the receiving trust is a disclosure: the one policy decision is asked at the source,
for the receiver and the purpose transfer-of-care, before anything is recorded. Every state change and
the escalation publish ``transfer.*`` events (the alerts for the receiving trust's bed managers and the
sender); the escalation is a durable timer due ``escalation_hours`` (per network) after the referral.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from services.care.access import Access, actor_of, facts
from services.care.settings import CareSettings
from services.care.transfers import (
    PENDING,
    RECEIVER,
    SENDER,
    TERMINAL,
    TRANSFER_TYPE,
    allowed_from,
    check_move,
    check_request,
    task_view,
)
from shared.auth import Caller
from shared.clock import Clock, fhir_instant, hours_between, parse_stamp
from shared.context import ServiceContext
from shared.events import Event, RoutingKey, TransferChanged
from shared.fhir.errors import Code, FhirError, Issue
from shared.policy import TRANSFER_OF_CARE
from shared.store import ASCENDING, Document, Index, Session
from shared.timers import Timers

log = logging.getLogger(__name__)
ESCALATION = "transfer-escalation"


class Repatriations:
    def __init__(
        self, ctx: ServiceContext, access: Access, timers: Timers, settings: CareSettings, clock: Clock
    ) -> None:
        self.ctx = ctx
        self.access = access
        self.timers = timers
        self.settings = settings
        self.clock = clock
        self._rows = ctx.store.collection("transfers", [Index(("receiver", "state")), Index(("sender", "state"))])
        timers.on(ESCALATION, self._escalate)

    async def request(
        self, data: dict[str, Any], who: Caller, *, request_id: str, decided: bool = False
    ) -> dict[str, Any]:
        """``decided``: the caller already knows the disclosure is allowed (the demo seed, which runs before
        the policy replica has heard of the demo ISA that allows it)."""
        if who.role not in ("clinician", "system"):
            raise FhirError.of(Code.FORBIDDEN, "Only clinical staff request a transfer.")
        asked = check_request(data, who.org)
        receiver = await self.access.policy.organisation(asked.receiver)
        if not decided and (receiver is None or not receiver.active):
            raise FhirError.of(
                Code.BUSINESS_RULE,
                f"{asked.receiver} is not a registered organisation of the exchange.",
                "Task.owner.identifier",
            )
        task_id = str(uuid.uuid4())
        # The receiving trust may only be sent what the policy lets it see, for transfer of care.
        as_receiver = Caller(
            org=asked.receiver,
            role="system",
            subject=f"system@{asked.receiver}",
            scopes=frozenset(),
            purpose=TRANSFER_OF_CARE,
        )
        decision = await self.access.decide(as_receiver, facts(task_id, asked.patient, who.org, TRANSFER_TYPE))
        if not decided and not decision.allowed:
            raise await self.access.deny(
                who, "Task", decision, action="create", patient=asked.patient, request_id=request_id
            )
        now = self.clock.now()
        at = fhir_instant(now)
        row = {
            "_id": task_id,
            "patient": asked.patient,
            "sender": who.org,
            "receiver": asked.receiver,
            "network": asked.network,
            "state": "requested",
            "version": 1,
            "requested_at": at,
            "updated": at,
            "resource": asked.resource,
            "escalated": False,
            "history": [{"state": "requested", "at": at, "by": who.subject, "details": {}}],
        }
        due = now + timedelta(hours=self.settings.escalation_for(asked.network))
        async with self.ctx.store.transaction() as session:
            await self._rows.insert(row, session=session)
            await self.timers.schedule(f"{ESCALATION}:{task_id}", ESCALATION, due, subject=task_id, session=session)
            await self._announce(RoutingKey.TRANSFER_REQUESTED, row, who, request_id, session)
        self.ctx.outbox.notify()
        log.info("care.transfer_requested", extra={"code": "CAR010"})
        return self.view(row)

    async def advance(
        self, task_id: str, parameters: dict[str, Any], who: Caller, *, request_id: str
    ) -> dict[str, Any]:
        row = await self._rows.get(task_id)
        party = _party(row, who)
        if row is None or party is None:
            raise FhirError.of(Code.NOT_FOUND)
        move = check_move(parameters)
        allowed_from(row["state"], move, party)
        at = fhir_instant(self.clock.now())
        history = [*row["history"], {"state": move.state, "at": at, "by": who.subject, "details": move.details}]
        changes = {"state": move.state, "version": row["version"] + 1, "updated": at, "history": history}
        async with self.ctx.store.transaction() as session:
            if not await self._rows.update({"_id": task_id, "version": row["version"]}, changes, session=session):
                raise FhirError([Issue(Code.CONFLICT, "The transfer changed meanwhile; read it again.")], status=412)
            if move.state in TERMINAL:
                await self.timers.cancel_for(task_id, session=session)
            updated = {**row, **changes}
            await self._announce(
                RoutingKey.TRANSFER_UPDATED, updated, who, request_id, session, reason=move.details.get("reason")
            )
        self.ctx.outbox.notify()
        return self.view(updated)

    async def read(self, task_id: str, who: Caller, *, request_id: str) -> dict[str, Any]:
        row = await self._rows.get(task_id)
        if row is None or _party(row, who) is None:
            raise FhirError.of(Code.NOT_FOUND)
        async with self.ctx.store.transaction() as session:
            await self.access.read(
                who,
                f"Task/{task_id}",
                action="read",
                patient=row["patient"],
                rule=_party(row, who),
                request_id=request_id,
                session=session,
            )
        self.ctx.outbox.notify()
        return self.view(row)

    async def pending(self, who: Caller, *, as_party: str, query: str, request_id: str) -> list[dict[str, Any]]:
        """The live list: transfers still open, longest waiting first (receiver's bed managers, or sender)."""
        field = "receiver" if as_party == RECEIVER else "sender"
        rows = await self._rows.find(
            {field: who.org, "state": {"$in": list(PENDING)}}, sort=[("requested_at", ASCENDING)], limit=1000
        )
        async with self.ctx.store.transaction() as session:
            await self.access.read(
                who,
                "Task",
                action="search",
                patient=None,
                rule=as_party,
                request_id=request_id,
                session=session,
                query=query,
                results=len(rows),
            )
        self.ctx.outbox.notify()
        return [self.view(r) for r in rows]

    def view(self, row: Document) -> dict[str, Any]:
        return task_view(row, self.hours_waited(row))

    def hours_waited(self, row: Document) -> float:
        end = parse_stamp(row["updated"]) if row["state"] in TERMINAL else self.clock.now()
        return hours_between(parse_stamp(row["requested_at"]), end)

    async def _escalate(self, timer: Document, session: Session) -> None:
        row = await self._rows.get(timer["subject"], session=session)
        if row is None or row["state"] in TERMINAL:
            return
        await self._rows.update({"_id": row["_id"]}, {"escalated": True}, session=session)
        await self._announce(
            RoutingKey.TRANSFER_ESCALATED,
            {**row, "escalated": True},
            None,
            None,
            session,
            reason=f"waiting more than {self.settings.escalation_for(row['network']):g} hours",
        )
        log.info("care.transfer_escalated", extra={"code": "CAR011"})

    async def _announce(
        self,
        key: RoutingKey,
        row: Document,
        who: Caller | None,
        request_id: str | None,
        session: Session,
        *,
        reason: str | None = None,
    ) -> None:
        await self.ctx.publish(
            Event.new(
                key,
                TransferChanged(
                    task_id=row["_id"],
                    resource=f"Task/{row['_id']}",
                    state=row["state"],
                    patient_nhs_number=row["patient"],
                    sender=row["sender"],
                    receiver=row["receiver"],
                    network=row["network"],
                    requested_at=parse_stamp(row["requested_at"]),
                    hours_waited=self.hours_waited(row),
                    actor=actor_of(who) if who else None,
                    reason=reason,
                ),
                source=self.ctx.source,
                subject=f"Task/{row['_id']}",
                correlation_id=request_id,
            ),
            session=session,
        )


def _party(row: Document | None, who: Caller) -> str | None:
    if row is not None and who.role == "bed-manager":  # the receiving trust's, reading (their scopes: Task.rs)
        return RECEIVER if who.org == row["receiver"] else None
    if row is None or who.role not in ("clinician", "system"):
        return None
    return SENDER if who.org == row["sender"] else RECEIVER if who.org == row["receiver"] else None
