"""Intake's message handlers: storage's verdicts and the sharing policy."""

from __future__ import annotations

from services.intake.domain import Intake
from shared.bus import Handler
from shared.events import DocumentRejected, DocumentStored, Event, RoutingKey
from shared.store import Session


def handler(intake: Intake) -> Handler:
    async def handle(event: Event) -> None:
        ctx = intake.ctx
        if event.type is RoutingKey.DOCUMENT_STORED:
            stored = event.payload()
            assert isinstance(stored, DocumentStored)

            async def mark(session: Session) -> None:
                document_id = stored.document.document_id
                if await intake.registry.mark_stored(
                    document_id, object_key=stored.object_key, stored_at=stored.stored_at, session=session
                ):
                    await intake.on_stored(document_id, session)

            # Shared with other deliveries' (one commit): every read in it goes through the session.
            await ctx.once(event, mark, shared=True)
        elif event.type is RoutingKey.DOCUMENT_REJECTED:
            rejected = event.payload()
            assert isinstance(rejected, DocumentRejected)
            await ctx.once(
                event,
                lambda s: intake.registry.mark_rejected(
                    rejected.document.document_id, code=rejected.reason_code, reason=rejected.reason, session=s
                ),
                shared=True,
            )
        elif intake.policy.handles(event):
            await intake.policy.apply(event)

    return handle
