"""Care plan changes for subscribers (issue 18): the GP, hospice and ambulance service hear of each new
version of an end-of-life plan they may see, from the care service's ``careplan.*`` events.

Only versions others may see are announced (a draft is its author's alone). Each subscription's
organisation is put to the one policy decision for end-of-life care, as its read of the plan would be:
an organisation without an ISA for it (or that the patient opted out of) hears nothing, and a revoked
ISA stops the notices at the next change. The notice names the plan's version; the subscriber reads the
plan from the care service, where the read is audited and counted.
"""

from __future__ import annotations

import logging

from services.notification.documents import Once
from services.notification.feed import Writer
from services.notification.subscriptions import CAREPLAN_TOPIC, Subscriptions
from shared.auth import Caller
from shared.clock import Clock, stamp
from shared.events import CarePlanChanged, DocumentFacts, Event
from shared.fhir.identifiers import SNOMED
from shared.policy import END_OF_LIFE_CARE, PolicyView
from shared.store import Session

log = logging.getLogger(__name__)
DRAFT = "draft"


def plan_facts(changed: CarePlanChanged) -> DocumentFacts:
    """The plan as the policy sees a record: its custodian, patient and SNOMED record type."""
    return DocumentFacts(
        document_id=changed.plan_id,
        patient_nhs_number=changed.patient_nhs_number,
        custodian=changed.custodian,
        type_system=SNOMED,
        type_code=changed.record_type,
        content_type="application/fhir+json",
        size=0,
        sha256="",
    )


class CarePlanNotices:
    def __init__(
        self, *, subscriptions: Subscriptions, policy: PolicyView, clock: Clock, once: Once, write: Writer
    ) -> None:
        self._subscriptions = subscriptions
        self._policy = policy
        self._clock = clock
        self._once = once
        self._write = write

    async def on_changed(self, event: Event) -> None:
        changed = event.payload()
        assert isinstance(changed, CarePlanChanged)
        if changed.status == DRAFT:
            return
        facts = plan_facts(changed)
        focus = f"{changed.resource}/_history/{changed.version}"

        async def effect(session: Session) -> int:
            made = 0
            for sub in await self._subscriptions.for_topic(CAREPLAN_TOPIC, session=session):
                wanted = sub["filters"].get("patient")
                if wanted and wanted != changed.patient_nhs_number:
                    continue
                reader = Caller(
                    org=sub["org"],
                    role="system",
                    subject=f"Subscription/{sub['_id']}",
                    scopes=frozenset(),
                    purpose=END_OF_LIFE_CARE,
                )
                decision = await self._policy.decide(reader, facts)
                if not decision.allowed:
                    log.info("notification.careplan_not_shared rule=%s", decision.rule, extra={"code": "NOT060"})
                    continue
                await self._subscriptions.notify(sub, focus, stamp(self._clock.now()), session=session)
                made += 1
            return made

        made = await self._write(lambda: self._once(event, effect))
        if made:
            log.info("notification.careplan_notified count=%d", made, extra={"code": "NOT061"})
