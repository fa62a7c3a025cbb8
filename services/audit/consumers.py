"""Audit's message handler: every event on the bus becomes its record(s) in the chain, and policy
events also update audit's own policy view (used to check carers asking for a patient's report)."""

from __future__ import annotations

from services.audit.domain import Audit
from shared.bus import Handler
from shared.events import Event


def handler(audit: Audit) -> Handler:
    async def handle(event: Event) -> None:
        # A payload that breaks the contract raises ValidationError: the bus dead-letters it to
        # audit.events.dead, where it is kept for an operator rather than recorded half-understood.
        event.payload()
        # Returns (and so the bus acks) only after the record's transaction has committed. A store outage
        # becomes Retry in ServiceContext.consume, and the bus owns the backoff.
        await audit.record(event)

    return handle
