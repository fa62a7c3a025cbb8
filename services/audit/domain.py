"""Audit's use cases: record every event, search the trail, verify the chain."""

from __future__ import annotations

import logging
from typing import Any

from services.audit.chain import AuditChain, Verification
from services.audit.records import audited, index_fields, to_audit_event
from shared.auth import Caller
from shared.events import Event
from shared.fhir.errors import Code, FhirError
from shared.lifecycle import ServiceContext

log = logging.getLogger(__name__)


class Audit:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.chain = AuditChain(ctx.store)

    async def record(self, event: Event) -> None:
        if not audited(event):
            return
        await self.chain.append(event.id, to_audit_event(event), index_fields(event))

    @staticmethod
    def scope_for(who: Caller) -> dict[str, Any]:
        """DCC administrators see every record; an organisation sees records that involve it."""
        if who.role == "dcc-admin":
            return {}
        if who.role in ("patient", "carer"):
            raise FhirError.of(Code.FORBIDDEN, "Patients see their access report through the patient view.")
        return {"orgs": who.org}

    async def search(self, who: Caller, where: dict[str, Any], *, count: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
        docs = await self.chain.search({**where, **self.scope_for(who)}, limit=count + 1, skip=offset)
        return [d["resource"] for d in docs[:count]], len(docs) > count

    async def verify(self, who: Caller) -> Verification:
        if who.role != "dcc-admin" and who.role != "system":
            raise FhirError.of(Code.FORBIDDEN, "Only DCC administrators and systems may verify the audit chain.")
        return await self.chain.verify()
