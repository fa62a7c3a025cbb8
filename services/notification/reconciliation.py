"""Reconciliation: raise every alert the stored documents call for and that does not exist yet.

It runs at every start (after an outage), when the sharing policy lets documents reach an MDT they could
not reach when they arrived (policy and documents are consumed concurrently), and on the exchange
operator's request (``$reconcile``, throttled and audited). Alert ids are derived from the document and
the team, so a pass never raises anything twice.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime

from services.notification.access import Access
from services.notification.digest import Digest
from services.notification.documents import DocumentAlerts, StoredDocuments
from services.notification.feed import Writer
from shared.auth import Caller
from shared.clock import parse_stamp
from shared.events import AgreementState, CareTeamState, DocumentFacts, Event, OrganisationState
from shared.fhir.errors import Code, FhirError
from shared.policy import Decision, PolicyView
from shared.store import DocumentStore

log = logging.getLogger(__name__)
PAGE = 200


class Throttle:
    """At most one run per interval in this process (an operation too costly to repeat on demand)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def wait(self) -> int:
        """Seconds to wait before the next run, or 0: go (and the run is counted from now)."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return max(1, math.ceil(self.interval - (now - self._last)))
        self._last = now
        return 0


class Reconciliation:
    def __init__(
        self,
        *,
        store: DocumentStore,
        documents: StoredDocuments,
        document_alerts: DocumentAlerts,
        policy: PolicyView,
        digest: Digest,
        access: Access,
        write: Writer,
        throttle: Throttle,
    ) -> None:
        self._store = store
        self._documents = documents
        self._document_alerts = document_alerts
        self._policy = policy
        self._digest = digest
        self._access = access
        self._write = write
        self._throttle = throttle

    async def reconcile(self, *, mdt: str | None = None) -> int:
        """One pass over the stored documents (those of ``mdt`` only, when given); returns how many alerts
        were raised."""
        raised, skip = 0, 0
        while True:
            page = await self._documents.page(mdt=mdt, skip=skip, limit=PAGE)
            for row in page:
                facts = DocumentFacts.model_validate(row["facts"])
                stored_at = parse_stamp(row["stored_at"])

                async def effect(facts: DocumentFacts = facts, stored_at: datetime = stored_at) -> int:
                    async with self._store.transaction() as session:
                        teams = await self._document_alerts.teams_for(facts)
                        return sum(
                            [await self._document_alerts.alert_for(facts, stored_at, t, None, session) for t in teams]
                        )

                raised += await self._write(effect)
            if len(page) < PAGE:
                break
            skip += PAGE
        if raised:
            log.info("notification.reconciled count=%d", raised, extra={"code": "NOT004"})
        return raised

    async def on_policy(self, event: Event) -> None:
        """Follow a sharing-policy event; reconcile where it may let stored documents reach an MDT."""
        changed = await self._policy.apply(event)
        payload = event.payload()
        if not changed or not getattr(payload, "active", True):
            return
        if isinstance(payload, CareTeamState):
            await self._digest.schedule(payload.careteam_id)
            await self.reconcile(mdt=payload.careteam_id)
        elif isinstance(payload, (OrganisationState, AgreementState)):
            await self.reconcile()

    async def on_request(self, who: Caller, *, request_id: str | None = None) -> int:
        """``$reconcile`` by the exchange's operator, at most once per interval in this process."""
        if who.role != "exchange-operator":
            await self._access.deny(
                who,
                "Communication/$reconcile",
                "execute",
                Decision.deny("not-exchange-operator", "only the exchange operator may reconcile"),
                error=FhirError.of(Code.FORBIDDEN, "Only the exchange operator may run a reconciliation."),
                request_id=request_id,
            )
        wait = self._throttle.wait()
        if wait:
            await self._access.invoked(
                who, "$reconcile", "Communication", "refused", "rate limited", request_id=request_id
            )
            raise FhirError.of(
                Code.RATE_LIMITED,
                "A reconciliation ran moments ago; try again later.",
                headers={"Retry-After": str(wait)},
            )
        try:
            raised = await self.reconcile()
        except Exception:
            await self._access.invoked(who, "$reconcile", "Communication", "failed", request_id=request_id)
            raise
        await self._access.invoked(
            who, "$reconcile", "Communication", "success", f"raised {raised}", request_id=request_id
        )
        return raised
