"""Storage's use cases: verify and file a staged document; decide and serve a retrieval."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from services.storage.verification import ContentRejected, check_digest, check_media_type
from shared.auth import Caller
from shared.bus import Retry
from shared.events import (
    AccessDenied,
    Actor,
    DocumentFacts,
    DocumentReceived,
    DocumentRejected,
    DocumentRetrieved,
    DocumentStored,
    Event,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError
from shared.lifecycle import ServiceContext
from shared.objects import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from shared.policy import PolicyView
from shared.store import Index

log = logging.getLogger(__name__)

# Content up to this size is parsed whole to check JSON/XML well-formedness.
PARSE_LIMIT = 16 * 1024 * 1024


def permanent_key(facts: DocumentFacts) -> str:
    # The document id is a UUID minted by intake, so keys cannot collide.
    return f"documents/{facts.custodian}/{facts.document_id}"


@dataclass(frozen=True)
class Retrieval:
    facts: DocumentFacts
    key: str


class Storage:
    def __init__(self, ctx: ServiceContext, objects: ObjectStore) -> None:
        self.ctx = ctx
        self.objects = objects
        self.index = ctx.store.collection("objects", [Index(("facts.patient_nhs_number",))])
        self.policy = PolicyView(ctx.store)

    async def file(self, event: Event) -> None:
        received = event.payload()
        assert isinstance(received, DocumentReceived)
        facts = received.document
        if await self.index.get(facts.document_id) is not None:
            return  # already filed; its document.stored is in (or through) the outbox
        key = permanent_key(facts)
        try:
            await self._copy_verified(received, key)
        except ContentRejected as rejected:
            await self.objects.delete(key)
            await self._reject(event, received, rejected)
            return
        except ObjectNotFound:
            if await self.objects.head(key) is None:
                await self._reject(event, received, ContentRejected("content-missing", "no staged content was found"))
                return
            # A previous attempt filed the bytes and died before recording them: finish its work.
        except ObjectStoreUnavailable as exc:
            raise Retry(f"object store unavailable: {exc}") from exc
        stored = Event.new(
            RoutingKey.DOCUMENT_STORED,
            DocumentStored(
                submission_id=received.submission_id, document=facts, object_key=key, stored_at=datetime.now(UTC)
            ),
            source=self.ctx.source,
            subject=facts.document_id,
            correlation_id=event.correlationid,
        )

        async def record(session):  # noqa: ANN001, ANN202
            await self.index.insert(
                {"_id": facts.document_id, "key": key, "facts": facts.model_dump(mode="json"),
                 "stored_at": stored.data["stored_at"]},
                session=session,
            )
            await self.ctx.publish(stored, session=session)

        await self.ctx.once(event, record)
        await self._forget_staged(received.staging_key)
        log.info("storage.filed document=%s size=%d", facts.document_id, facts.size, extra={"code": "STO001"})

    async def _copy_verified(self, received: DocumentReceived, key: str) -> None:
        facts = received.document
        head = bytearray()
        whole = bytearray() if facts.size <= PARSE_LIMIT else None

        async def tee() -> AsyncIterator[bytes]:
            async for chunk in self.objects.get(received.staging_key):
                if len(head) < 1024:
                    head.extend(chunk[: 1024 - len(head)])
                if whole is not None:
                    whole.extend(chunk)
                yield chunk

        info = await self.objects.put(key, tee(), content_type=facts.content_type)
        check_digest(declared_size=facts.size, declared_sha256=facts.sha256, size=info.size, sha256=info.sha256)
        check_media_type(facts.content_type, bytes(head), bytes(whole) if whole is not None else None)

    async def _reject(self, event: Event, received: DocumentReceived, rejected: ContentRejected) -> None:
        reply = Event.new(
            RoutingKey.DOCUMENT_REJECTED,
            DocumentRejected(submission_id=received.submission_id, document=received.document,
                             reason_code=rejected.code, reason=rejected.reason),
            source=self.ctx.source,
            subject=received.document.document_id,
            correlation_id=event.correlationid,
        )
        await self.ctx.once(event, lambda session: self.ctx.publish(reply, session=session))
        await self._forget_staged(received.staging_key)
        log.warning("storage.rejected document=%s code=%s", received.document.document_id, rejected.code,
                    extra={"code": "STO002"})

    async def _forget_staged(self, staging_key: str) -> None:
        try:
            await self.objects.delete(staging_key)
        except ObjectStoreUnavailable:
            # Harmless: the bucket's lifecycle rule expires unclaimed staging objects.
            log.warning("storage.staging_not_deleted", extra={"code": "STO003"})

    async def authorise(self, document_id: str, who: Caller, *, request_id: str, address: str | None) -> Retrieval:
        doc = await self.index.get(document_id)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        facts = DocumentFacts.model_validate(doc["facts"])
        actor = Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, address=address)
        decision = await self.policy.decide(who, facts)
        if not decision.allowed:
            await self._emit(Event.new(
                RoutingKey.ACCESS_DENIED,
                AccessDenied(actor=actor, resource=f"Binary/{document_id}", action="read",
                             reason_code=decision.rule, reason=decision.reason,
                             patient_nhs_number=facts.patient_nhs_number),
                source=self.ctx.source, subject=f"Binary/{document_id}", correlation_id=request_id,
            ))
            raise FhirError.of(Code.ACCESS_DENIED, f"Access denied: {decision.reason}.")
        await self._emit(Event.new(
            RoutingKey.DOCUMENT_RETRIEVED,
            DocumentRetrieved(document=facts, actor=actor),
            source=self.ctx.source, subject=document_id, correlation_id=request_id,
        ))
        return Retrieval(facts=facts, key=doc["key"])

    async def _emit(self, event: Event) -> None:
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(event, session=session)
        self.ctx.outbox.notify()
